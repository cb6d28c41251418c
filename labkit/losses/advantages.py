"""Advantage estimators for RL on language models: GRPO group baselines, RLOO leave-one-out, GAE, whitening.

All functions are pure and carry no gradient (advantages are targets, not things to differentiate). The GRPO
and RLOO estimators take rewards laid out as TRL lays them out: N = B·G completions, the G completions of one
prompt consecutive. A NaN reward marks an unscorable completion (every reward function declined it): it is
left out of its group's baseline and gets advantage 0, as in TRL 1.16.
"""

from __future__ import annotations

import torch

from labkit.errors import ConfigError

Tensor = torch.Tensor

SCALES = ("group", "batch", "none")


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """[N] -> [N/G, G], or a ConfigError when the batch is not whole groups."""
    if group_size < 1 or rewards.dim() != 1 or rewards.numel() % group_size:
        raise ConfigError("num_generations",
                          f"rewards of shape {tuple(rewards.shape)} cannot be cut into groups "
                          f"of {group_size}; pass a 1-D tensor of prompts × completions-per-prompt rewards")
    return rewards.view(-1, group_size)


def _nanstd(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Sample standard deviation (Bessel-corrected, n-1) ignoring NaNs;
    NaN where fewer than two values remain."""
    if dim is None:
        x, dim = x.reshape(-1), 0
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    n = (~x.isnan()).sum(dim=dim, keepdim=True)
    ss = torch.nansum((x - mean) ** 2, dim=dim, keepdim=True)
    var = torch.where(n > 1, ss / (n - 1).clamp(min=1), float("nan"))
    std = var.sqrt()
    return std if keepdim else std.squeeze(dim)


@torch.no_grad()
def group_advantages(rewards: Tensor, group_size: int, *, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """GRPO's group-relative advantage: each reward minus its group's mean, optionally divided by a std.

    Shao et al. 2024, DeepSeekMath, https://arxiv.org/abs/2402.03300 (§4.1.2, outcome supervision);
    Liu et al. 2025, Dr. GRPO, https://arxiv.org/abs/2503.20783 (which drops the std). For completion i of a
    prompt's group g:

        Â_i = (r_i - mean_g r) / (s + eps)        s = std_g r    (scale="group", GRPO)
                                                  s = std_all r  (scale="batch", the whole batch's std)
        Â_i =  r_i - mean_g r                                    (scale="none", Dr. GRPO)

    std is the sample std (n-1), eps is added to the std outside the square root, and a group of one has std
    0: exactly trl/trainer/grpo_trainer.py:2765-2787 (TRL 1.16,
    `multi_objective_aggregation="sum_then_normalize"`). A group whose rewards are all equal gets advantage 0
    whatever the scale: it teaches nothing.

    Shapes:
        rewards: [N] with N = B·G, group b at rows b·G … b·G+G-1 (NaN = unscorable)
        returns: [N] advantages, float, no gradient; each group's advantages sum to 0
    """
    if scale not in SCALES:
        raise ConfigError("scale_rewards", f"unknown value {scale!r}; use one of {', '.join(SCALES)}")
    grouped = _grouped(rewards.float(), group_size)                      # [B, G]
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)      # [B, G]
    if scale == "group":
        # [B, 1]
        std = _nanstd(grouped, dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centred[:, :1])
        centred = centred / (std + eps)
    elif scale == "batch":
        std = _nanstd(grouped) if grouped.numel() > 1 else grouped.new_zeros(())  # scalar
        centred = centred / (std + eps)
    return torch.nan_to_num(centred.reshape(-1), nan=0.0)               # [N]


@torch.no_grad()
def rloo_advantages(rewards: Tensor, group_size: int, *, normalize: bool = False,
                    eps: float = 1e-4) -> Tensor:
    """REINFORCE Leave-One-Out: each reward minus the mean of the *other* completions of the same prompt.

    Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!", https://openreview.net/forum?id=r1lgTGL5DE;
    Ahmadian et al. 2024, "Back to Basics", https://arxiv.org/abs/2402.14740:

        Â_i = r_i - 1/(G-1) Σ_{j≠i} r_j  =  G/(G-1) · (r_i - mean_g r)

    The baseline does not depend on r_i, so the estimator stays unbiased. With normalize=True the advantages
    are then whitened over the whole batch, (Â - mean Â) / (std Â + eps), TRL's `normalize_advantages`.
    Matches trl/trainer/rloo_trainer.py:1682-1699 (TRL 1.16); a group of one gets advantage 0.

    Shapes:
        rewards: [N] with N = B·G, groups consecutive (NaN = unscorable)
        returns: [N] advantages, float, no gradient; each group's advantages sum to 0 (before normalize)
    """
    grouped = _grouped(rewards.float(), group_size)                      # [B, G]
    if group_size == 1:
        return torch.zeros_like(rewards, dtype=torch.float)
    count = (~grouped.isnan()).sum(dim=1, keepdim=True)                   # [B, 1] scorable completions
    total = torch.nansum(grouped, dim=1, keepdim=True)                   # [B, 1]
    # [B, G]; 0/0 = NaN for a lone scorable
    adv = grouped - (total - grouped) / (count - 1)
    adv = adv.reshape(-1)                                                # [N]
    if normalize:
        adv = (adv - torch.nanmean(adv)) / (_nanstd(adv) + eps)
    return torch.nan_to_num(adv, nan=0.0)


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0, lam: float = 0.95
        ) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation over completion tokens; returns (advantages, returns).

    Schulman et al. 2016, https://arxiv.org/abs/1506.02438 (Eq. 16). Over the valid tokens t of a row,

        δ_t = r_t + γ V_{t+1} - V_t,        Â_t = Σ_{l≥0} (γλ)^l δ_{t+l} = δ_t + γλ Â_{t+1},
        R_t = Â_t + V_t

    where "t+1" is the next *valid* token and V after the last valid token is 0 (the episode ends there).
    Masked positions are skipped: their rewards and values are ignored and they get advantage and return 0, so
    the reward must sit on a valid token (the usual place for a sequence score is the last one). γ = λ = 1
    gives Â_t = (Σ_{s≥t} r_s) - V_t, reward-to-go minus value; λ = 0 gives the one-step TD error.

    Shapes:
        rewards, values, mask: [B, T] (mask 1/True on completion tokens that count)
        returns: advantages [B, T], returns [B, T], float, no gradient, 0 where mask is 0
    """
    rewards, values, valid = rewards.float(), values.float(), mask.bool()  # [B, T] x 3
    adv = torch.zeros_like(values)                                       # [B, T]
    next_value = values.new_zeros(values.shape[0])                       # [B] V of the next valid token
    next_adv = values.new_zeros(values.shape[0])                         # [B] Â of the next valid token
    for t in reversed(range(values.shape[1])):
        m = valid[:, t]                                                  # [B]
        delta = rewards[:, t] + gamma * next_value - values[:, t]        # [B]
        a = delta + gamma * lam * next_adv                               # [B]
        adv[:, t] = torch.where(m, a, 0.0)
        next_value = torch.where(m, values[:, t], next_value)
        next_adv = torch.where(m, a, next_adv)
    returns = torch.where(valid, adv + values, 0.0)                      # [B, T]
    return adv, returns


def whiten(x: Tensor, mask: Tensor | None = None, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise to zero mean and unit variance over the valid entries: (x - μ) / √(σ² + eps).

    σ² is the sample variance (n-1) of the entries where mask is set (all entries without a mask). With
    shift_mean=False the mean is added back, so only the scale changes (PPO does this to rewards, whose sign
    carries meaning, and whitens advantages fully). Entries outside the mask come back as 0. Gradients flow.

    Shapes:
        x: any shape; mask: same shape (bool or 0/1) or None
        returns: same shape as x
    """
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    n = m.sum().clamp(min=1)
    mean = torch.where(m, x, 0.0).sum() / n
    var = torch.where(m, (x - mean) ** 2, 0.0).sum() / (n - 1).clamp(min=1)  # scalar, Bessel-corrected
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, 0.0)
