"""Checks for notebook 06 (PPO vs GRPO vs RLOO): who needs a critic, and RLOO's baseline by hand."""

from __future__ import annotations

import torch

from labkit.exercises import cases, choice, close, exercise
from labkit.losses.advantages import rloo_advantages


@exercise("06.1", hints=["Which method's panels show a `value_loss`?",
                         "GRPO and RLOO take their baseline from the other completions of the same prompt."])
def critic(answer) -> str:
    return choice(answer, "a", {
        "a": "PPO trains a value model (the critic) and uses GAE on its per-token values; GRPO and RLOO "
             "replace it by the other samples of the same prompt, saving a model's memory",
        "b": "GRPO's baseline is the group's mean reward: no value model",
        "c": "RLOO's baseline is the mean of the other completions: no value model",
    })


def _same(a, b) -> bool:
    got = a.tolist() if hasattr(a, "tolist") else a
    return isinstance(got, (list, tuple)) and len(got) == len(b) and all(close(x, y, abs_=1e-5)
                                                                         for x, y in zip(got, b))


@exercise("06.2", hints=["For completion i: r_i minus the mean of the other rewards of its group.",
                         "Groups are consecutive: rewards[g*group_size:(g+1)*group_size]."])
def rloo_function(answer) -> str:
    def ref(rewards, group_size):
        return rloo_advantages(torch.tensor(rewards, dtype=torch.float), group_size).tolist()

    cases(answer, [
        (([1.0, 0.0, 0.0, 1.0], 4), ref([1.0, 0.0, 0.0, 1.0], 4), "one group of four"),
        (([1.0, 1.0, 1.0], 3), ref([1.0, 1.0, 1.0], 3), "all rewards equal"),
        (([0.5, 0.0, 1.0, 1.0, 0.2, 0.0], 3), ref([0.5, 0.0, 1.0, 1.0, 0.2, 0.0], 3), "two groups of three"),
    ], same=_same)
    return ("the leave-one-out baseline never includes r_i, so the estimate stays unbiased; it equals "
            "G/(G−1)·(r_i − mean): GRPO's centring, scaled, without the std.")
