"""Reward-model measurements: the reward of a reply, pairwise accuracy per kind, and calibration.

    rewards = score(model, tok, prompts, replies)
    scored = score_pairs(model, tok, rows)       # per pair: chosen and rejected rewards
    pairwise_metrics(scored)["accuracy"], expected_calibration_error(calibration(scored))

`model` is a sequence-classification model with one output (labkit.stages.reward.load_reward_model).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def score(model, tok, prompts: Sequence[Any], replies: Sequence[Any], *, batch_size: int = 16) -> list[float]:
    """The reward of each (prompt, reply): message lists (or a plain-string reply to a message-list prompt).

    The one scoring routine, labkit.rewards.learned.score_replies (the learned reward RL trains against
    scores the same way): the head in float32 on the last token's hidden state, in batches, no gradient.
    """
    from labkit.rewards.learned import score_replies

    return score_replies(model, tok, prompts, replies, batch_size=batch_size)


def score_pairs(model, tok, rows: Sequence[dict]) -> list[dict]:
    """Per pair: chosen and rejected rewards, their `source_kind`, and the prompt text."""
    rewards = score(model, tok, [r["prompt"] for r in rows for _ in (0, 1)],
                    [r[k] for r in rows for k in ("chosen", "rejected")])
    return [{"prompt": _text(r["prompt"]), "kind": r.get("source_kind", "all"), "chosen": rewards[2 * i],
             "rejected": rewards[2 * i + 1]} for i, r in enumerate(rows)]


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def pairwise_metrics(scored: Sequence[dict]) -> dict[str, Any]:
    """Accuracy (chosen scored higher), overall and per kind, and the mean margin r_c - r_r."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for s in scored:
        by_kind[s["kind"]].append(s["chosen"] > s["rejected"])
    wins = [s["chosen"] > s["rejected"] for s in scored]
    return {"accuracy": sum(wins) / len(wins),
            "margin": sum(s["chosen"] - s["rejected"] for s in scored) / len(scored),
            **{f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_kind.items())}}


def calibration(scored: Sequence[dict], bins: int = 10) -> list[dict]:
    """Reliability table: predicted P(A beats B) = σ(r_A - r_B) against how often A was the chosen reply.

    Each pair is counted in both orders (chosen first: outcome 1; rejected first: outcome 0), so the table is
    symmetric about 0.5 and a perfectly calibrated model lies on the diagonal. `bins` must be even: a bin
    straddling 0.5 would hold both orders of the same pairs and always read 0.5 against 0.5.
    """
    if bins % 2:
        raise ValueError(f"bins must be even, got {bins}")
    points = []
    for s in scored:
        p = 1 / (1 + math.exp(-(s["chosen"] - s["rejected"])))
        points += [(p, 1.0), (1 - p, 0.0)]
    table = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            table.append({"bin": f"{lo:.1f}–{hi:.1f}", "predicted": sum(p for p, _ in inside) / len(inside),
                          "observed": sum(y for _, y in inside) / len(inside), "count": len(inside)})
    return table


def expected_calibration_error(table: Sequence[dict]) -> float:
    """Count-weighted mean |observed - predicted| over the calibration table's bins."""
    n = sum(row["count"] for row in table)
    return sum(row["count"] * abs(row["observed"] - row["predicted"])
               for row in table) / n if n else float("nan")
