"""Held-out accuracy of a policy on prompts with verifiable answers:
greedy replies scored by the answer check.

The RL stages (GRPO, RLOO, PPO) and rejection-sampling fine-tuning all report this number, so a comparison
between them is a comparison of the training and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def heldout_accuracy(model, tok, rows: Sequence[dict], *, max_new_tokens: int = 64,
                     batch_size: int = 25) -> tuple[dict[str, float], list[dict]]:
    """Greedy answers to held-out prompts, scored by the correctness reward.

    Args:
        rows: {"prompt": message list, "answer": str} per held-out prompt.
    Returns:
        (metrics, samples): metrics {"accuracy", "mean_length", "truncated"}; one sample per row with the
        prompt's last turn, the answer, the completion, the number read from it and whether it was right.

    Example:
        metrics, samples = heldout_accuracy(model, tok, [{"prompt": [{"role": "user", "content": "2+3?"}],
                                                          "answer": "5"}])
    """
    from labkit.data.answers import extract_number, is_correct
    from labkit.models.generate import generate

    training = model.training
    model.eval()
    try:
        outs = generate(model, tok, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens,
                        batch_size=batch_size)
    finally:
        model.train(training)
    samples = [{"prompt": r["prompt"][-1]["content"], "answer": r["answer"], "completion": o.text,
                "extracted": extract_number(o.text),
                "correct": is_correct(o.text, r["answer"]),
                "tokens": len(o.token_ids), "truncated": not o.finished} for r, o in zip(rows, outs)]
    n = max(len(samples), 1)
    metrics = {"accuracy": sum(s["correct"] for s in samples) / n,
               "mean_length": sum(s["tokens"] for s in samples) / n,
               "truncated": sum(s["truncated"] for s in samples) / n}
    return metrics, samples


def heldout_eval(model, tok, rows: Sequence[dict], *, max_new_tokens: int, system: list[dict] | None = None,
                 batch_size: int = 32) -> dict[str, Any]:
    """heldout_accuracy on prompt rows whose prompt is a string or messages, with an optional system turn.

    Returns {"accuracy", "samples"}; each sample is {"prompt" (as in the row), "answer", "reply", "correct"};
    accuracy is nan when there are no rows.
    """
    from labkit.reasoning.cot import user_turn

    if not rows:
        return {"accuracy": math.nan, "samples": []}
    prompts = [{"prompt": [*(system or []), *user_turn(r["prompt"])], "answer": str(r["answer"])}
               for r in rows]
    metrics, scored = heldout_accuracy(model, tok, prompts, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size)
    samples = [{"prompt": r["prompt"], "answer": s["answer"], "reply": s["completion"],
                "correct": s["correct"]}
               for r, s in zip(rows, scored)]
    return {"accuracy": metrics["accuracy"], "samples": samples}
