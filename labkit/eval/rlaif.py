"""RL from AI feedback, the labelling half: an LLM judge labels preference pairs, and its labels are checked
against the programmatic ones before a preference stage trains on them.

    labelled = judge_label_pairs(load_sample("preference_pairs"), judge="smollm2-135m-instruct", limit=64)
    labelled["agreement"]          # accuracy and Cohen's kappa against the gold labels (all, decided)
    write_judged_pairs(labelled["rows"], "runs/rlaif/judge_pairs.jsonl")   # DPO trains on this file

Each pair is shown to the judge in both orders (labkit.eval.judge.judge_pairs: the verdict is read from the
next-token probabilities of "A" and "B"). Two labels come out of that: the strict verdict, where a choice that
flips with the order is a tie, not a label; and the position-averaged one, P(first wins) averaged over both
orders, which cancels a constant lean towards "A" (small judges often pick A whatever it says: with the
strict verdict every pair is then a tie). Agreement is reported for both; `label_by` picks the one written.
Which reply is shown first is drawn per pair with a seeded coin: if the gold winner were always first,
a judge that always picks the first answer would agree perfectly and its kappa would be 0 (labkit.metrics
.agreement). Ties are dropped from the written dataset (`keep_ties=True` keeps them in gold order, flagged).
"""

from __future__ import annotations

import pathlib
import random
from collections.abc import Sequence
from typing import Any

from labkit.errors import ConfigError, DataError

LABELS = ("first", "second", "tie")


def _text(value: Any) -> str:
    """A prompt or reply column (a string or a message list) as the text of its last turn."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        return str(value[-1]["content"])
    raise DataError("preference pairs", None, None, f"expected a string or a message list, got {value!r:.60}")


def check_pairs(rows: Sequence[dict], source: str = "preference pairs") -> None:
    """DataError naming the row and field when a pair lacks prompt, chosen or rejected (before judging)."""
    if not rows:
        raise DataError(source, None, None, "no pairs to judge")
    for i, row in enumerate(rows):
        for field in ("prompt", "chosen", "rejected"):
            value = row.get(field)
            if value is None or (isinstance(value, (str, list)) and not value):
                raise DataError(source, i, field,
                                "missing or empty; a pair needs prompt, chosen and rejected")


def load_judge(judge: Any = None, *, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) of the judge: a labkit.models.load_model name (the embedded model by default) or an
    already loaded (model, tokenizer) pair."""
    from labkit.models import load_model

    if isinstance(judge, tuple) and len(judge) == 2:
        return judge
    return load_model(judge or "smollm2-135m-instruct", device=device, dtype=dtype)


