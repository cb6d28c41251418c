"""Preference-optimisation losses (DPO and its variants, IPO, SLiC, SimPO, ORPO, KTO)
as pure functions of log-probs.

Every function takes per-sequence log-probs made by `labkit.models.logprobs.sequence_logprobs` (summed or,
where the docstring says so, averaged over completion tokens), chosen and rejected passed separately, and
returns `(loss, metrics)`: a scalar tensor and plain floats named as TRL logs them (`rewards/chosen`,
`rewards/margins`…). labkit's tests check each against TRL 1.16 on the same tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _pair_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor, chosen_logps: Tensor,
                  rejected_logps: Tensor
                  ) -> dict[str, float]:
    """The reward metrics every paired loss logs; rewards are already scaled by β. [B] x 4 -> floats."""
    with torch.no_grad():
        margins = chosen_rewards - rejected_rewards                 # [B]
        return {
            "rewards/chosen": float(chosen_rewards.mean()),
            "rewards/rejected": float(rejected_rewards.mean()),
            "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
            "rewards/margins": float(margins.mean()),
            "logps/chosen": float(chosen_logps.detach().mean()),
            "logps/rejected": float(rejected_logps.detach().mean()),
        }


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *,
             beta: float = 0.1, label_smoothing: float = 0.0, robust: bool = False
             ) -> tuple[Tensor, dict[str, float]]:
    """Direct Preference Optimization, sigmoid form, with the conservative (cDPO) and robust (rDPO) variants.

    Rafailov et al. 2023, https://arxiv.org/abs/2305.18290 (Eq. 7). With the log-ratio margin

        Δ = (log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))

    the loss, averaged over the batch, is

        DPO   (ε = 0):        L = -log σ(βΔ)
        cDPO  (ε > 0):        L = -(1-ε) log σ(βΔ) - ε log σ(-βΔ)
              Mitchell 2023, "A note on DPO with noisy preferences", https://ericmitchell.ai/cdpo.pdf;
              the label is flipped with probability ε (TRL's CPOTrainer `sigmoid` form,
              older DPOTrainer `sigmoid`).
        rDPO  (robust=True):  L = [-(1-ε) log σ(βΔ) + ε log σ(-βΔ)] / (1 - 2ε),   0 ≤ ε < 0.5
              Chowdhury et al. 2024, https://arxiv.org/abs/2403.00409 (Eq. 8), an unbiased estimate of the
              clean loss under flip rate ε (TRL DPOTrainer `robust`, trl/trainer/dpo_trainer.py:1428-1431).

    Implicit rewards r = β (log π - log π_ref) are logged, detached.

    Shapes:
        policy_chosen_logps, policy_rejected_logps: [B] summed completion log-probs under the policy
        ref_chosen_logps, ref_rejected_logps: [B] the same under the frozen reference
        returns: scalar loss, metrics {"rewards/chosen", "rewards/rejected", "rewards/accuracies",
                 "rewards/margins", "logps/chosen", "logps/rejected"}
    """
    if robust and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps        # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    z = beta * (chosen_logratios - rejected_logratios)               # [B] βΔ
    eps = label_smoothing
    if robust:
        per_pair = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)  # [B]
    else:
        per_pair = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)                      # [B]
    metrics = _pair_metrics(beta * chosen_logratios.detach(), beta * rejected_logratios.detach(),
                            policy_chosen_logps, policy_rejected_logps)
    return per_pair.mean(), metrics


def hinge_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
               ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float = 0.1
               ) -> tuple[Tensor, dict[str, float]]:
    """SLiC-style hinge loss on the DPO log-ratio margin (TRL DPOTrainer `hinge`).

    Zhao et al. 2023, SLiC-HF, https://arxiv.org/abs/2305.10425: the rank-calibration term max(0, δ - Δ) with
    δ = 1/β, scaled by β; as in TRL the margin is the reference-corrected Δ of `dpo_loss`:

        L = mean_b max(0, 1 - βΔ_b)

    Pairs with βΔ ≥ 1 contribute zero loss and zero gradient.

    Shapes:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [B] summed log-probs
        returns: scalar loss, metrics as `dpo_loss`
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps        # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    per_pair = torch.relu(1 - beta * (chosen_logratios - rejected_logratios))  # [B]
    metrics = _pair_metrics(beta * chosen_logratios.detach(), beta * rejected_logratios.detach(),
                            policy_chosen_logps, policy_rejected_logps)
    return per_pair.mean(), metrics


