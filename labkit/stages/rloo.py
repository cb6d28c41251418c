"""Stage: RLOO / REINFORCE with a leave-one-out baseline, on TRL's RLOOTrainer.

    result = train(RLConfig.from_preset("cpu"), callbacks=[LiveDashboard(RL_PANELS)])

REINFORCE pushes up log π(y|x) in proportion to (reward - baseline). RLOO (Ahmadian et al. 2024, "Back to
Basics", https://arxiv.org/abs/2402.14740; Kool et al. 2019) takes the baseline for each of the k completions
of a prompt from the other k - 1: advantage_i = r_i - mean_{j≠i} r_j, which is unbiased (the baseline does not
depend on y_i) and needs no value network. Compared with GRPO, the advantage is not divided by the group's
std, and TRL applies the KL penalty to the reward rather than as a loss term.

The loop around the trainer (data, pre-flight, held-out accuracy, rollout log, save) is GRPO's, so a
comparison of the two compares the update alone: see labkit.stages.grpo.train_with.
"""

from __future__ import annotations

from labkit.config import RLConfig
from labkit.runs.result import RunResult


def train(cfg: RLConfig, callbacks=(), reward_funcs=None, *, force: bool = False) -> RunResult:
    """RLOO on a LoRA policy, on TRL's RLOOTrainer; cfg.loss_type and cfg.scale_rewards (GRPO's) are ignored.

    Arguments, result and errors are those of labkit.stages.grpo.train (metrics["algorithm"] is "rloo").

    Example:
        result = train(RLConfig.from_preset("cpu-smoke"))
        result.metrics["curve"]   # held-out accuracy against training seconds
    """
    from labkit.stages.grpo import train_with

    return train_with("rloo", cfg, callbacks, reward_funcs, force=force)