def judge_label_pairs(rows: Sequence[dict], judge: Any = None, *, limit: int | None = None, seed: int = 0,
                      label_by: str = "mean", device: str = "auto", dtype: str = "auto") -> dict[str, Any]:
    """Label preference pairs with an LLM judge, position-swapped, and measure agreement with the gold labels.

    Args:
        rows: pairs {"prompt", "chosen", "rejected", ...} whose chosen reply is the programmatic (gold)
            winner.
        judge: a load_model name (default: the embedded model) or a loaded (model, tokenizer).
        limit: judge only the first `limit` pairs.
        seed: the coin that decides, per pair, whether the gold winner is shown first.
        label_by: "mean" (position-averaged probability) or "verdict" (strict, ties possible): which label
            becomes `judge_chosen`, the one write_judged_pairs writes.
    Returns:
        {"rows": one per pair with both labels, "judge_chosen" ("gold" | "flipped" | "tie") and the two
        order probabilities; "agreement": {"all": strict verdicts, ties counted as disagreement,
        "decided": strict verdicts with ties left out, "mean": position-averaged labels, "tie_rate",
        "position_a_rate"}} (accuracy and kappa from labkit.metrics.agreement).
    """
    if label_by not in ("mean", "verdict"):
        raise ConfigError("label_by", f"{label_by!r}: use 'mean' or 'verdict'")
    from labkit.eval.judge import judge_pairs
    from labkit.metrics.agreement import label_agreement

    rows = [dict(r) for r in rows][:limit]
    check_pairs(rows)
    coin = random.Random(seed)
    gold_first = [coin.random() < 0.5 for _ in rows]
    model, tok = load_judge(judge, device=device, dtype=dtype)
    questions = [_text(r["prompt"]) for r in rows]
    first = [_text(r["chosen"] if g else r["rejected"]) for r, g in zip(rows, gold_first)]
    second = [_text(r["rejected"] if g else r["chosen"]) for r, g in zip(rows, gold_first)]
    verdicts = judge_pairs(model, tok, questions, first, second)
    gold = ["first" if g else "second" for g in gold_first]
    pred = [v["verdict"] for v in verdicts]
    averaged = [_mean_label(v) for v in verdicts]
    out = []
    for row, g, v, m in zip(rows, gold, verdicts, averaged):
        label = m if label_by == "mean" else v["verdict"]
        out.append({**row, "judge_verdict": v["verdict"], "judge_mean": m, "gold_position": g,
                    "judge_chosen": "tie" if label == "tie" else "gold" if label == g else "flipped",
                    "p_first_as_a": v["p_first_as_a"], "p_first_as_b": v["p_first_as_b"]})
    decided = [(p, g) for p, g in zip(pred, gold) if p != "tie"]
    picked_a = [a for v in verdicts for a in v["picked_a"]]
    agreement = {"all": label_agreement(pred, gold),
                 "decided": label_agreement([p for p, _ in decided], [g for _, g in decided]),
                 "mean": label_agreement(averaged, gold),
                 "tie_rate": pred.count("tie") / len(pred),
                 "position_a_rate": sum(picked_a) / len(picked_a)}
    return {"rows": out, "agreement": agreement}


def _mean_label(verdict: dict) -> str:
    """The position-averaged label: P(first wins) averaged over both orders, against one half."""
    p = (verdict["p_first_as_a"] + verdict["p_first_as_b"]) / 2
    return "first" if p > 0.5 else "second" if p < 0.5 else "tie"


def judged_pairs(rows: Sequence[dict], *, keep_ties: bool = False) -> list[dict]:
    """Preference rows as the judge labelled them: chosen and rejected swapped where it disagreed with the
    gold label, ties dropped (or kept in gold order with `keep_ties`). Other columns are kept, with
    `label_source` = "judge"."""
    out = []
    for r in rows:
        if r["judge_chosen"] == "tie" and not keep_ties:
            continue
        flipped = r["judge_chosen"] == "flipped"
        new = {k: v for k, v in r.items()
               if k not in ("p_first_as_a", "p_first_as_b", "gold_position", "judge_mean", "judge_verdict")}
        winner, loser = (r["rejected"], r["chosen"]) if flipped else (r["chosen"], r["rejected"])
        new["chosen"], new["rejected"] = winner, loser
        new["label_source"] = "judge"
        out.append(new)
    return out


def write_judged_pairs(rows: Sequence[dict], path: str | pathlib.Path, *, keep_ties: bool = False,
                       gold_rows: Sequence[dict] = ()) -> pathlib.Path:
    """Write the judge-labelled pairs as a preference JSONL (prompt, chosen, rejected and the other columns)
    that labkit.stages.preference trains on (`PreferenceConfig(data=str(path))`).

    `gold_rows` (the held-out pairs, say) are appended with their programmatic labels, so a DPO run on judge
    labels is evaluated on the same gold pairs as one on gold labels. DataError when no judged pair is left.
    """
    from labkit.data.io import write_jsonl

    pairs = judged_pairs(rows, keep_ties=keep_ties)
    if not pairs:
        raise DataError(str(path), None, None, "every pair was a tie: the judge gave no usable label")
    return write_jsonl(path, [*pairs, *({**dict(r), "label_source": "gold"} for r in gold_rows)])