def ipo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float = 0.1
             ) -> tuple[Tensor, dict[str, float]]:
    """Identity Preference Optimisation: squared regression of the log-ratio margin onto 1/(2β).

    Azar et al. 2023, https://arxiv.org/abs/2310.12036 (Eq. 17, β is the paper's τ):

        L = mean_b (Δ_b - 1/(2β))²

    Inputs must be *length-normalised* (per-token average) log-probs, `sequence_logprobs(..., average=True)`,
    for policy and reference alike. TRL's DPOTrainer `ipo` divides the summed log-ratios by the completion
    token count (trl/trainer/dpo_trainer.py:1393-1404), which is the same thing since policy and reference
    score the same tokens. The logged rewards are therefore β × the per-token log-ratio (TRL logs β × summed).
    The loss is minimised (zero) exactly at Δ = 1/(2β).

    Shapes:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [B] average
        log-probs returns: scalar loss, metrics as `dpo_loss`
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps        # [B]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # [B]
    per_pair = (chosen_logratios - rejected_logratios - 1 / (2 * beta)) ** 2  # [B]
    metrics = _pair_metrics(beta * chosen_logratios.detach(), beta * rejected_logratios.detach(),
                            policy_chosen_logps, policy_rejected_logps)
    return per_pair.mean(), metrics


def simpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, *,
               beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0
               ) -> tuple[Tensor, dict[str, float]]:
    """Simple Preference Optimization: reference-free, length-normalised, with a target reward margin γ.

    Meng et al. 2024, https://arxiv.org/abs/2405.14734 (Eq. 6). With average log-probs ā = (1/|y|) log π(y|x):

        L = mean_b -log σ(β(ā_w - ā_l) - γ)
        (ε > 0: -(1-ε) log σ(z) - ε log σ(-z), as TRL's CPOTrainer `simpo`, z = β(ā_w - ā_l) - γ)

    The logged rewards are β ā. `gamma` is the absolute margin (TRL's `simpo_gamma`); the paper's defaults are
    β ≈ 2-2.5, γ/β ≈ 0.5. The gradient never vanishes but decays like e^{-z} once z ≫ 0.

    Shapes:
        policy_chosen_logps, policy_rejected_logps: [B] *average* completion log-probs under the policy
        returns: scalar loss, metrics as `dpo_loss`
    """
    z = beta * (policy_chosen_logps - policy_rejected_logps) - gamma  # [B]
    eps = label_smoothing
    per_pair = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)    # [B]
    metrics = _pair_metrics(beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach(),
                            policy_chosen_logps, policy_rejected_logps)
    return per_pair.mean(), metrics


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - e^x) for x < 0, switching form at -ln 2 so neither branch cancels (Mächler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, *, beta: float = 0.1
              ) -> tuple[Tensor, dict[str, float]]:
    """The odds-ratio term of ORPO (Odds Ratio Preference Optimization); add `sft_loss` on the chosen reply.

    Hong et al. 2024, https://arxiv.org/abs/2403.07691 (Eqs. 4, 6, 7). With average log-probs ā (so
    P = e^ā ∈ (0, 1)) and odds(y) = P / (1 - P):

        log OR = log odds(y_w) - log odds(y_l) = (ā_w - ā_l) - (log(1 - e^ā_w) - log(1 - e^ā_l))
        L_OR   = mean_b -β log σ(log OR_b)            (β is the paper's λ)
        L_ORPO = L_SFT(y_w) + L_OR

    TRL's ORPOTrainer returns β log σ(log OR) per pair and subtracts its mean from the NLL; this returns
    the positive L_OR. Rewards logged are β ā (detached).

    Shapes:
        policy_chosen_logps, policy_rejected_logps: [B] *average* completion log-probs, all < 0
        returns: scalar loss, metrics as `dpo_loss` plus {"log_odds_ratio": mean log σ(log OR),
                 "log_odds_chosen": mean log OR}
    """
    chosen, rejected = policy_chosen_logps.float(), policy_rejected_logps.float()  # [B], [B]
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))      # [B]
    ratio = F.logsigmoid(log_odds)                                                  # [B]
    loss = -beta * ratio.mean()
    metrics = _pair_metrics(beta * chosen.detach(), beta * rejected.detach(), chosen, rejected)
    metrics["log_odds_ratio"] = float(ratio.detach().mean())
    metrics["log_odds_chosen"] = float(log_odds.detach().mean())
    return loss, metrics


def kto_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
             policy_kl_logps: Tensor | None = None, ref_kl_logps: Tensor | None = None, *,
             beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
             ) -> tuple[Tensor, dict[str, float]]:
    """Kahneman-Tversky Optimization: unpaired desirable / undesirable examples against a KL reference point.

    Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306 (Eq. 7). With log-ratios r(y) = log π(y) - log
    π_ref(y) and the reference point z₀ = max(0, mean_j r(y'_j)) estimated on mismatched (prompt, completion)
    pairs (detached, no gradient):

        desirable:    L_D = λ_D (1 - σ(β(r(y) - z₀)))
        undesirable:  L_U = λ_U (1 - σ(β(z₀ - r(y))))
        L = mean over all D + U examples       (λ_D = desirable_weight, λ_U = undesirable_weight)

    "Unpaired": chosen and rejected may have different lengths, and either may be empty. Without KL
    log-probs z₀ = 0 (TRL does this when `calculate_kl` is off). Matches trl/trainer/kto_trainer.py:1442-1482,
    1548 on one process.

    Shapes:
        policy_chosen_logps, ref_chosen_logps: [Bd] summed log-probs of the desirable examples (Bd ≥ 0)
        policy_rejected_logps, ref_rejected_logps: [Bu] the undesirable ones (Bu ≥ 0)
        policy_kl_logps, ref_kl_logps: [Bk] log-probs of mismatched completions, or None
        returns: scalar loss, metrics {"kl", "rewards/chosen", "logps/chosen" (if Bd > 0), "rewards/rejected",
                 "logps/rejected" (if Bu > 0), "rewards/margins" (if both)}
    """
    if policy_kl_logps is None or ref_kl_logps is None:
        kl = policy_chosen_logps.new_zeros(())
    else:
        kl = (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)  # scalar z₀
    chosen_logratios = policy_chosen_logps - ref_chosen_logps                 # [Bd]
    rejected_logratios = policy_rejected_logps - ref_rejected_logps           # [Bu]
    chosen_losses = 1 - torch.sigmoid(beta * (chosen_logratios - kl))         # [Bd]
    rejected_losses = 1 - torch.sigmoid(beta * (kl - rejected_logratios))     # [Bu]
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses))  # [Bd+Bu]
    if losses.numel() == 0:
        raise ValueError("kto_loss needs at least one desirable or undesirable example")
    metrics: dict[str, float] = {"kl": float(kl)}
    with torch.no_grad():
        if chosen_logratios.numel():
            metrics["rewards/chosen"] = float(beta * chosen_logratios.mean())
            metrics["logps/chosen"] = float(policy_chosen_logps.mean())
        if rejected_logratios.numel():
            metrics["rewards/rejected"] = float(beta * rejected_logratios.mean())
            metrics["logps/rejected"] = float(policy_rejected_logps.mean())
        if chosen_logratios.numel() and rejected_logratios.numel():
            metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return losses.mean(), metrics
