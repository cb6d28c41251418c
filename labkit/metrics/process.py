"""Outcome against process: how often a right answer was reached through a wrong step.

    process_metrics(replies, answers)
    # {"accuracy", "step_accuracy", "right_via_wrong_steps", "right_without_steps", "n"}

`right_via_wrong_steps` is the share of right answers whose worked solution holds at least one wrong
equation (labkit.reasoning.cot.verify_steps): what an outcome-only reward pays for and a process reward
does not. `right_without_steps` is the share of right answers with no equation at all (no process to check).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def process_metrics(replies: Sequence[Any], answers: Sequence[str]) -> dict[str, float]:
    """Outcome accuracy, step accuracy and the two shares above, over replies with their reference answers.

    A share whose denominator is empty (no right answer, no step) is nan rather than 0.
    """
    from labkit.data.answers import completion_text, is_correct
    from labkit.errors import DataError
    from labkit.reasoning.cot import verify_steps

    if len(replies) != len(answers):
        raise DataError("process_metrics", None, "answers",
                        f"{len(answers)} answers for {len(replies)} replies")
    right = wrong_steps = no_steps = steps = good_steps = 0
    for reply, answer in zip(replies, answers):
        text = completion_text(reply)
        check = verify_steps(text)
        steps += check["steps"]
        good_steps += check["correct_steps"]
        if is_correct(text, str(answer)):
            right += 1
            no_steps += check["steps"] == 0
            wrong_steps += check["correct_steps"] < check["steps"]
    n = len(replies)
    return {"accuracy": right / n if n else math.nan,
            "step_accuracy": good_steps / steps if steps else math.nan,
            "right_via_wrong_steps": wrong_steps / right if right else math.nan,
            "right_without_steps": no_steps / right if right else math.nan,
            "n": n}
