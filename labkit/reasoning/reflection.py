"""Self-reflection traces: the model's own wrong attempt, a check computed by code,
then a revised worked solution.

    attempts = collect_attempts(model, tok, rows, k=4, max_new_tokens=64, temperature=1.0, seed=0)
    attempt_stats(attempts)               # how many were right, wrong, had no number at all
    rows = build_reflection_rows(attempts)   # SFT rows from the wrong attempts only

One reflection reply (`reflection_reply`) reads

    The answer is 51.                     <- the attempt, verbatim
    Check: 40 + 14 = 54, not 51.          <- computed from the problem, naming the attempt's number
    Revised:
    40 + 10 = 50
    50 + 4 = 54
    #### 54

Only the check and the revision are written by code, so the trace teaches "look again and fix it"
on the very mistakes this model makes, rather than on invented ones. Two row styles:

- "trace" (default): one assistant turn holding attempt, check and revision. Simple, and what a model
  asked once must produce on its own; but the loss includes the wrong attempt's tokens too.
- "turns": the attempt is an earlier assistant turn, a user turn asks for a check, and the completion
  is the check and revision (prompt-completion rows, so the loss is on the correction only).

Correct attempts are not made into reflection rows (there is nothing to revise): `build_reflection_rows`
drops them and `attempt_stats` counts them. Rejection sampling (labkit.stages.rejection) is the
method that trains on correct attempts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from labkit.errors import ConfigError, DataError
from labkit.reasoning.cot import OPS, cot_reply, parse_expression, user_turn

CHECK_REQUEST = "Check your answer and fix it if it is wrong."
STYLES = ("trace", "turns")


def _check_line(expression: str, answer: str, extracted: str | None, right: bool) -> tuple[str, int]:
    a, op, b = parse_expression(expression, source="reflection_reply")
    true = OPS[op](a, b)
    if str(true) != str(answer).strip():
        raise DataError("reflection_reply", None, "answer",
                        f"{expression} = {true}, but the answer given is {answer!r}; pass the row's own "
                        "answer")
    if extracted is None:
        return "Check: the attempt gives no final number.", true
    if right:
        return f"Check: {a} {op} {b} = {true}, as the attempt says.", true
    return f"Check: {a} {op} {b} = {true}, not {extracted}.", true


def correction(attempt: str, expression: str, answer: str) -> str:
    """The part of a reflection reply after the attempt: the check line, then the revised solution.

    An attempt whose number is already right gets a confirming check and the final line, no revision.
    """
    from labkit.rewards import correctness, extract_number

    extracted = extract_number(attempt)
    right = correctness([None], [attempt], answer=[str(answer)])[0] >= 1.0
    check, true = _check_line(expression, answer, extracted, right)
    if right:
        return f"{check}\n#### {true}"
    return f"{check}\nRevised:\n{cot_reply(expression)}"


def reflection_reply(attempt: str, expression: str, answer: str) -> str:
    """The attempt verbatim, a check line computed from the expression, then "Revised:" and the CoT solution.

    The check names the number the attempt ended on (labkit.rewards.extract_number), or says it gave none.
    The final `#### answer` comes last, so the reward's answer extraction reads the revised answer.
    """
    attempt = attempt.strip()
    fix = correction(attempt, expression, answer)
    return f"{attempt}\n{fix}" if attempt else fix


def collect_attempts(model, tok, rows: Sequence[dict], *, k: int, max_new_tokens: int, temperature: float,
                     seed: int, batch_size: int = 16, system_prompt: str = "",
                     reward: Callable[..., list] | None = None) -> list[dict]:
    """Sample k attempts per row (batched `generate` with do_sample=True) and verify each.

    `rows` have `prompt` and `answer` (and `expression` for reflection; copied when present). Each attempt:
    {"prompt", "expression", "answer", "attempt", "extracted", "correct", "finished", "reward"}, in row
    order, the k attempts of a row next to each other. `correct` means the reward is at least 1.0; the
    reward is labkit.rewards.correctness unless another TRL-style reward function is passed.
    """
    from labkit.models.generate import generate
    from labkit.rewards import correctness, extract_number

    if k < 1:
        raise ConfigError("k", f"must be at least 1, got {k}")
    reward = reward or correctness
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for i, row in enumerate(rows):
        for field in ("prompt", "answer"):
            if row.get(field) is None:
                raise DataError("rows", i, field, "missing; attempts need prompt rows with prompt and answer")
    messages = [[*system, *user_turn(row["prompt"])] for row in rows for _ in range(k)]
    answers = [str(row["answer"]) for row in rows for _ in range(k)]
    outs = generate(model, tok, messages, max_new_tokens=max_new_tokens, do_sample=True,
                    temperature=temperature, seed=seed, batch_size=batch_size)
    texts = [o.text for o in outs]
    scores = reward(prompts=messages, completions=texts, answer=answers)
    if len(scores) != len(texts):
        raise DataError("reward", None, None, f"returned {len(scores)} rewards for {len(texts)} completions")
    attempts = []
    for j, (out, score) in enumerate(zip(outs, scores)):
        row = rows[j // k]
        attempts.append({"prompt": row["prompt"], "expression": row.get("expression"), "answer": answers[j],
                         "attempt": out.text, "extracted": extract_number(out.text),
                         "correct": score is not None and float(score) >= 1.0, "finished": out.finished,
                         "reward": None if score is None else float(score),
                         **({"split": row["split"]} if "split" in row else {})})
    return attempts


def prompt_key(prompt: Any) -> str:
    """A hashable identity for a prompt column (string or message list), for de-duplication."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def attempt_stats(attempts: Sequence[dict]) -> dict[str, int | float]:
    """{"attempts", "correct", "wrong", "no_number", "unique_wrong", "accuracy"} over collected attempts."""
    wrong = [a for a in attempts if not a["correct"]]
    unique = {(prompt_key(a["prompt"]), a["attempt"].strip()) for a in wrong}
    n = len(attempts)
    return {"attempts": n, "correct": n - len(wrong), "wrong": len(wrong),
            "no_number": sum(a["extracted"] is None for a in wrong), "unique_wrong": len(unique),
            "accuracy": (n - len(wrong)) / n if n else 0.0}


