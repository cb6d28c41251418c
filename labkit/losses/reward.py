"""Reward-model loss: the Bradley-Terry pairwise log-likelihood on scalar rewards,
optionally with a margin."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       margin: torch.Tensor | float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative log-likelihood that the chosen reply wins under the Bradley-Terry model.

    Bradley & Terry 1952; as a reward-model loss, Ouyang et al. 2022, https://arxiv.org/abs/2203.02155 (Eq.
    1); the margin m is Llama 2's, Touvron et al. 2023, https://arxiv.org/abs/2307.09288 (Eq. 2):

        L = mean_b -log σ(r_c,b - r_r,b - m_b)

    This is TRL's RewardTrainer loss (trl/trainer/reward_trainer.py:788-792, without the optional
    centring term). Equal rewards and no margin give log 2.

    Shapes:
        chosen_rewards, rejected_rewards: [B] scalar reward-model outputs
        margin: [B], a float, or None (no margin)
        returns: scalar loss, metrics {"accuracy": share with r_c > r_r, "margin": mean r_c - r_r}
    """
    diff = chosen_rewards - rejected_rewards                        # [B]
    if margin is not None:
        diff = diff - margin                                        # [B]
    loss = -F.logsigmoid(diff).mean()
    with torch.no_grad():
        metrics = {
            "accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
            "margin": float((chosen_rewards - rejected_rewards).mean()),
        }
    return loss, metrics
