"""The one place that turns logits into per-token and per-sequence log-probabilities.

Every loss in labkit.losses takes log-probs made here, so a fix or a speed-up lands everywhere at once.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label_t | tokens_<t) for each position, 0 where labels == IGNORE_INDEX.

    The naive form is `logits.log_softmax(-1).gather(-1, labels[..., None])[..., 0]`; this computes the
    same values as `logit[label] - logsumexp(logits)`, which never materialises a [B, T, V] log-softmax
    copy (the vocabulary is 49k for SmolLM2, so that copy dominates memory).

    Shapes:
        logits: [B, T, V] predictions for the *next* token at each position (already shifted)
        labels: [B, T] target ids, IGNORE_INDEX where masked
        returns: [B, T] float32
    """
    mask = labels != IGNORE_INDEX                                   # [B, T]
    safe = labels.masked_fill(~mask, 0)                             # [B, T]
    logits = logits.float()
    picked = logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)      # [B, T]
    lse = torch.logsumexp(logits, dim=-1)                           # [B, T]
    return (picked - lse) * mask


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align a causal LM's logits [B, T, V] with the tokens they predict:
    drop the last logit and the first label."""
    return logits[:, :-1, :], labels[:, 1:]


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, *, average: bool = False) -> torch.Tensor:
    """Sum (or mean, with average=True) of token log-probs over the unmasked positions. [B, T, V], [B,
    T] -> [B]."""
    lp = token_logprobs(logits, labels)                             # [B, T]
    total = lp.sum(-1)                                              # [B]
    if not average:
        return total
    return total / (labels != IGNORE_INDEX).sum(-1).clamp(min=1)


def completion_batch(prompt_ids: list[list[int]], completion_ids: list[list[int]],
                     tokenizer) -> tuple[list[list[int]], list[list[int]], int]:
    """(sequences, masks, pad id) for masked_token_logps: each prompt followed by its completion, the mask
    covering only the completion; the tokenizer's pad id, or its EOS where it has none."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids)]
    masks = [[0] * len(p) + [1] * len(c) for p, c in zip(prompt_ids, completion_ids)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return seqs, masks, pad


@torch.inference_mode()
def masked_token_logps(model, sequences: list[list[int]], masks: list[list[int]], *, pad_id: int,
                       batch_size: int = 16) -> list[torch.Tensor]:
    """Per-token log-probs [n_i] of the tokens where mask is 1, for each token-id sequence under `model`.

    Sequences are sorted by length and right-padded in batches, so padding stays small; results come back in
    input order, as float32 on the CPU.
    """
    out: list[torch.Tensor] = [torch.zeros(0)] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)            # [b, T]
        attn = torch.zeros_like(ids)                                               # [b, T]
        labels = torch.full_like(ids, IGNORE_INDEX)                                # [b, T]
        for row, i in enumerate(idx):
            seq = sequences[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            attn[row, :len(seq)] = 1
            labels[row, :len(seq)] = torch.tensor([t if m else IGNORE_INDEX for t, m in zip(seq, masks[i])])
        # [b, T, V]
        logits = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device)).logits
        logits, shifted = shift_for_next_token(logits, labels.to(model.device))
        lp = token_logprobs(logits, shifted).cpu()                                 # [b, T-1]
        keep = (shifted != IGNORE_INDEX).cpu()                                     # [b, T-1]
        for row, i in enumerate(idx):
            out[i] = lp[row][keep[row]]
    return out


def masked_logps(model, sequences: list[list[int]], masks: list[list[int]], *, pad_id: int,
                 batch_size: int = 16) -> list[tuple[float, int]]:
    """(summed log-prob, token count) of the tokens where mask is 1, for each sequence (masked_token_logps).

    Used for preference scoring and KL estimates alike.
    """
    per_token = masked_token_logps(model, sequences, masks, pad_id=pad_id, batch_size=batch_size)
    return [(float(lp.sum()), int(lp.numel())) for lp in per_token]