def build_reflection_rows(attempts: Sequence[dict], *, style: str = "trace",
                          source: str = "attempts") -> list[dict]:
    """SFT rows from the WRONG attempts only, one per distinct (prompt, attempt text).

    style="trace": conversational rows {"messages": [user, assistant reflection_reply], ...}.
    style="turns": prompt-completion rows {"prompt": [user, assistant attempt, user check request],
    "completion": [assistant check + revision], ...}, so the loss never trains the wrong attempt.
    Every row also has "answer", "expression", "extracted" (the attempt's number) and "split" when the
    attempt has one. Correct attempts are skipped; count them with attempt_stats. An attempt without an
    `expression` raises DataError naming it.
    """
    if style not in STYLES:
        raise ConfigError("style", f"{style!r} is not one of {', '.join(STYLES)}")
    rows, seen = [], set()
    for i, a in enumerate(attempts):
        if a["correct"]:
            continue
        if not a.get("expression"):
            raise DataError(source, i, "expression",
                            "missing; reflection needs the problem to compute the check "
                            "(data_samples/arithmetic_prompts.jsonl has an expression column)")
        text = a["attempt"].strip()
        key = (prompt_key(a["prompt"]), text)
        if key in seen:
            continue
        seen.add(key)
        question = user_turn(a["prompt"])
        if style == "trace":
            row = {"messages": [*question, {"role": "assistant",
                                            "content": reflection_reply(text, a["expression"], a["answer"])}]}
        else:
            row = {"prompt": [*question, {"role": "assistant", "content": text},
                              {"role": "user", "content": CHECK_REQUEST}],
                   "completion": [{"role": "assistant",
                                   "content": correction(text, a["expression"], a["answer"])}]}
        row.update(answer=str(a["answer"]), expression=a["expression"], extracted=a.get("extracted"))
        if "split" in a:
            row["split"] = a["split"]
        rows.append(row)
    return rows
