"""Chain-of-thought data: short worked solutions for `a op b` problems, each step an equation code can check.

    cot_steps(47, "+", 38)        # ["40 + 30 = 70", "7 + 8 = 15", "70 + 15 = 85"]
    cot_reply("47 + 38")          # the steps, one per line, then "#### 85"
    verify_steps(model_reply)     # {"steps", "correct_steps", "all_correct", "first_error"}: a process check
    build_cot_rows(load_sample("arithmetic_prompts"))   # conversational SFT rows

The final answer (`#### n`) is the outcome a verifiable reward checks; `verify_steps` checks the process:
every `x op y = z` in the text, by arithmetic. A reply can reach the right number through a wrong step, or
make every step right and still copy the wrong number into the answer line; the two checks tell those apart.

A problem with nothing to split (7 + 5, 85 - 8, 9 * 10) is one step, which is exactly the one-line
format of data_samples/sft_format.jsonl, so the CoT rows extend that format rather than replacing it.
"""

from __future__ import annotations

import re
from typing import Any

from labkit.errors import DataError

OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
TIMES_SIGNS = "*×xX"  # how people (and small models) write multiplication; steps written here use `*`

EXPRESSION_RE = re.compile(r"\s*(-?\d+)\s*([+\-*×xX])\s*(-?\d+)\s*")
# One equation: a chain of integers joined by + - * (or × x), then `= result`. The look-behind stops a match
# from starting inside a longer number or word ("a12 + 3"), the look-ahead from ending inside a decimal.
_TERM = r"-?\d+"
EQUATION_RE = re.compile(
    rf"(?<![\w.,]){_TERM}(?:[ \t]*[+\-*×xX][ \t]*{_TERM})+[ \t]*=[ \t]*(?P<result>{_TERM})(?!\d|\.\d)"
)
_TOKEN_RE = re.compile(r"(?<=\d)[ \t]*([+\-*×xX])[ \t]*|(-?\d+)")


def cot_steps(a: int, op: str, b: int) -> list[str]:
    """A short worked solution of `a op b`, one equation per step, ending on the result.

    + : tens, then ones, then their sum (47 + 38: 40 + 30 = 70, 7 + 8 = 15, 70 + 15 = 85); a part only one
        number has is carried along without a step (47 + 8: 7 + 8 = 15, 40 + 15 = 55).
    - : take away the tens, then the ones (85 - 38: 85 - 30 = 55, 55 - 8 = 47), so a borrow happens inside
        one small subtraction instead of across columns.
    * : split the larger factor into tens and ones (7 * 12: 7 * 10 = 70, 7 * 2 = 14, 70 + 14 = 84).
    One step when there is nothing to split, and for negative operands (which the samples never have).
    """
    if op in TIMES_SIGNS:
        op = "*"
    if op not in OPS:
        raise ValueError(f"unknown operator {op!r}; use one of + - *")
    result = OPS[op](a, b)
    single = [f"{a} {op} {b} = {result}"]
    if a < 0 or b < 0:
        return single
    if op == "+":
        return _add_steps(a, b) or single
    if op == "-":
        tens, ones = b - b % 10, b % 10
        if b < 10 or ones == 0 or a < b:
            return single
        return [f"{a} - {tens} = {a - tens}", f"{a - tens} - {ones} = {result}"]
    big_first = a >= b
    big, small = (a, b) if big_first else (b, a)
    tens, ones = big - big % 10, big % 10
    if tens == 0 or ones == 0 or small < 2:  # 9 * 10, 7 * 0 and 1 * 23 need no working
        return single

    def times(part: int) -> str:  # keep the larger factor on the side the problem wrote it
        return f"{part} * {small} = {part * small}" if big_first else f"{small} * {part} = {part * small}"

    return [times(tens), times(ones), f"{tens * small} + {ones * small} = {result}"]


def _add_steps(a: int, b: int) -> list[str]:
    ta, oa, tb, ob = a - a % 10, a % 10, b - b % 10, b % 10
    steps = []
    tens = ta + tb
    if ta and tb:
        steps.append(f"{ta} + {tb} = {tens}")
    ones = oa + ob
    if oa and ob:
        steps.append(f"{oa} + {ob} = {ones}")
    if tens and ones:
        steps.append(f"{tens} + {ones} = {tens + ones}")
    return steps


