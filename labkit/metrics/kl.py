"""KL(policy ‖ reference) measured the honest way: on completions the policy itself samples.

A preference run's logged log-ratios are measured on the dataset's replies, which the policy did not write,
so they are not a KL. Here the policy samples y ~ π(·|x), both models score every sampled token, and the
per-token estimators of labkit.losses.kl are summed over each completion:

    k1 = log π(y_t) - log π_ref(y_t)           unbiased, but a single sample can be negative
    k3 = e^r - 1 - r, r = log π_ref - log π    unbiased and ≥ 0 on every sample (Schulman 2020)

With a handful of samples the mean of k1 often reads below zero although a KL never is, which is confusing
on a dashboard. So `kl` (what tables, cards and dashboards show) is the k3 estimate; k1 is reported beside it
with a 95% interval, so a reader sees how much of the number is noise. With a PEFT model and no explicit
reference, the reference is the same network with its adapters disabled, as TRL does it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch

from labkit.data.chat import encode
from labkit.losses.kl import kl_k1, kl_k3
from labkit.models.generate import as_prompt_text, generate
from labkit.models.logprobs import masked_token_logps


@contextlib.contextmanager
def as_reference(model, reference=None):
    """The reference model: `reference` when given, else `model` with its PEFT adapters switched off."""
    if reference is not None:
        yield reference
        return
    if not hasattr(model, "disable_adapter"):
        raise TypeError("no reference model: pass reference=, or a PEFT model whose adapter-free base is the "
                        "reference")
    with model.disable_adapter():
        yield model


def kl_summary(policy_logps: Sequence[torch.Tensor], ref_logps: Sequence[torch.Tensor]) -> dict[str, Any]:
    """The KL estimates from per-token log-probs of sampled completions under the policy and the reference.

    Args:
        policy_logps, ref_logps: one 1-D tensor per completion, [n_i] log-probs of its sampled tokens.
    Returns:
        {"kl": mean k3 per completion (≥ 0), "kl_per_token": k3 per token, "kl_k1": mean k1 per completion,
         "kl_k1_low", "kl_k1_high": its 95% normal interval, "kl_std": k3's std over completions,
         "samples": completions, "estimator": "k3"}.

    Example:
        kl_summary([torch.tensor([-1.0, -2.0])], [torch.tensor([-1.2, -1.9])])["kl"]   # ≈ 0.025
    """
    k1 = torch.stack([kl_k1(p.double(), r.double()).sum() for p, r in zip(policy_logps, ref_logps)])  # [N]
    k3 = torch.stack([kl_k3(p.double(), r.double()).sum() for p, r in zip(policy_logps, ref_logps)])  # [N]
    n = len(k1)
    tokens = sum(max(len(p), 1) for p in policy_logps)
    half = 1.96 * float(k1.std()) / math.sqrt(n) if n > 1 else math.inf
    k1_mean = float(k1.mean())
    return {"kl": float(k3.mean()), "kl_per_token": float(k3.sum() / tokens), "kl_k1": k1_mean,
            "kl_k1_low": k1_mean - half, "kl_k1_high": k1_mean + half,
            "kl_std": float(k3.std()) if n > 1 else 0.0, "samples": n, "estimator": "k3"}


def sampled_kl(model, tok, prompts: Sequence[Any], *, reference=None, n_samples: int = 2,
               max_new_tokens: int = 32, temperature: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Monte-Carlo KL(π ‖ π_ref) in nats per completion on completions the policy samples for `prompts`.

    Args:
        model: the policy; with reference=None a PEFT model whose adapter-free base is the reference.
        prompts: message lists or strings; each is sampled n_samples times.
    Returns:
        kl_summary's dict (kl is the non-negative k3 estimate). Exactly zero while policy equals reference.

    Example:
        sampled_kl(peft_model, tok, ["What is 2 + 3?"], n_samples=4)["kl"]
    """
    was_training = model.training
    model.eval()
    try:
        repeated = [p for p in prompts for _ in range(n_samples)]
        outs = generate(model, tok, repeated, max_new_tokens=max_new_tokens, do_sample=True,
                        temperature=temperature, seed=seed)
        prompt_ids = [encode(tok, as_prompt_text(tok, p)) for p in repeated]
        sequences = [p + list(o.token_ids) for p, o in zip(prompt_ids, outs)]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        masks = [[0] * len(p) + [1] * (len(seq) - len(p)) for seq, p in zip(sequences, prompt_ids)]
        policy = masked_token_logps(model, sequences, masks, pad_id=pad)
        with as_reference(model, reference) as ref:
            ref_lp = masked_token_logps(ref, sequences, masks, pad_id=pad)
    finally:
        model.train(was_training)
    return kl_summary(policy, ref_lp)
