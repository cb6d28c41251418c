"""Rejection-sampling data: which prompts a round samples, k verified samples per prompt, which to keep.

The loop that samples, keeps and fine-tunes round after round is a training stage: labkit.stages.rejection.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence


def round_prompts(rows: Sequence[dict], r: int, n: int, seed: int) -> list[dict]:
    """The n training rows of round r (1-based): consecutive slices of a seeded shuffle, reshuffled (with a
    new seed) each time the rows run out, so rounds see different prompts until every prompt has been seen."""
    order: list[int] = []
    epoch = 0
    while len(order) < r * n:
        perm = list(range(len(rows)))
        random.Random(f"{seed}/rejection/{epoch}").shuffle(perm)
        order += perm
        epoch += 1
    return [{**rows[i], "prompt_index": i} for i in order[(r - 1) * n: r * n]]


def sample_round(model, tok, rows: Sequence[dict], *, k: int, max_new_tokens: int,
                 temperature: float, seed: int, system: list[dict], reward: Callable[..., list] | None,
                 batch_size: int) -> list[dict]:
    """k sampled replies per row, each verified: {"prompt" (messages), "completion" (messages), "answer",
    "prompt_index", "verified", "finished", "reward"}, rows in the prompt-completion conversational kind."""
    from labkit.reasoning.cot import user_turn
    from labkit.reasoning.reflection import collect_attempts

    model.eval()
    attempts = collect_attempts(model, tok, rows, k=k, max_new_tokens=max_new_tokens, temperature=temperature,
                                seed=seed, batch_size=batch_size,
                                system_prompt=system[0]["content"] if system else "", reward=reward)
    # Stripped: a leading newline would merge with the template's own "assistant\n" into another token.
    return [{"prompt": [*system, *user_turn(a["prompt"])],
             "completion": [{"role": "assistant", "content": a["attempt"].strip()}], "answer": a["answer"],
             "prompt_index": rows[j // k]["prompt_index"], "verified": a["correct"],
             "finished": a["finished"], "reward": a["reward"]}
            for j, a in enumerate(attempts)]


def keep_verified(samples: Sequence[dict], *, keep_unfinished: bool = False) -> list[dict]:
    """Verified samples worth training on: finished (unless keep_unfinished), non-empty, and the first of
    any identical replies to the same prompt (a repeat would only weight that reply twice)."""
    kept, seen = [], set()
    for s in samples:
        text = s["completion"][0]["content"].strip()
        key = (s["prompt_index"], text)
        if not s["verified"] or not text or key in seen or not (s["finished"] or keep_unfinished):
            continue
        seen.add(key)
        kept.append(s)
    return kept
