"""Selected-token log-probs and the entropy of each next-token distribution: the hot spot of DPO and GRPO.

Both losses need, per position, log p(label) = logit[label] - logsumexp(logits) and often the entropy
-sum(p log p) as a metric or bonus. Eager torch builds a full log-softmax [N, V] for that (plus p for the
entropy) and keeps it for the backward. Here a forward kernel makes one pass over each row's logits (online
logsumexp, and sum(p * z) for the entropy) and saves only the logsumexp and entropy per row; the backward
kernel rebuilds p from the logits and writes the gradient once.

`linear_selected_logprobs` goes one step further: from the hidden states and the LM-head weight, chunked over
tokens like labkit.kernels.cross_entropy, so the full logits never exist. Unlike the cross-entropy, the
incoming gradient is per token (a DPO or GRPO weight per position), so the backward recomputes each chunk's
logits rather than making gradients in the forward. Both functions have a plain-torch path with the same
chunking for CPUs (backend="torch").

Positions whose label is ignore_index get log-prob 0 and entropy 0, and no gradient.
"""

import torch

from labkit.kernels.cross_entropy import IGNORE_INDEX, _check_labels, _pick_backend, default_chunk_rows
from labkit.kernels.runtime import num_warps, tile_rows, tl, triton, vocab_block, without_autocast


@triton.jit
def _logprob_forward_kernel(logits_ptr, labels_ptr, logp_ptr, entropy_ptr, lse_ptr, stride_row, n_rows,
                            n_cols, ignore_index, inv_temperature, BLOCK_ROWS: tl.constexpr,
                            BLOCK_V: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)   # a tile of tokens
    row_mask = rows < n_rows
    # Rows past the end re-read the last row (so no row is all -inf); their results are not stored.
    z_rows = logits_ptr + tl.minimum(rows, n_rows - 1) * stride_row     # where each row starts
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=ignore_index)
    m = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float32)         # running max
    s = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)                        # sum(exp(z - m))
    t = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)                        # sum(exp(z - m) * z): entropy
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = (cols < n_cols)[None, :]
        z = tl.load(z_rows[:, None] + cols[None, :], mask=mask, other=float("-inf"))
        z = z.to(tl.float32) * inv_temperature                           # logits.float() / T
        m_new = tl.maximum(m, tl.max(z, axis=1))
        alpha = tl.exp(m - m_new)                                        # rescales the sums to the new max
        e = tl.exp(z - m_new[:, None])
        s = s * alpha + tl.sum(e, axis=1)
        t = t * alpha + tl.sum(e * tl.where(mask, z, 0.0), axis=1)       # masked z is -inf: 0 * -inf = nan
        m = m_new
    lse = m + tl.log(s)                                                  # z.logsumexp(-1)
    entropy = lse - t / s                                                # -(p * log p).sum()
    valid = row_mask & (labels != ignore_index)
    target = tl.load(z_rows + tl.where(valid, labels, 0), mask=valid, other=0.0).to(tl.float32)
    target = target * inv_temperature                                    # z.gather(-1, labels)
    tl.store(logp_ptr + rows, tl.where(valid, target - lse, 0.0), mask=row_mask)    # (target - lse) * valid
    tl.store(entropy_ptr + rows, tl.where(valid, entropy, 0.0), mask=row_mask)      # entropy * valid
    tl.store(lse_ptr + rows, lse, mask=row_mask)                         # kept for the backward


@triton.jit
def _logprob_backward_kernel(logits_ptr, labels_ptr, lse_ptr, entropy_ptr, dlogp_ptr, dentropy_ptr,
                             dlogits_ptr, stride_row, stride_drow, n_rows, n_cols, ignore_index,
                             inv_temperature, BLOCK_ROWS: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = rows < n_rows
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=ignore_index)
    valid = row_mask & (labels != ignore_index)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    entropy = tl.load(entropy_ptr + rows, mask=row_mask, other=0.0)
    g_lp = tl.load(dlogp_ptr + rows, mask=valid, other=0.0)              # grad_logp * valid
    g_ent = tl.load(dentropy_ptr + rows, mask=valid, other=0.0)          # grad_entropy * valid
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = row_mask[:, None] & (cols < n_cols)[None, :]
        z = tl.load(logits_ptr + rows[:, None] * stride_row + cols[None, :], mask=mask, other=0.0)
        z = z.to(tl.float32) * inv_temperature                           # logits.float() / T
        logp = z - lse[:, None]                                          # z.log_softmax(-1)
        p = tl.exp(logp)                                                 # z.softmax(-1)
        one_hot = tl.where(cols[None, :] == labels[:, None], 1.0, 0.0)   # F.one_hot(labels)
        # d logp[label] / dz = one_hot - p;  d entropy / dz = -p * (log p + entropy)
        dz = g_lp[:, None] * (one_hot - p) - g_ent[:, None] * p * (logp + entropy[:, None])
        tl.store(dlogits_ptr + rows[:, None] * stride_drow + cols[None, :],
                 (dz * inv_temperature).to(dlogits_ptr.dtype.element_ty), mask=mask)   # via z = logits/T


