"""Per-token estimators of KL(π ‖ π_ref) from the log-probs of tokens sampled from π (Schulman's k1, k2, k3).

Schulman 2020, "Approximating KL divergence", http://joschu.net/blog/kl-approx.html. With x ~ π and the log
ratio r = log π_ref(x) - log π(x), each k is a function of one sample whose mean over samples estimates the
KL:

    k1 = -r                    unbiased, high variance, negative on some samples
    k2 = ½ r²                  biased (its mean is an f-divergence that matches KL to second order), low
    variance k3 = (e^r - 1) - r         unbiased (E_π[e^r] = 1) and ≥ 0 on every sample, low variance;
    GRPO's penalty

The estimates are only right when the tokens were sampled from π (the first argument), not from π_ref.
"""

from __future__ import annotations

import torch

from labkit.errors import ConfigError

Tensor = torch.Tensor

KINDS = ("k1", "k2", "k3")


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log π(x) - log π_ref(x), the plain log ratio. Shapes: any, matching; returns the same shape."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = ½ (log π(x) - log π_ref(x))². Shapes: any, matching; returns the same shape, ≥ 0."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = e^r - r - 1 with r = log π_ref(x) - log π(x). Shapes: any, matching; returns the same shape, ≥ 0.

    This is the per-token KL term of GRPO (trl/trainer/grpo_trainer.py:3098-3102 in TRL 1.16). Since e^r ≥ 1 +
    r it is never negative, and it is 0 exactly where the two log-probs agree.
    """
    r = ref_logp - logp
    return torch.exp(r) - r - 1


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k3") -> Tensor:
    """Per-token KL(π ‖ π_ref) estimate by name: "k1", "k2" or "k3" (see the module docstring).

    Shapes:
        logp, ref_logp: [...] log-probs of the sampled tokens under the policy and the reference
        returns: [...] per-token estimates (average them over valid tokens for the KL)
    """
    if kind == "k1":
        return kl_k1(logp, ref_logp)
    if kind == "k2":
        return kl_k2(logp, ref_logp)
    if kind == "k3":
        return kl_k3(logp, ref_logp)
    raise ConfigError("kl_estimator", f"unknown KL estimator {kind!r}; use one of {', '.join(KINDS)}")
