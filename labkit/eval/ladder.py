"""The cost ladder (notebook 00b): how far prompting gets on one task before fine-tuning pays for itself.

Four rungs on the same held-out questions, each scored for the answer format and the right answer, and
costed in tokens and seconds:

- **zero-shot**: the question alone;
- **few-shot**: the same k worked examples (earlier chat turns) before every question;
- **retrieval**: the k worked examples whose questions share the most words with this one;
- **LoRA SFT**: the question alone, to a model fine-tuned on the examples (a one-off training cost).

Prompt tokens are paid on every question, for ever; training is paid once. `ladder_rows` puts both on one
table so "when is each rung enough?" becomes a question about accuracy needed and questions expected.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from labkit.data.samples import extract_answer, format_ok
from labkit.errors import ConfigError, DataError
from labkit.models.generate import as_prompt_text, generate

WORD = re.compile(r"[a-z]+")


@dataclasses.dataclass
class Rung:
    """One rung's scores and costs: accuracies over the questions, mean tokens per question, seconds to
    answer them all; `setup_seconds` / `setup_tokens` are one-off costs (training), 0 for prompting."""

    name: str
    format_accuracy: float
    answer_accuracy: float
    prompt_tokens: float
    new_tokens: float
    seconds: float
    setup_seconds: float = 0.0
    setup_tokens: int = 0
    samples: list[dict] = dataclasses.field(default_factory=list, repr=False)


def question(row: dict) -> list[dict]:
    """The row's conversation up to its last assistant turn: what the model is asked."""
    msgs = row.get("messages")
    if not msgs or msgs[-1].get("role") != "assistant":
        raise DataError("rows", None, "messages", "each row needs messages ending in an assistant turn")
    return list(msgs[:-1])


def with_examples(row: dict, examples: Sequence[dict]) -> list[dict]:
    """The question, preceded by each example's full exchange as earlier turns (a chat-style few-shot)."""
    turns: list[dict] = []
    for ex in examples:
        turns += [m for m in ex["messages"] if m["role"] != "system"]
    return turns + question(row)


def fixed_examples(pool: Sequence[dict], k: int, seed: int = 0) -> list[dict]:
    """k worked examples drawn once (seeded) from `pool`: the few-shot rung shows these to every question."""
    _check_k(pool, k)
    return random.Random(seed).sample(list(pool), k)


def _words(row: dict) -> Counter:
    return Counter(WORD.findall(question(row)[-1]["content"].lower()))


def _cosine(a: Counter, b: Counter) -> float:
    dot = sum(n * b[w] for w, n in a.items())
    norm = math.sqrt(sum(n * n for n in a.values()) * sum(n * n for n in b.values()))
    return dot / norm if norm else 0.0


def similar_examples(row: dict, pool: Sequence[dict], k: int) -> list[dict]:
    """The k pool rows whose questions are closest to this row's, by cosine over word counts (numbers
    ignored: the same story with other numbers is the most useful example)."""
    _check_k(pool, k)
    target = _words(row)
    ranked = sorted(pool, key=lambda ex: -_cosine(target, _words(ex)))
    return ranked[:k]


def _check_k(pool: Sequence[dict], k: int) -> None:
    if not isinstance(k, int) or k < 0:
        raise ConfigError("shots", f"must be a whole number ≥ 0, got {k!r}")
    if k > len(pool):
        raise ConfigError("shots", f"{k} examples asked for, but the pool has only {len(pool)} rows")


def score_rung(name: str, model: Any, tok: Any, rows: Sequence[dict], prompts: Sequence[list[dict]], *,
               max_new_tokens: int = 32, setup_seconds: float = 0.0, setup_tokens: int = 0) -> Rung:
    """Answer `prompts` greedily (one per row of `rows`), score format and answer, and count the costs."""
    if len(prompts) != len(rows) or not rows:
        raise ConfigError("prompts", f"need one prompt per row and at least one row; got {len(prompts)} "
                                     f"prompts for {len(rows)} rows")
    prompt_tokens = [len(tok(as_prompt_text(tok, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    start = time.perf_counter()
    outs = generate(model, tok, list(prompts), max_new_tokens=max_new_tokens)
    seconds = time.perf_counter() - start
    samples = [{"question": question(r)[-1]["content"], "reply": o.text, "format_ok": format_ok(o.text),
                "correct": extract_answer(o.text) == r["answer"], "prompt_tokens": n}
               for r, o, n in zip(rows, outs, prompt_tokens)]
    n = len(samples)
    return Rung(name, sum(s["format_ok"] for s in samples) / n, sum(s["correct"] for s in samples) / n,
                sum(prompt_tokens) / n, sum(len(o.token_ids) for o in outs) / n, seconds,
                setup_seconds, setup_tokens, samples)


def ladder_rows(rungs: Sequence[Rung], questions: int = 1000) -> list[dict]:
    """One row per rung for a table: accuracies, tokens per question, and what `questions` questions cost
    in tokens (prompts + replies + any one-off training tokens) and minutes on this machine."""
    rows = []
    for r in rungs:
        per_question = r.seconds / max(len(r.samples), 1)
        total_tokens = r.setup_tokens + questions * (r.prompt_tokens + r.new_tokens)
        total_minutes = (r.setup_seconds + questions * per_question) / 60
        rows.append({"rung": r.name, "format accuracy": r.format_accuracy,
                     "answer accuracy": r.answer_accuracy,
                     "prompt tokens / question": round(r.prompt_tokens, 1),
                     "reply tokens / question": round(r.new_tokens, 1),
                     "one-off tokens": r.setup_tokens, "one-off minutes": round(r.setup_seconds / 60, 2),
                     f"tokens for {questions} questions": round(total_tokens),
                     f"minutes for {questions} questions": round(total_minutes, 1)})
    return rows
