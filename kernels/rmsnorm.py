"""RMSNorm as Triton kernels: y = weight * x / sqrt(mean(x²) + eps), the norm of Llama/Qwen-style models.

Eager torch runs it as ~6 separate ops, each reading and writing the whole activation; the forward kernel
reads x once and writes y once, and saves one number per row (1/rms) so the backward need not recompute the
reduction. Statistics are in fp32 whatever the input dtype, as in transformers' LlamaRMSNorm.
"""

import torch

from labkit.kernels.runtime import num_warps, reduction_programs, row_block, tile_rows, tl, triton, use_triton


@triton.jit
def _rmsnorm_forward(x_ptr, w_ptr, y_ptr, rstd_ptr, stride_x, stride_y, n_rows, n_cols, eps,
                     BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)   # a tile of rows
    cols = tl.arange(0, BLOCK)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)   # x
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)                 # rsqrt(x.pow(2).mean(-1) + eps)
    w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)   # weight
    y = x * rstd[:, None] * w[None, :]                                    # weight * (x * rstd)
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rows < n_rows)                   # kept for the backward


@triton.jit
def _rmsnorm_backward(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_ptr, stride_dy, stride_x, stride_dx,
                      n_rows, n_cols, rows_per_program, BLOCK_ROWS: tl.constexpr, BLOCK: tl.constexpr):
    # Each program walks a range of rows, a tile at a time, and sums its share of dweight in registers: one
    # partial row per program instead of one per input row.
    pid = tl.program_id(0).to(tl.int64)                                   # 64-bit row offsets below
    cols = tl.arange(0, BLOCK)
    col_mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)    # weight
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    first = pid * rows_per_program
    last = tl.minimum(first + rows_per_program, n_rows)
    for start in range(first, last, BLOCK_ROWS):
        rows = start + tl.arange(0, BLOCK_ROWS)
        row_mask = rows < last
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=row_mask, other=0.0)         # rsqrt(mean(x²) + eps)
        x_hat = x * rstd[:, None]                                         # x * rstd
        g = dy * w[None, :]                                               # grad wrt x_hat
        # d/dx of x * rstd(x): rstd * (g - x_hat * mean(g * x_hat))
        dx = rstd[:, None] * (g - x_hat * (tl.sum(g * x_hat, axis=1) / n_cols)[:, None])
        tl.store(dx_ptr + rows[:, None] * stride_dx + cols[None, :], dx.to(dx_ptr.dtype.element_ty),
                 mask=mask)
        dw += tl.sum(dy * x_hat, axis=0)                                  # (grad_out * x_hat).sum(rows)
    tl.store(dw_ptr + pid * n_cols + cols, dw, mask=col_mask)


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """[..., H] -> [rows, H] with unit stride along H, as the kernels index it."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    n_rows, n_cols = x.shape
    y = torch.empty((n_rows, n_cols), dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    block = row_block(n_cols)
    block_rows = tile_rows(block, n_rows)
    _rmsnorm_forward[(triton.cdiv(n_rows, block_rows),)](
        x, weight, y, rstd, x.stride(0), y.stride(0), n_rows, n_cols, eps, BLOCK_ROWS=block_rows, BLOCK=block,
        num_warps=num_warps(block_rows * block))
    return y, rstd


def _backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor):
    n_rows, n_cols = x.shape
    dx = torch.empty_like(x)
    block = row_block(n_cols)
    block_rows = tile_rows(block, n_rows)
    programs = reduction_programs(triton.cdiv(n_rows, block_rows))
    rows_per_program = triton.cdiv(triton.cdiv(n_rows, programs), block_rows) * block_rows   # whole tiles
    dw_partial = torch.empty((programs, n_cols), dtype=torch.float32, device=x.device)
    _rmsnorm_backward[(programs,)](dy, x, weight, rstd, dx, dw_partial, dy.stride(0), x.stride(0),
                                   dx.stride(0), n_rows, n_cols, rows_per_program, BLOCK_ROWS=block_rows,
                                   BLOCK=block, num_warps=num_warps(block_rows * block))
    return dx, dw_partial.sum(0).to(weight.dtype)


class RMSNormFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward each one kernel launch (plus a small sum of partial rows)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rows = _as_rows(x)
        y, rstd = _forward(rows, weight, eps)
        ctx.save_for_backward(rows, weight, rstd)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        rows, weight, rstd = ctx.saved_tensors
        dx, dw = _backward(_as_rows(dy), rows, weight, rstd)
        return dx.view(dy.shape), dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim of x [..., H] with weight [H]: the Triton kernels where they run, else
    `rms_norm_reference`."""
    if use_triton(x, weight):
        return RMSNormFunction.apply(x, weight, eps)
    return rms_norm_reference(x, weight, eps)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Plain torch, as transformers' LlamaRMSNorm computes it (statistics in fp32, normalised x cast back to
    the input dtype before the weight)."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)
