"""Process rewards: credit for the steps of a worked solution, checked by arithmetic, beside the outcome.

    from labkit.rewards import correctness
    from labkit.reasoning.process import process_reward
    grpo.train(cfg.replace(reward_weights="1,0.5"), reward_funcs=[correctness, process_reward()])

An outcome reward (`correctness`) pays for the final number however it was reached; a process reward pays
for each step. Here every `x op y = z` equation in a reply is a step, and labkit.reasoning.cot.verify_steps
checks it by arithmetic: a verifier standing in for a learned process reward model (Lightman et al. 2023,
"Let's Verify Step by Step", https://arxiv.org/abs/2305.20050). GRPO takes one number per completion, so the
step verdicts are folded into one: the share of steps that hold (`fraction`), 1 only when all hold (`all`),
or the share of steps before the first wrong one (`prefix`, which is what a step-level PRM's "first error"
label rewards).

`step_verdicts` gives the per-step list for inspection; labkit.metrics.process measures how often a right
answer was reached through a wrong step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labkit.data.answers import completion_text
from labkit.errors import ConfigError
from labkit.reasoning.cot import EQUATION_RE, _chain_value

MODES = ("fraction", "all", "prefix")


def step_verdicts(text: str) -> list[dict[str, Any]]:
    """One entry per equation in the reply, in order: {"step": the equation, "correct": bool, "value": the
    true value of its left-hand side}. The same equations verify_steps counts."""
    out = []
    for found in EQUATION_RE.finditer(text):
        equation = found.group(0)
        lhs = equation[: found.start("result") - found.start()].rstrip(" \t=")
        value = _chain_value(lhs)
        out.append({"step": equation.strip(), "correct": value == int(found["result"]), "value": value})
    return out


def fold(verdicts: Sequence[dict], mode: str = "fraction", *, no_steps: float = 0.0) -> float:
    """The step verdicts as one reward in [0, 1] (`no_steps` for a reply with no equation: no process to
    credit)."""
    if not verdicts:
        return no_steps
    ok = [v["correct"] for v in verdicts]
    if mode == "fraction":
        return sum(ok) / len(ok)
    if mode == "all":
        return float(all(ok))
    first_wrong = ok.index(False) if False in ok else len(ok)
    return first_wrong / len(ok)


class ProcessReward:
    """The process reward in TRL's protocol: `fn(prompts, completions, **kw) -> list[float]` in [0, 1].

    A class so TRL can pickle it; its `__name__` ("process") is what TRL logs as `rewards/process/mean`.
    """

    def __init__(self, mode: str = "fraction", *, no_steps: float = 0.0, name: str = "process"):
        if mode not in MODES:
            raise ConfigError("mode", f"unknown process-reward mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode, self.no_steps = mode, float(no_steps)
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [fold(step_verdicts(completion_text(c)), self.mode, no_steps=self.no_steps)
                for c in completions]

    def __repr__(self) -> str:
        return f"process_reward(mode={self.mode!r})"


def process_reward(mode: str = "fraction", *, no_steps: float = 0.0) -> ProcessReward:
    """A step-level reward from the worked-solution checker, folded per `mode` (see the module docstring)."""
    return ProcessReward(mode, no_steps=no_steps)