def parse_expression(expression: Any, *, source: str = "expression",
                     row: int | None = None) -> tuple[int, str, int]:
    """(a, op, b) from "40 + 14" (op normalised to + - *); DataError naming source,
    row and field otherwise."""
    found = EXPRESSION_RE.fullmatch(expression) if isinstance(expression, str) else None
    if found is None:
        raise DataError(source, row, "expression",
                        f"expected two integers and one of + - * like '40 + 14', got {expression!r:.60}; "
                        "rebuild data_samples (python -m labkit.data.samples build) or fix the row")
    a, op, b = found.groups()
    return int(a), "*" if op in TIMES_SIGNS else op, int(b)


def evaluate(expression: str) -> int:
    """The value of "40 + 14" (the same forms parse_expression accepts)."""
    a, op, b = parse_expression(expression)
    return OPS[op](a, b)


def cot_reply(expression: str) -> str:
    """The worked solution of an expression like "47 + 38": its steps one per line, then `#### result`."""
    a, op, b = parse_expression(expression, source="cot_reply")
    return "\n".join(cot_steps(a, op, b)) + f"\n#### {OPS[op](a, b)}"


def _chain_value(chain: str) -> int:
    """Left-hand side of an equation, with * before + and - as in school arithmetic."""
    tokens = [op or int(num) for op, num in _TOKEN_RE.findall(chain)]
    terms: list[int] = [tokens[0]]
    signs: list[str] = ["+"]
    for op, value in zip(tokens[1::2], tokens[2::2]):
        if op in TIMES_SIGNS:
            terms[-1] *= value
        else:
            terms.append(value)
            signs.append(op)
    return sum(t if s == "+" else -t for s, t in zip(signs, terms))


def verify_steps(text: str) -> dict[str, Any]:
    """Check every `x op y = z` equation in a reply by arithmetic (chains like `2 + 3 * 4 = 14` too).

    {"steps": equations found, "correct_steps": how many hold, "all_correct": steps > 0 and all hold,
    "first_error": the first wrong equation with its true value, e.g. "7 + 8 = 16 (is 15)", or None}.
    A reply with no equation is not all-correct: there is no process to credit.
    """
    steps = correct = 0
    first_error = None
    for found in EQUATION_RE.finditer(text):
        equation = found.group(0)
        lhs = equation[: found.start("result") - found.start()].rstrip(" \t=")
        true = _chain_value(lhs)
        steps += 1
        if true == int(found["result"]):
            correct += 1
        elif first_error is None:
            first_error = f"{equation.strip()} (is {true})"
    return {"steps": steps, "correct_steps": correct, "all_correct": steps > 0 and correct == steps,
            "first_error": first_error}


def user_turn(prompt: Any) -> list[dict[str, str]]:
    """A prompt column as messages: a string becomes one user turn, a message list is kept as it is."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def build_cot_rows(rows: list[dict], *, source: str = "rows") -> list[dict]:
    """Conversational SFT rows {"messages": [user, assistant CoT reply], "answer", "expression", "split"}.

    `rows` are prompt rows with `prompt`, `expression` and `answer` (data_samples/arithmetic_prompts.jsonl);
    `split` is copied when present. A malformed expression, or one whose value is not the row's answer,
    raises DataError naming the row, before any row is returned.
    """
    out = []
    for i, row in enumerate(rows):
        for field in ("prompt", "expression", "answer"):
            if row.get(field) is None:
                raise DataError(source, i, field, "missing; CoT rows need prompt, expression and answer "
                                "(data_samples/arithmetic_prompts.jsonl has all three)")
        a, op, b = parse_expression(row["expression"], source=source, row=i)
        if str(OPS[op](a, b)) != str(row["answer"]).strip():
            raise DataError(source, i, "answer",
                            f"{row['expression']} = {OPS[op](a, b)}, but the row's answer "
                            f"is {row['answer']!r}; the expression and answer columns disagree")
        reply = cot_reply(f"{a} {op} {b}")
        new = {"messages": [*user_turn(row["prompt"]), {"role": "assistant", "content": reply}],
               "answer": str(row["answer"]).strip(), "expression": row["expression"]}
        if "split" in row:
            new["split"] = row["split"]
        out.append(new)
    return out
