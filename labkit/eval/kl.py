"""KL(policy ‖ reference) estimated the honest way: on completions the policy itself samples.

A preference run's logged log-ratios are measured on the dataset's replies, which the policy did not write,
so they are not a KL. Here the policy samples y ~ π(·|x) and

    KL(π ‖ π_ref) ≈ mean over samples of  Σ_t [log π(y_t | x, y_<t) - log π_ref(y_t | x, y_<t)]

(the k1 estimator of Schulman, "Approximating KL divergence", 2020: unbiased, per-sample noisy, and each
sample's value can be negative). With a PEFT model and no explicit reference, the reference is the same
network with its adapters disabled, as TRL does it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from labkit.data.chat import encode
from labkit.models.generate import as_prompt_text, generate
from labkit.models.logprobs import masked_logps


@contextlib.contextmanager
def as_reference(model, reference=None):
    """The reference model: `reference` when given, else `model` with its PEFT adapters switched off."""
    if reference is not None:
        yield reference
        return
    if not hasattr(model, "disable_adapter"):
        raise TypeError("no reference model: pass reference=, or a PEFT model whose adapter-free base is the reference")
    with model.disable_adapter():
        yield model


def sampled_kl(model, tok, prompts: Sequence[Any], *, reference=None, n_samples: int = 2, max_new_tokens: int = 32,
               temperature: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Monte-Carlo KL(π ‖ π_ref) in nats per completion (and per token) on prompts the policy answers.

    Returns {"kl", "kl_per_token", "kl_std", "samples"}. Zero (exactly) while the policy equals the reference.
    """
    was_training = model.training
    model.eval()
    try:
        repeated = [p for p in prompts for _ in range(n_samples)]
        outs = generate(model, tok, repeated, max_new_tokens=max_new_tokens, do_sample=True,
                        temperature=temperature, seed=seed)
        prompt_ids = [encode(tok, as_prompt_text(tok, p)) for p in repeated]
        sequences = [p + list(o.token_ids) for p, o in zip(prompt_ids, outs)]
        lens = [len(p) for p in prompt_ids]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        masks = [[0] * n + [1] * (len(seq) - n) for seq, n in zip(sequences, lens)]
        policy = torch.tensor([lp for lp, _ in masked_logps(model, sequences, masks, pad_id=pad)])    # [N]
        with as_reference(model, reference) as ref:
            ref_lp = torch.tensor([lp for lp, _ in masked_logps(ref, sequences, masks, pad_id=pad)])  # [N]
    finally:
        model.train(was_training)
    per_sample = policy - ref_lp                                            # [N]
    tokens = sum(max(len(o.token_ids), 1) for o in outs)
    return {"kl": float(per_sample.mean()), "kl_per_token": float(per_sample.sum() / tokens),
            "kl_std": float(per_sample.std()) if len(per_sample) > 1 else 0.0, "samples": len(per_sample)}
