"""Checks for notebook 05 (GRPO): group advantages, and a format reward written by hand."""

from __future__ import annotations

import torch

from labkit.exercises import cases, close, exercise, numbers, wrong
from labkit.losses.advantages import group_advantages


@exercise("05.1", hints=["Subtract the group's mean reward from each reward, then divide by the group's std.",
                         "TRL uses the sample std (divide by n − 1): std([1, 0, 0, 1]) = 0.577."])
def group_of_four(answer) -> str:
    adv = numbers(answer, 4, "one advantage per completion")
    expected = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4).tolist()
    if all(close(a, e, rel=0.02) for a, e in zip(adv, expected)):
        return (f"{[round(e, 3) for e in expected]}: right answers are pushed up and wrong ones down by the "
                "same amount, and a group whose rewards are all equal gets 0 everywhere: it teaches nothing.")
    if all(close(a, e) for a, e in zip(adv, [0.5, -0.5, -0.5, 0.5])):
        wrong("that is reward minus mean, Dr. GRPO's advantage; GRPO also divides by the group's std")
    if all(close(a, e) for a, e in zip(adv, [1.0, -1.0, -1.0, 1.0])):
        wrong("close: that divides by the population std (n); GRPO (and TRL) use the sample std (n − 1)")
    if not close(sum(adv), 0.0, abs_=1e-3):
        wrong(f"these sum to {sum(adv):g}; a group's advantages always sum to 0 (each reward minus the mean)")
    wrong(f"{adv} is not (r − mean) / std for rewards [1, 0, 0, 1]")


@exercise("05.2", hints=["Look at the last line only: completion.strip().splitlines()[-1].",
                         "A regular expression like r'^####\\s*-?\\d+$' matches '#### 42' and '#### -7'."])
def hash_line_reward(answer) -> str:
    def reward(completion: str) -> float:
        return answer(["prompt"], [completion])[0]

    out = answer(["p1", "p2"], ["#### 1", "no"])
    if not isinstance(out, list) or len(out) != 2:
        wrong(f"a reward function returns one float per completion (a list of 2 here), got {out!r}")
    cases(reward, [
        (("3 + 4 = 7\n#### 7",), 1.0, "a reply ending on '#### 7'"),
        (("#### -12",), 1.0, "a negative integer"),
        (("The answer is 7.",), 0.0, "no '####' line"),
        (("#### 7\nbut maybe it is 8",), 0.0, "'#### 7' that is not the last line"),
        (("#### seven",), 0.0, "a word, not a number"),
        (("",), 0.0, "an empty reply"),
    ], same=lambda a, b: close(a, b, abs_=1e-9))
    return ("the reward is code, so test it like code before training on it: every case here is a reply "
            "a policy will produce (and exploit) within a few steps.")