def _rows_forward_triton(logits, labels, ignore_index, inv_temperature):
    """logp, entropy, lse [C] (fp32) of logits [C, V]."""
    n_rows, n_cols = logits.shape
    logp, entropy, lse = (torch.empty(n_rows, dtype=torch.float32, device=logits.device) for _ in range(3))
    block = vocab_block(n_cols)
    block_rows = tile_rows(block, n_rows)
    _logprob_forward_kernel[(triton.cdiv(n_rows, block_rows),)](
        logits, labels, logp, entropy, lse, logits.stride(0), n_rows, n_cols, ignore_index, inv_temperature,
        BLOCK_ROWS=block_rows, BLOCK_V=block, num_warps=num_warps(block_rows * block))
    return logp, entropy, lse


def _rows_backward_triton(logits, labels, lse, entropy, dlogp, dentropy, ignore_index, inv_temperature):
    """d (logp, entropy) / d logits [C, V], given the incoming gradients dlogp and dentropy [C]."""
    n_rows, n_cols = logits.shape
    dlogits = torch.empty_like(logits)
    block = vocab_block(n_cols)
    block_rows = tile_rows(block, n_rows)
    _logprob_backward_kernel[(triton.cdiv(n_rows, block_rows),)](
        logits, labels, lse, entropy, dlogp.float().contiguous(), dentropy.float().contiguous(), dlogits,
        logits.stride(0), dlogits.stride(0), n_rows, n_cols, ignore_index, inv_temperature,
        BLOCK_ROWS=block_rows, BLOCK_V=block, num_warps=num_warps(block_rows * block))
    return dlogits


def _rows_forward_torch(logits, labels, ignore_index, inv_temperature):
    """The same contract as `_rows_forward_triton` in plain torch (chunk-sized temporaries)."""
    valid = labels != ignore_index
    z = logits.float() * inv_temperature
    lse = torch.logsumexp(z, dim=-1)
    logp_all = z.sub_(lse[:, None])                                      # log_softmax, in place of z
    logp = logp_all.gather(1, labels.masked_fill(~valid, 0)[:, None])[:, 0] * valid
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy * valid, lse


def _rows_backward_torch(logits, labels, lse, entropy, dlogp, dentropy, ignore_index, inv_temperature):
    """The same contract as `_rows_backward_triton` in plain torch."""
    valid = labels != ignore_index
    g_lp = (dlogp.float() * valid)[:, None]
    g_ent = (dentropy.float() * valid)[:, None]
    logp_all = (logits.float() * inv_temperature).sub_(lse[:, None])     # log_softmax
    dz = logp_all.add(entropy[:, None]).mul_(g_ent)                      # g_ent * (log p + entropy)
    dz.add_(g_lp).mul_(logp_all.exp_()).neg_()                           # -p * (g_lp + g_ent * (log p + H))
    dz.scatter_add_(1, labels.masked_fill(~valid, 0)[:, None], g_lp)     # + g_lp * one_hot
    return (dz * inv_temperature).to(logits.dtype)


