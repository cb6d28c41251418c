"""Check labkit's answer reader on every GSM8K gold answer: each solution, read whole, must give the number
written after its `####`.

    python scripts/check_gsm8k_gold.py path/to/test.jsonl      # or set LABKIT_GSM8K_TEST=path/to/test.jsonl

The file is GSM8K's own test split (grade_school_math/data/test.jsonl in github.com/openai/grade-school-math,
MIT licence: 1,319 rows, each `answer` a worked solution ending in "#### n"). For every row the number after
the last `####` is parsed plainly (thousands commas dropped, then `fractions.Fraction`), independently of
labkit; the row passes when labkit.rewards.read_answer on the whole solution and labkit.rewards.gold_answer
on it both give that value. Prints "N/M gold answers extracted correctly" and the first few misses; exits 1
when any row misses, 2 when no file is given.
"""

from __future__ import annotations

import json
import os
import sys
from fractions import Fraction
from pathlib import Path

from labkit.rewards import gold_answer, read_answer

ENV = "LABKIT_GSM8K_TEST"


def plain_value(answer: str) -> Fraction:
    """The number after the last `####`, parsed without labkit: "#### 1,250" -> 1250."""
    return Fraction(answer.rsplit("####", 1)[-1].strip().replace(",", ""))


def check(path: str | Path) -> tuple[int, int, list[str]]:
    """(rows that extracted correctly, rows, a description of each miss)."""
    misses, total = [], 0
    with open(path, encoding="utf-8") as lines:
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            total += 1
            answer = json.loads(line)["answer"]
            want = plain_value(answer)
            read, gold = read_answer(answer), gold_answer(answer)
            if read != want or gold != want:
                misses.append(f"row {i}: want {want}, read_answer {read}, gold_answer {gold!r}: "
                              f"…{answer[-60:]!r}")
    return total - len(misses), total, misses


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else os.environ.get(ENV)
    if not path:
        print(f"usage: check_gsm8k_gold.py PATH/test.jsonl (or set {ENV})", file=sys.stderr)
        return 2
    ok, total, misses = check(path)
    print(f"{ok}/{total} gold answers extracted correctly ({path})")
    for miss in misses[:10]:
        print(f"  {miss}")
    return 0 if ok == total and total else 1


if __name__ == "__main__":
    raise SystemExit(main())
