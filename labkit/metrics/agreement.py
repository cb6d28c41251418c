"""Agreement between two labellers of the same items: raw accuracy and Cohen's kappa.

    label_agreement(judge_labels, gold_labels)   # {"accuracy", "kappa", "expected", "n"}

Accuracy is the share of items labelled alike. Kappa corrects it for the agreement two labellers would reach
by chance with their own label frequencies (Cohen 1960): κ = (p_o − p_e) / (1 − p_e), where p_o is the
observed agreement and p_e = Σ_k p_a(k)·p_b(k). κ = 1 is perfect agreement, 0 is chance, below 0 is worse
than chance. A judge that always says "first" on pairs whose right answer is always first scores accuracy 1
and κ 0 (there is nothing to agree about beyond the marginals), so present pairs in a random order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's κ of two label sequences over the same items (any hashable labels; categories are the union).

    nan when there are no items; 1.0 when both labellers use one and the same label throughout (p_e = 1 and
    they agree), 0.0 when p_e = 1 and they do not.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels against {len(b)}: label the same items")
    n = len(a)
    if n == 0:
        return math.nan
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca.keys() | cb.keys()) / (n * n)
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def label_agreement(pred: Sequence[Hashable], gold: Sequence[Hashable]) -> dict[str, float]:
    """{"accuracy": share labelled alike, "kappa": Cohen's κ, "expected": chance agreement p_e, "n"}."""
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} labels against {len(gold)} gold labels: label the same items")
    n = len(pred)
    if n == 0:
        return {"accuracy": math.nan, "kappa": math.nan, "expected": math.nan, "n": 0}
    cp, cg = Counter(pred), Counter(gold)
    return {"accuracy": sum(x == y for x, y in zip(pred, gold)) / n, "kappa": cohen_kappa(pred, gold),
            "expected": sum(cp[k] * cg[k] for k in cp.keys() | cg.keys()) / (n * n), "n": n}
