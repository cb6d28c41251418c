"""Cross-entropy of the LM head, hidden @ weight.T, without ever holding the full logits.

The plain path builds logits [N, V] (V = 49,152 for SmolLM2, 152k for Qwen), then log-softmax and its
gradient: three vocab-wide tensors alive at once, usually the largest tensors of a training step. Here the
tokens are taken a chunk at a time: a chunk's logits are computed, turned in place into their loss and
d loss / d logits (softmax minus one-hot), folded into grad_hidden and grad_weight with two matmuls, and freed
before the next chunk. Peak memory then grows with the chunk, not with the tokens. The gradients are made in
the forward, so the backward only scales them by the incoming gradient (a scalar: this supports the mean and
sum reductions).

The per-row step (logsumexp, loss, gradient) is a Triton kernel where Triton runs and plain torch otherwise;
the chunking, and so the memory saving, is the same on both paths. The matmuls stay in torch (cuBLAS).
"""

import torch
import torch.nn.functional as F

from labkit.kernels.runtime import num_warps, tile_rows, tl, triton, use_triton, vocab_block, without_autocast

IGNORE_INDEX = -100


@triton.jit
def _ce_rows_kernel(logits_ptr, labels_ptr, loss_ptr, stride_row, n_rows, n_cols, ignore_index, grad_scale,
                    WITH_GRAD: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_V: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)   # a tile of tokens
    row_mask = rows < n_rows
    # Rows past the end re-read the last row (so no row is all -inf); their results are not stored.
    z_rows = logits_ptr + tl.minimum(rows, n_rows - 1) * stride_row     # where each row starts
    labels = tl.load(labels_ptr + rows, mask=row_mask, other=ignore_index)
    # Pass 1: logsumexp over vocab tiles, keeping a running max so exp never overflows.
    m = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float32)
    s = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        z = tl.load(z_rows[:, None] + cols[None, :], mask=(cols < n_cols)[None, :], other=float("-inf"))
        z = z.to(tl.float32)                                             # logits.float()
        m_new = tl.maximum(m, tl.max(z, axis=1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
        m = m_new
    lse = m + tl.log(s)                                                  # logits.logsumexp(-1)
    valid = row_mask & (labels != ignore_index)                          # labels != ignore_index
    target = tl.load(z_rows + tl.where(valid, labels, 0), mask=valid, other=0.0).to(tl.float32)  # .gather
    loss = tl.where(valid, lse - target, 0.0)                            # (lse - target) * valid
    tl.store(loss_ptr + rows, loss, mask=row_mask)
    if WITH_GRAD:
        # Pass 2: overwrite the logits with d loss / d logits = (softmax - one_hot) * scale, 0 if ignored
        w = tl.where(valid, grad_scale, 0.0)
        for start in range(0, n_cols, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            mask = row_mask[:, None] & (cols < n_cols)[None, :]
            z = tl.load(z_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(z - lse[:, None])                                 # logits.softmax(-1)
            one_hot = tl.where(cols[None, :] == labels[:, None], 1.0, 0.0)   # F.one_hot(labels)
            grad = (p - one_hot) * w[:, None]                            # (p - one_hot) * scale
            tl.store(z_rows[:, None] + cols[None, :], grad.to(logits_ptr.dtype.element_ty), mask=mask)


def _ce_rows_triton(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, grad_scale: float,
                    with_grad: bool) -> torch.Tensor:
    """Per-row loss [C] (fp32) of logits [C, V]; with_grad overwrites logits with the scaled gradient."""
    n_rows, n_cols = logits.shape
    loss = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    block = vocab_block(n_cols)
    block_rows = tile_rows(block, n_rows)
    _ce_rows_kernel[(triton.cdiv(n_rows, block_rows),)](
        logits, labels, loss, logits.stride(0), n_rows, n_cols, ignore_index, grad_scale, WITH_GRAD=with_grad,
        BLOCK_ROWS=block_rows, BLOCK_V=block, num_warps=num_warps(block_rows * block))
    return loss


def _ce_rows_torch(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, grad_scale: float,
                   with_grad: bool) -> torch.Tensor:
    """The same contract as `_ce_rows_triton` in plain torch, in place where the dtype allows (fp32 logits are
    their own float copy), so a chunk costs about one [C, V] buffer."""
    valid = labels != ignore_index
    safe = labels.masked_fill(~valid, 0)
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)
    loss = (lse - z.gather(1, safe[:, None])[:, 0]) * valid
    if with_grad:
        z.sub_(lse[:, None]).exp_()                                      # softmax, in place
        z[torch.arange(len(z), device=z.device), safe] -= 1.0            # minus the one-hot target
        z.mul_((valid * grad_scale)[:, None].to(z.dtype))
        if z.data_ptr() != logits.data_ptr():
            logits.copy_(z)
    return loss


def default_chunk_rows(vocab: int) -> int:
    """Tokens per chunk: a power of two whose logits hold about 4M values (16 MB in fp32), at least 16 rows so
    the matmuls stay efficient. Memory then stops growing with the number of tokens."""
    rows = max(16, (1 << 22) // max(vocab, 1))
    return 1 << (rows.bit_length() - 1)


def _check_labels(labels: torch.Tensor, vocab: int, ignore_index: int) -> int:
    """Count the non-ignored labels and reject out-of-range ones (a kernel would read out of bounds), with one
    device sync for both."""
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= vocab))
    n_valid, n_bad = torch.stack([valid.sum(), bad.sum()]).tolist()
    if n_bad:
        raise ValueError(f"{n_bad} labels are outside [0, {vocab}) and not ignore_index ({ignore_index})")
    return n_valid


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Autograd wrapper: the forward makes the loss and both gradients chunk by chunk; the backward scales
    them."""

    @staticmethod
    @without_autocast
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                reduction: str, chunk_rows: int, triton_rows: bool, need_hidden: bool, need_weight: bool):
        n_valid = _check_labels(labels, weight.shape[0], ignore_index)
        scale = 1.0 / max(n_valid, 1) if reduction == "mean" else 1.0
        rows_fn = _ce_rows_triton if triton_rows else _ce_rows_torch
        with_grad = need_hidden or need_weight
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        # fp32 accumulator: summing many chunks' contributions in bf16 would lose the small ones.
        grad_weight = (torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight
                       else None)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]                         # [C, H]
            logits = h @ weight.t()                                      # [C, V]: the only vocab-wide tensor
            total += rows_fn(logits, labels[start:start + chunk_rows], ignore_index, scale, with_grad).sum()
            if need_hidden:
                torch.mm(logits, weight, out=grad_hidden[start:start + chunk_rows])   # d loss / d h
            if need_weight:
                grad_weight.addmm_(logits.t().float(), h.float())        # d loss / d weight
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        # Usually loss.backward() sends 1: then skip the multiply, which would copy a [V, H] gradient.
        if grad_out.ne(1.0).item():
            grad_hidden = None if grad_hidden is None else grad_hidden * grad_out.to(grad_hidden.dtype)
            grad_weight = None if grad_weight is None else grad_weight * grad_out
        if grad_weight is not None:
            grad_weight = grad_weight.to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                         ignore_index: int = IGNORE_INDEX, reduction: str = "mean",
                         chunk_rows: int | None = None, backend: str = "auto") -> torch.Tensor:
    """Cross-entropy of hidden [..., H] @ weight[V, H].T against labels [...], never building the full logits.

    reduction: "mean" over the non-ignored labels (0 when every label is ignored, where torch gives nan) or
    "sum". chunk_rows: tokens per chunk (default `default_chunk_rows`). backend: "auto" (Triton where it runs,
    else torch), "triton" or "torch".
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    # In the weight's dtype: under autocast the hidden states may arrive in another (autocast is off inside).
    hidden2 = hidden.reshape(-1, hidden.shape[-1]).to(weight.dtype)
    labels1 = labels.reshape(-1)
    if hidden2.shape[0] != labels1.shape[0]:
        raise ValueError(f"{hidden2.shape[0]} hidden rows but {labels1.shape[0]} labels")
    triton_rows = _pick_backend(backend, hidden2, weight)
    grad_on = torch.is_grad_enabled()
    return LinearCrossEntropyFunction.apply(
        hidden2, weight, labels1, ignore_index, reduction, chunk_rows or default_chunk_rows(weight.shape[0]),
        triton_rows, grad_on and hidden.requires_grad, grad_on and weight.requires_grad)


def _pick_backend(backend: str, *tensors: torch.Tensor) -> bool:
    """True for the Triton row kernels, False for torch ('auto': Triton where it runs)."""
    if backend == "auto":
        return use_triton(*tensors)
    if backend == "triton":
        if not use_triton(*tensors):
            raise RuntimeError("backend='triton' but Triton cannot run here (no GPU; TRITON_INTERPRET unset)")
        return True
    if backend == "torch":
        return False
    raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")


def linear_cross_entropy_reference(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                                   ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> torch.Tensor:
    """Plain torch: the full fp32 logits, then F.cross_entropy (what transformers' causal-LM loss does)."""
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)
