"""ARC (AI2 Reasoning Challenge): grade-school science questions with 3-5 options, scored as a cloze the way
SmolLM2's model card scores it (lighteval's `arc` prompt, github.com/huggingface/smollm
text/evaluation/tasks.py).

Rows use allenai/ai2_arc's schema (the Hugging Face conversion of AI2's ARC-V1-Feb2018 files, whose
`question.stem` and `question.choices` it flattens): `id`, `question`, `choices` ({"text": [...],
"label": [...]}, labels "A".. or "1"..), `answerKey` (one of the labels); the shipped rows add `subset`,
"ARC-Easy" or "ARC-Challenge".

The prompt: "Question: {question}\\nAnswer:"; the options: " " + each choice's text; no chat template,
0-shot; pick: the highest log-likelihood per character (acc_norm_nospace, labkit.eval.cloze). The card's
"ARC (Average)" is the mean of the Easy and Challenge accuracies (`average`).

Slices: subset.
"""

from __future__ import annotations

from labkit.errors import DataError
from labkit.eval import cloze
from labkit.eval.tasks import Scored, require_fields

SUBSETS = ("ARC-Easy", "ARC-Challenge")
FIELDS = ("id", "question", "choices", "answerKey")


def query(row: dict) -> str:
    return f"Question: {row['question']}\nAnswer:"


def options(row: dict) -> list[str]:
    return [f" {c}" for c in row["choices"]["text"]]


def gold(row: dict) -> int:
    """The index of the right option (answerKey is one of the choices' labels)."""
    return row["choices"]["label"].index(row["answerKey"])


def validate(rows: list[dict], where: str) -> None:
    """allenai/ai2_arc's schema: DataError naming the first row and field that breaks it."""
    require_fields(rows, FIELDS, where)
    for i, r in enumerate(rows):
        choices = r["choices"]
        if (not isinstance(choices, dict) or not isinstance(choices.get("text"), list)
                or not isinstance(choices.get("label"), list) or len(choices["text"]) != len(choices["label"])
                or not 2 <= len(choices["text"]) <= 5):
            raise DataError(where, i, "choices", "expected {'text': [...], 'label': [...]} with 2-5 "
                            f"options, got {choices!r:.80}")
        if r["answerKey"] not in choices["label"]:
            raise DataError(where, i, "answerKey", f"{r['answerKey']!r} is not one of {choices['label']}")
        if "subset" in r and r["subset"] not in SUBSETS:
            raise DataError(where, i, "subset", f"expected one of {SUBSETS}, got {r['subset']!r}")


def logprobs(model, tok, rows: list[dict], batch_size: int = 8) -> list[list[float]]:
    """Per row, the summed log-probability of each option after the question."""
    return cloze.choice_logprobs(model, tok, [query(r) for r in rows], [options(r) for r in rows], batch_size)


def score(rows: list[dict], lps: list[list[float]]) -> list[Scored]:
    """`accuracy_cloze` per row (per-character argmax, ties split), sliced by subset."""
    if len(rows) != len(lps):
        raise ValueError(f"{len(rows)} rows but {len(lps)} log-prob lists")
    return [Scored("accuracy_cloze", str(r.get("id", i)), cloze.score_choices(lp, options(r), gold(r)),
                   {"subset": str(r.get("subset", ""))}) for i, (r, lp) in enumerate(zip(rows, lps))]


def average(scores: list[Scored]) -> float:
    """The mean of the per-subset mean accuracies (the card's "ARC (Average)"), over the subsets present."""
    by_subset: dict[str, list[float]] = {}
    for s in scores:
        by_subset.setdefault(s.slices["subset"], []).append(s.score)
    return sum(sum(v) / len(v) for v in by_subset.values()) / len(by_subset)
