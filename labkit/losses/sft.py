"""Supervised fine-tuning loss: masked next-token cross-entropy, written to be read.

This is what TRL's SFTTrainer computes (through the model's own loss) for a batch whose labels hold -100
on the tokens the model should not learn (the prompt, padding). labkit's tests check the two agree.
"""

from __future__ import annotations

import torch

from labkit.models.logprobs import IGNORE_INDEX, shift_for_next_token, token_logprobs


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, *, num_items: int | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean negative log-likelihood of the labelled tokens.

        L = -(1/N) Σ_b Σ_t m_bt · log p(y_b,t+1 | y_b,≤t),   m_bt = [label_b,t+1 ≠ -100],  N = Σ m

    N is the number of labelled tokens in the batch (or `num_items`, the count over all gradient
    accumulation micro-batches, which is what makes accumulation equal one big batch). Every labelled
    token weighs the same, so long replies count more than short ones.

    Shapes:
        logits: [B, T, V] unshifted model outputs
        labels: [B, T] input ids with IGNORE_INDEX (-100) where no loss is taken
        returns: scalar loss, metrics {"nll_tokens", "token_accuracy"}
    """
    logits, labels = shift_for_next_token(logits, labels)           # [B, T-1, V], [B, T-1]
    mask = labels != IGNORE_INDEX                                   # [B, T-1]
    lp = token_logprobs(logits, labels)                             # [B, T-1], 0 where masked
    n = mask.sum() if num_items is None else torch.as_tensor(num_items, device=lp.device)
    loss = -lp.sum() / n.clamp(min=1)
    with torch.no_grad():
        correct = (logits.argmax(-1) == labels) & mask              # [B, T-1]
        acc = correct.sum() / mask.sum().clamp(min=1)
    return loss, {"nll_tokens": float(mask.sum()), "token_accuracy": float(acc)}