class SelectedLogprobsFunction(torch.autograd.Function):
    """From full logits [N, V]: saves the logits plus two numbers per row, not a log-softmax."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index, inv_temperature, triton_rows):
        fwd = _rows_forward_triton if triton_rows else _rows_forward_torch
        logp, entropy, lse = fwd(logits, labels, ignore_index, inv_temperature)
        ctx.save_for_backward(logits, labels, lse, entropy)
        ctx.args = (ignore_index, inv_temperature, triton_rows)
        return logp, entropy

    @staticmethod
    def backward(ctx, dlogp, dentropy):
        logits, labels, lse, entropy = ctx.saved_tensors
        ignore_index, inv_temperature, triton_rows = ctx.args
        bwd = _rows_backward_triton if triton_rows else _rows_backward_torch
        dlogp = torch.zeros_like(lse) if dlogp is None else dlogp
        dentropy = torch.zeros_like(lse) if dentropy is None else dentropy
        dlogits = bwd(logits, labels, lse, entropy, dlogp, dentropy, ignore_index, inv_temperature)
        return dlogits, None, None, None, None


class LinearSelectedLogprobsFunction(torch.autograd.Function):
    """From hidden [N, H] and weight [V, H], a chunk of tokens at a time; the backward recomputes each chunk's
    logits (one extra matmul per chunk) instead of keeping them."""

    @staticmethod
    @without_autocast
    def forward(ctx, hidden, weight, labels, ignore_index, inv_temperature, chunk_rows, triton_rows):
        fwd = _rows_forward_triton if triton_rows else _rows_forward_torch
        parts = []
        for start in range(0, hidden.shape[0], chunk_rows):
            logits = hidden[start:start + chunk_rows] @ weight.t()       # [C, V]: the only vocab-wide tensor
            parts.append(fwd(logits, labels[start:start + chunk_rows], ignore_index, inv_temperature))
        logp, entropy, lse = (torch.cat(p) for p in zip(*parts))
        ctx.save_for_backward(hidden, weight, labels, lse, entropy)
        ctx.args = (ignore_index, inv_temperature, chunk_rows, triton_rows)
        return logp, entropy

    @staticmethod
    @without_autocast
    def backward(ctx, dlogp, dentropy):
        hidden, weight, labels, lse, entropy = ctx.saved_tensors
        ignore_index, inv_temperature, chunk_rows, triton_rows = ctx.args
        bwd = _rows_backward_triton if triton_rows else _rows_backward_torch
        dlogp = torch.zeros_like(lse) if dlogp is None else dlogp
        dentropy = torch.zeros_like(lse) if dentropy is None else dentropy
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = (torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight
                       else None)
        for start in range(0, hidden.shape[0], chunk_rows):
            sl = slice(start, start + chunk_rows)
            h = hidden[sl]
            logits = h @ weight.t()                                      # recomputed, [C, V]
            dlogits = bwd(logits, labels[sl], lse[sl], entropy[sl], dlogp[sl], dentropy[sl], ignore_index,
                          inv_temperature)
            del logits                                                   # free before the matmuls below
            if need_hidden:
                torch.mm(dlogits, weight, out=grad_hidden[sl])
            if need_weight:
                grad_weight.addmm_(dlogits.t().float(), h.float())
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def selected_logprobs(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX,
                      temperature: float = 1.0, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) and the entropy of softmax(logits / temperature), each [...] fp32, from logits [..., V]
    and labels [...] (0 where ignored). backend: "auto" (Triton where it runs), "triton" or "torch"."""
    logits2 = logits.reshape(-1, logits.shape[-1])
    if logits2.stride(-1) != 1:
        logits2 = logits2.contiguous()
    labels1 = labels.reshape(-1)
    _check_labels(labels1, logits2.shape[1], ignore_index)
    logp, entropy = SelectedLogprobsFunction.apply(logits2, labels1, ignore_index, 1.0 / temperature,
                                                   _pick_backend(backend, logits2))
    return logp.view(labels.shape), entropy.view(labels.shape)


def linear_selected_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                             ignore_index: int = IGNORE_INDEX, temperature: float = 1.0,
                             chunk_rows: int | None = None,
                             backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """`selected_logprobs` of hidden [..., H] @ weight[V, H].T, chunked so the full logits never exist.
    chunk_rows: tokens per chunk (default: labkit.kernels.cross_entropy.default_chunk_rows)."""
    hidden2 = hidden.reshape(-1, hidden.shape[-1]).to(weight.dtype)    # as in linear_cross_entropy
    labels1 = labels.reshape(-1)
    _check_labels(labels1, weight.shape[0], ignore_index)
    logp, entropy = LinearSelectedLogprobsFunction.apply(
        hidden2, weight, labels1, ignore_index, 1.0 / temperature,
        chunk_rows or default_chunk_rows(weight.shape[0]), _pick_backend(backend, hidden2, weight))
    return logp.view(labels.shape), entropy.view(labels.shape)


def selected_logprobs_reference(logits: torch.Tensor, labels: torch.Tensor, *,
                                ignore_index: int = IGNORE_INDEX,
                                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch: a full log_softmax, gather, and -(p * log p).sum(); both zeroed where ignored."""
    valid = labels != ignore_index
    logp_all = (logits.float() / temperature).log_softmax(-1)
    logp = logp_all.gather(-1, labels.masked_fill(~valid, 0).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp * valid, entropy * valid


def linear_selected_logprobs_reference(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                                       ignore_index: int = IGNORE_INDEX,
                                       temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch: the full logits, then `selected_logprobs_reference`."""
    return selected_logprobs_reference(hidden @ weight.t(), labels, ignore_index=ignore_index,
                                       temperature=temperature)
