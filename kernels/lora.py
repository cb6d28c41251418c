"""A LoRA linear layer as one Triton matmul: y = x @ W.T + scale * (x @ A.T) @ B.T + bias.

PEFT runs the base layer and the adapter as separate matmuls and adds the results, writing two [tokens, out]
tensors. Here the base matmul's tile loop ends by adding the low-rank term for the same tile, so the output is
written once. The rank-r products (x @ A.T going in; dy @ B, dA and dB going back) are thin and stay in torch.
The backward's dx = dy @ W + scale * (dy @ B) @ A has the same shape of sum, so it reuses the kernel with the
operands' strides swapped.

4-bit base (QLoRA): the weight may be a bitsandbytes Params4bit. It is dequantized to the compute dtype on
each call (forward and again in the backward, so the dense copy is not kept between them), then the same
kernel runs; the dequantization itself is bitsandbytes', not fused into the kernel. bitsandbytes 0.50
dequantizes on CPU too, so this path is tested there.
"""

import torch
import torch.nn.functional as F

from labkit.kernels.runtime import INTERPRET, tl, triton, use_triton, without_autocast


@triton.jit
def _lora_matmul_kernel(a_ptr, w_ptr, s_ptr, l_ptr, bias_ptr, out_ptr, M, N, K, R,
                        stride_am, stride_ak, stride_wk, stride_wn, stride_sm, stride_sr,
                        stride_lr, stride_ln, stride_om, stride_on, scale,
                        HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr):
    # out[M, N] = a[M, K] @ w[K, N] + scale * s[M, R] @ l[R, N] (+ bias[N]); one program per output tile.
    rm = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)    # 64-bit: M * K may pass 2^31
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = rm < M
    n_mask = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_mask = rk < K
        a = tl.load(a_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak,
                    mask=m_mask[:, None] & k_mask[None, :], other=0.0)   # x[rows, k0:k0+BLOCK_K]
        w = tl.load(w_ptr + rk[:, None] * stride_wk + rn[None, :] * stride_wn,
                    mask=k_mask[:, None] & n_mask[None, :], other=0.0)   # W.T[k0:k0+BLOCK_K, cols]
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)          # x @ W.T (the base layer)
    rr = tl.arange(0, BLOCK_R)
    r_mask = rr < R
    s = tl.load(s_ptr + rm[:, None] * stride_sm + rr[None, :] * stride_sr,
                mask=m_mask[:, None] & r_mask[None, :], other=0.0)      # x @ A.T, this tile's rows
    lo = tl.load(l_ptr + rr[:, None] * stride_lr + rn[None, :] * stride_ln,
                 mask=r_mask[:, None] & n_mask[None, :], other=0.0)     # B.T, this tile's columns
    acc += scale * tl.dot(s, lo, input_precision=DOT_PRECISION)        # + scale * (x @ A.T) @ B.T
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_mask, other=0.0).to(tl.float32)[None, :]   # + bias
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :] * stride_on, acc.to(out_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])                     # y[rows, cols], in x's dtype


def _matmul_plus_lowrank(a: torch.Tensor, w: torch.Tensor, s: torch.Tensor, lo: torch.Tensor, scale: float,
                         bias: torch.Tensor | None) -> torch.Tensor:
    """a [M, K] @ w [K, N] + scale * s [M, R] @ lo [R, N] + bias, w and lo given as (possibly transposed)
    views: the kernel reads them through their strides, so no transpose is copied."""
    (m, k), n, r = a.shape, w.shape[1], s.shape[1]
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)
    # Tiles of 64 suit a GPU; tl.dot needs every dim >= 16, so the rank is padded up to 16 and masked.
    bm = bn = 64
    bk = 64 if INTERPRET else 32
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _lora_matmul_kernel[grid](
        a, w, s, lo, bias if bias is not None else out, out, m, n, k, r,
        a.stride(0), a.stride(1), w.stride(0), w.stride(1), s.stride(0), s.stride(1),
        lo.stride(0), lo.stride(1), out.stride(0), out.stride(1), scale,
        HAS_BIAS=bias is not None, DOT_PRECISION="ieee" if a.dtype == torch.float32 else "tf32",
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, BLOCK_R=max(16, triton.next_power_of_2(r)))
    return out


def dense_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weight as a dense [out, in] tensor of `dtype`: a bitsandbytes 4-bit weight is dequantized."""
    if getattr(weight, "quant_state", None) is not None:
        from bitsandbytes.functional import dequantize_4bit

        return dequantize_4bit(weight.data, weight.quant_state).to(dtype)
    return weight.to(dtype)


class LoRALinearFunction(torch.autograd.Function):
    """Autograd wrapper: the two full-size matmuls (y forward, dx backward) run in the kernel."""

    @staticmethod
    @without_autocast
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale):
        dtype = x.dtype
        x2 = x.reshape(-1, x.shape[-1])                                  # [M, in]
        w = dense_weight(weight, dtype)                                  # [out, in]
        a, b = lora_a.to(dtype), lora_b.to(dtype)                        # [r, in], [out, r]
        xa = x2 @ a.t()                                                  # [M, r]
        out = _matmul_plus_lowrank(x2, w.t(), xa, b.t(), scale, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x2, lora_a, lora_b, xa)
        ctx.weight, ctx.scale, ctx.has_bias = weight, scale, bias is not None   # packed 4-bit stays packed
        return out.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    @without_autocast
    def backward(ctx, dy):
        x2, lora_a, lora_b, xa = ctx.saved_tensors
        need_x, need_w, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        dtype, scale = x2.dtype, ctx.scale
        dy2 = dy.reshape(-1, dy.shape[-1]).to(dtype)                     # [M, out]
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        dyb = dy2 @ b                                                    # [M, r]
        dx = dw = dbias = da = db = None
        if need_x:
            w = dense_weight(ctx.weight, dtype)
            dx = _matmul_plus_lowrank(dy2, w, dyb, a, scale, None).view(*dy.shape[:-1], x2.shape[1])
        if need_w:
            dw = (dy2.t() @ x2).to(ctx.weight.dtype)                     # only for an unfrozen base weight
        if need_bias and ctx.has_bias:
            dbias = dy2.sum(0)
        if need_a:
            da = (scale * dyb.t() @ x2).to(lora_a.dtype)                 # [r, in]
        if need_b:
            db = (scale * dy2.t() @ xa).to(lora_b.dtype)                 # [out, r]
        return dx, dw, dbias, da, db, None


def lora_linear(x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] @ weight[out, in].T + scale * (x @ lora_a[r, in].T) @ lora_b[out, r].T + bias, computed in
    x's dtype. weight may be a bitsandbytes 4-bit Params4bit. The Triton kernel where it runs, else
    `lora_linear_reference`."""
    if use_triton(x, lora_a, lora_b):
        return LoRALinearFunction.apply(x, weight, bias, lora_a, lora_b, scale)
    return lora_linear_reference(x, weight, lora_a, lora_b, scale, bias)


def lora_linear_reference(x: torch.Tensor, weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                          scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain torch, as PEFT's lora.Linear computes it without dropout: base(x) + lora_B(lora_A(x)) * scale."""
    dtype = x.dtype
    base = F.linear(x, dense_weight(weight, dtype), None if bias is None else bias.to(dtype))
    return base + F.linear(F.linear(x, lora_a.to(dtype)), lora_b.to(dtype)) * scale
