"""Policy-gradient losses for RL on language models (PPO, GRPO and its Dr. GRPO / DAPO variants, REINFORCE).

Every function takes per-token log-probs of the sampled completion tokens (from `labkit.models.logprobs`),
a completion mask and advantages (from `labkit.losses.advantages`), and returns `(loss, metrics)`: a scalar
tensor to minimise and plain floats named as TRL logs them. `grpo_loss` is checked against TRL 1.16's
`GRPOTrainer._compute_loss` on the same tensors.
"""

from __future__ import annotations

import torch

from labkit.errors import ConfigError
from labkit.losses.kl import kl_k2, kl_k3

Tensor = torch.Tensor

GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over the entries where mask is set (along `dim`, or over everything); 0 where nothing is set.

    Masked entries are selected out rather than multiplied by 0, so a NaN or inf there cannot leak in.

    Shapes:
        x: [...]; mask: same shape, bool or 0/1
        returns: scalar (dim=None) or x reduced along dim
    """
    m = mask.bool()
    total = torch.where(m, x, 0.0).sum() if dim is None else torch.where(m, x, 0.0).sum(dim)
    count = m.sum() if dim is None else m.sum(dim)
    return total / count.clamp(min=1)


def ppo_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, clip_eps: float = 0.2
                    ) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, averaged over valid tokens.

    Schulman et al. 2017, https://arxiv.org/abs/1707.06347 (Eq. 7). With the ratio ρ_t = π(a_t) / π_old(a_t):

        L = mean_t -min(ρ_t Â_t, clip(ρ_t, 1-ε, 1+ε) Â_t)

    The min makes the objective pessimistic: once ρ has moved past 1±ε in the direction Â favours, the clipped
    branch is active and the token's gradient is 0; a move the wrong way is never clipped.

    Metrics: "clip_fraction" is the share of valid tokens where the clipped branch is active (strictly larger
    loss); "approx_kl" is the mean of ½(log ρ)² (Schulman's k2 between π_old and π, what TRL's old PPOTrainer
    logged); "ratio_mean" is the mean ρ.

    Shapes:
        logp, old_logp: [B, T] log-probs of the sampled tokens now and when they were sampled
        advantages: [B, T]; mask: [B, T] completion tokens that count
        returns: scalar loss, metrics {"clip_fraction", "approx_kl", "ratio_mean"}
    """
    m = mask.bool()                                                      # [B, T]
    logp, old_logp = torch.where(m, logp, 0.0), torch.where(m, old_logp, 0.0)  # [B, T]; no -inf from padding
    log_ratio = logp - old_logp                                          # [B, T]
    ratio = torch.exp(log_ratio)                                         # [B, T]
    unclipped = -ratio * advantages                                      # [B, T]
    clipped = -torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages  # [B, T]
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        metrics = {
            "clip_fraction": float(masked_mean((clipped > unclipped).float(), mask)),
            "approx_kl": float(masked_mean(kl_k2(logp, old_logp), mask)),
            "ratio_mean": float(masked_mean(ratio, mask)),
        }
    return loss, metrics


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip_eps: float = 0.2
                   ) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped value loss, averaged over valid tokens.

    The clipping of the value head's step follows OpenAI baselines' PPO2 (as used by Ziegler et al. 2019,
    https://arxiv.org/abs/1909.08593, and Huang et al. 2024, "The N+ implementation details of RLHF with PPO",
    https://arxiv.org/abs/2403.17031):

        V_clip = V_old + clip(V - V_old, -ε, ε)
        L = ½ mean_t max((V_t - R_t)², (V_clip,t - R_t)²)

    ε is in the units of the value (reward), not a ratio. "value_clip_fraction" is the share of valid tokens
    where the clipped error is the larger (so that token's value gradient is 0); "value_mean" is the mean V.

    Shapes:
        values, old_values, returns, mask: [B, T]
        returns: scalar loss, metrics {"value_clip_fraction", "value_mean"}
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)  # [B, T]
    err = (values - returns) ** 2                                        # [B, T]
    err_clipped = (clipped_values - returns) ** 2                        # [B, T]
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        metrics = {
            "value_clip_fraction": float(masked_mean((err_clipped > err).float(), mask)),
            "value_mean": float(masked_mean(values, mask)),
        }
    return loss, metrics


def grpo_loss(logp: Tensor, old_logp: Tensor | None, advantages: Tensor, mask: Tensor, *,
              ref_logp: Tensor | None = None, beta: float = 0.0, epsilon: float = 0.2,
              epsilon_high: float | None = None, loss_type: str = "grpo",
              max_completion_length: int | None = None,
              num_items: int | float | Tensor | None = None, kl_bias_correction: bool = True
              ) -> tuple[Tensor, dict[str, float]]:
    """GRPO's per-token clipped objective with an optional k3 KL penalty, aggregated as TRL 1.16 does.

    Shao et al. 2024, DeepSeekMath, https://arxiv.org/abs/2402.03300 (Eq. 3). With ρ_t = π(o_t) / π_old(o_t),
    one advantage Â per sequence, and k3_t = e^{r_t} - r_t - 1, r_t = log π_ref(o_t) - log π(o_t):

        ℓ_t = -min(ρ_t Â, clip(ρ_t, 1-ε_low, 1+ε_high) Â) + β ρ_t k3_t     (kl_bias_correction=True, default)
        ℓ_t = -min(ρ_t Â, clip(ρ_t, 1-ε_low, 1+ε_high) Â) + β k3_t         (kl_bias_correction=False,
        the paper)

    and the token losses ℓ_{b,t} (valid tokens only, |o_b| of them in row b) are averaged by `loss_type`:

        "grpo"     (1/B) Σ_b (1/|o_b|) Σ_t ℓ       per-sequence mean, then mean; short replies weigh more per
        token "dr_grpo"  Σ_b Σ_t ℓ / (B · L)             L = max_completion_length, a constant: no length bias
                   (Liu et al. 2025, Dr. GRPO, https://arxiv.org/abs/2503.20783)
        "bnpo"     Σ_b Σ_t ℓ / Σ_b |o_b|           token mean over this (micro-)batch
        "dapo"     Σ_b Σ_t ℓ / N                   N = `num_items`,
        the valid tokens of every micro-batch whose
                   gradients are summed into one step (default: this batch's, then it equals "bnpo")
                   (Yu et al. 2025, DAPO, https://arxiv.org/abs/2503.14476, its token-level loss; its
                   clip-higher is `epsilon_high`)

    ε_low = epsilon, ε_high = epsilon_high (None: epsilon). old_logp None means on-policy: ρ = 1 in value but
    its gradient is ∇log π, the policy gradient. Weighting k3 by the (unclipped) ratio ρ is TRL 1.16's default
    `use_bias_correction_kl=True` (DeepSeek-V3.2, https://arxiv.org/abs/2512.02556): it makes the KL term's
    gradient the unbiased reverse-KL gradient, and it changes that gradient even on-policy, where ρ = 1 in
    value. Matches trl/trainer/grpo_trainer.py:3020-3184 on one process with token-level importance sampling
    (TRL's dapo normaliser num_items_in_batch / num_processes · grad_accum / steps_per_generation is N with
    the default steps_per_generation = grad_accum). TRL further divides grpo/dr_grpo/bnpo by the
    gradient-accumulation steps; a caller that accumulates does that itself.

    Metrics, token-weighted means over valid tokens as TRL logs them: "kl" (mean k3, times ρ under
    kl_bias_correction as TRL logs it, so plain k3 on-policy; when ref_logp is given),
    "clip_ratio/low_mean" (ρ < 1-ε_low with Â < 0), "clip_ratio/high_mean" (ρ > 1+ε_high with Â > 0),
    "clip_ratio/region_mean" (either).

    Shapes:
        logp: [B, T] log-probs of the completion tokens under the policy being trained (with grad)
        old_logp, ref_logp: [B, T] the same under the sampling policy and the reference, or None
        advantages: [B] one per sequence ([B, T] per token also accepted); mask: [B, T]
        returns: scalar loss, metrics {"clip_ratio/low_mean", "clip_ratio/high_mean",
        "clip_ratio/region_mean",
                 and "kl" when ref_logp is given}
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ConfigError("loss_type", f"unknown GRPO loss type {loss_type!r}; "
                          f"use one of {', '.join(GRPO_LOSS_TYPES)}")
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ConfigError("max_completion_length",
                          "loss_type 'dr_grpo' divides by B × max_completion_length, "
                          "a constant; pass the generation length limit")
    if beta != 0.0 and ref_logp is None:
        raise ValueError("grpo_loss: beta != 0 needs ref_logp, the reference model's log-probs of the same "
                         "tokens")
    eps_low, eps_high = epsilon, epsilon if epsilon_high is None else epsilon_high
    m = mask.bool()                                                      # [B, T]
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # [B, 1] or [B, T]
    # Padding is zeroed first so a -inf there cannot turn into a NaN gradient (0 · inf) on the way back.
    logp = torch.where(m, logp, 0.0)                                     # [B, T]
    old = logp.detach() if old_logp is None else torch.where(m, old_logp, 0.0)  # [B, T]
    ref_logp = None if ref_logp is None else torch.where(m, ref_logp, 0.0)     # [B, T]
    ratio = torch.exp(logp - old)                                        # [B, T]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)              # [B, T]
    per_token = -torch.min(ratio * adv, clipped * adv)                   # [B, T]
    kl = kl_k3(logp, ref_logp) if ref_logp is not None else None         # [B, T]
    if kl is not None and kl_bias_correction:
        kl = kl * ratio                                                  # [B, T] importance-weighted k3
    if beta != 0.0:
        per_token = per_token + beta * kl
    summed = torch.where(m, per_token, 0.0)                              # [B, T]
    if loss_type == "grpo":
        loss = (summed.sum(-1) / m.sum(-1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        loss = summed.sum() / (logp.shape[0] * max_completion_length)
    elif loss_type == "bnpo" or num_items is None:
        loss = summed.sum() / m.sum().clamp(min=1)
    else:  # dapo with an explicit token count
        loss = summed.sum() / torch.as_tensor(num_items, dtype=summed.dtype,
                                              device=summed.device).clamp(min=1)

    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0)                          # [B, T]
        high = (ratio > 1 + eps_high) & (adv > 0)                        # [B, T]
        metrics = {
            "clip_ratio/low_mean": float(masked_mean(low.float(), m)),
            "clip_ratio/high_mean": float(masked_mean(high.float(), m)),
            "clip_ratio/region_mean": float(masked_mean((low | high).float(), m)),
        }
        if kl is not None:
            metrics["kl"] = float(masked_mean(kl, m))
    return loss, metrics


def reinforce_loss(logp: Tensor, advantages: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Sequence-level REINFORCE: -Â times the completion's summed log-prob, averaged over sequences.

    Williams 1992, https://doi.org/10.1007/BF00992696; with RLOO's leave-one-out advantages this is the RLOO
    objective of Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740:

        L = -(1/B) Σ_b Â_b Σ_t log π(o_{b,t})

    Its gradient equals that of TRL 1.16's RLOOTrainer loss (a sequence-level clipped ratio,
    trl/trainer/rloo_trainer.py:1823-1834) on the first, on-policy pass, where the ratio is 1 and nothing
    clips. The loss value itself is not comparable across batches (it scales with completion length).

    Shapes:
        logp: [B, T] completion token log-probs (with grad); advantages: [B]; mask: [B, T]
        returns: scalar loss, metrics {"seq_logp_mean", "advantage_mean"}
    """
    seq_logp = torch.where(mask.bool(), logp, 0.0).sum(-1)              # [B]
    loss = -(advantages.detach() * seq_logp).mean()
    metrics = {"seq_logp_mean": float(seq_logp.detach().mean()),
               "advantage_mean": float(advantages.float().mean())}
    return loss, metrics
