"""HellaSwag: pick the ending of an ActivityNet caption or a WikiHow article, scored as a cloze the way
SmolLM2's model card scores it (lighteval; the task file of github.com/huggingface/smollm,
text/evaluation/tasks.py).

Rows use rowanz/hellaswag's schema: `ind`, `activity_label`, `ctx_a`, `ctx_b`, `ctx`, `split`, `split_type`
(indomain / zeroshot), `label` (index of the right ending), `endings` (4), `source_id` ("activitynet~…" or
"wikihow~…"); the shipped rows add `id`, their position in the validation split.

The prompt (query): preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize() + " "); the
options: " " + preprocess(ending); no chat template, 0-shot. preprocess is the harnesses' cleanup of WikiHow
markup: " [title]" becomes ". ", any other "[…]" tag (`[header]`, `[step]`, `[substeps]`) goes, and double
spaces become one. The query ends in a space, which the scorer hands to each option (labkit.eval.cloze),
so an option is read as "  ending". Pick: the highest log-likelihood per character (acc_norm_nospace).
lm-evaluation-harness's hellaswag differs only in stripping the text and in leaving no space at the end
of the query.

The validation split is 3243 ActivityNet rows then 6799 WikiHow rows (VALIDATION_MIX); `weighted` folds
per-source accuracies with those weights, for a shipped sample whose mix differs.

Slices: source (activitynet / wikihow), split_type.
"""

from __future__ import annotations

import re

from labkit.errors import DataError
from labkit.eval import cloze
from labkit.eval.tasks import Scored, require_fields

# Rows of each source in the 10042-row validation split (rowanz/hellaswag data/hellaswag_val.jsonl).
VALIDATION_MIX = {"activitynet": 3243, "wikihow": 6799}
FIELDS = ("activity_label", "ctx_a", "ctx_b", "endings", "label", "source_id")


def preprocess(text: str) -> str:
    """The harnesses' cleanup of HellaSwag text: " [title]" -> ". ", other bracketed tags removed, double
    spaces made single (one pass, as they do it)."""
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def query(row: dict) -> str:
    """The context: the activity label, then ctx_a and ctx_b with ctx_b capitalised, ending in a space."""
    return preprocess(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()} ")


def options(row: dict) -> list[str]:
    """The four continuations: each ending, cleaned, after a space."""
    return [" " + preprocess(e) for e in row["endings"]]


def source(row: dict) -> str:
    """"activitynet" or "wikihow", from source_id."""
    return str(row["source_id"]).split("~", 1)[0]


def validate(rows: list[dict], where: str) -> None:
    """rowanz/hellaswag's schema: DataError naming the first row and field that breaks it."""
    require_fields(rows, FIELDS, where)
    for i, r in enumerate(rows):
        if not isinstance(r["endings"], list) or len(r["endings"]) != 4 or not all(
                isinstance(e, str) for e in r["endings"]):
            raise DataError(where, i, "endings", f"expected 4 ending strings, got {r['endings']!r:.80}")
        if isinstance(r["label"], bool) or int(r["label"]) not in range(4):
            raise DataError(where, i, "label", f"expected the right ending's index 0-3, got {r['label']!r}")
        if source(r) not in VALIDATION_MIX:
            raise DataError(where, i, "source_id",
                            f"expected activitynet~… or wikihow~…, got {r['source_id']!r}")


def logprobs(model, tok, rows: list[dict], batch_size: int = 8) -> list[list[float]]:
    """Per row, the summed log-probability of each option after the query."""
    return cloze.choice_logprobs(model, tok, [query(r) for r in rows], [options(r) for r in rows], batch_size)


def score(rows: list[dict], lps: list[list[float]]) -> list[Scored]:
    """`accuracy_cloze` per row (per-character argmax, ties split), sliced by source and split_type."""
    if len(rows) != len(lps):
        raise ValueError(f"{len(rows)} rows but {len(lps)} log-prob lists")
    return [Scored("accuracy_cloze", str(r.get("id", i)),
                   cloze.score_choices(lp, options(r), int(r["label"])),
                   {"source": source(r), "split_type": str(r.get("split_type", ""))})
            for i, (r, lp) in enumerate(zip(rows, lps))]


def weighted(scores: list[Scored]) -> float:
    """Mean accuracy per source, weighted by the source's share of the validation split (VALIDATION_MIX),
    over the sources present."""
    by_source: dict[str, list[float]] = {}
    for s in scores:
        by_source.setdefault(s.slices["source"], []).append(s.score)
    total = sum(VALIDATION_MIX[k] for k in by_source)
    return sum(VALIDATION_MIX[k] * sum(v) / len(v) for k, v in by_source.items()) / total
