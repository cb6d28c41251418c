"""Rotary position embedding as a Triton kernel, in transformers' layout and half-split convention.

`apply_rotary_pos_emb` in eager torch builds rotate_half(x) with a slice, a negation and a cat, then two
multiplies and an add: five full-size temporaries per tensor. The kernel reads each half of a head once and
writes the rotated head once. Rotation is linear in x, so the backward is the same kernel with the rotation
transposed. cos and sin come from the rotary module under no_grad, so they get no gradient here (if one
requires grad, the op runs the reference instead).
"""

import torch

from labkit.kernels.runtime import INTERPRET, tl, triton, use_triton


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, n_rows, n_heads, seq_len, half,
                 stride_xb, stride_xh, stride_xt, stride_cb, stride_ct, stride_ob, stride_oh, stride_ot,
                 BACKWARD: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    # A program takes BLOCK_R head-vectors x[b, h, t, :], numbered b * H * T + h * T + t.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    t = rows % seq_len
    h = (rows // seq_len) % n_heads
    b = rows // (seq_len * n_heads)
    d = tl.arange(0, BLOCK_D)[None, :]                                    # index within one half
    mask = (rows < n_rows)[:, None] & (d < half)
    cs = (b * stride_cb + t * stride_ct)[:, None]                         # cos[b, t] (broadcast over heads)
    c1 = tl.load(cos_ptr + cs + d, mask=mask, other=0.0).to(tl.float32)          # cos[..., :D/2]
    c2 = tl.load(cos_ptr + cs + half + d, mask=mask, other=0.0).to(tl.float32)   # cos[..., D/2:]
    s1 = tl.load(sin_ptr + cs + d, mask=mask, other=0.0).to(tl.float32)          # sin[..., :D/2]
    s2 = tl.load(sin_ptr + cs + half + d, mask=mask, other=0.0).to(tl.float32)   # sin[..., D/2:]
    xs = x_ptr + (b * stride_xb + h * stride_xh + t * stride_xt)[:, None]
    x1 = tl.load(xs + d, mask=mask, other=0.0).to(tl.float32)             # x[..., :D/2]
    x2 = tl.load(xs + half + d, mask=mask, other=0.0).to(tl.float32)      # x[..., D/2:]
    if BACKWARD:
        # The transposed rotation: grad_x1 = g1*cos1 + g2*sin2, grad_x2 = g2*cos2 - g1*sin1
        o1 = x1 * c1 + x2 * s2
        o2 = x2 * c2 - x1 * s1
    else:
        o1 = x1 * c1 - x2 * s1                # (x * cos + rotate_half(x) * sin)[..., :D/2]; rotate_half: -x2
        o2 = x2 * c2 + x1 * s2                # (x * cos + rotate_half(x) * sin)[..., D/2:]; rotate_half: x1
    os_ = out_ptr + (b * stride_ob + h * stride_oh + t * stride_ot)[:, None]
    tl.store(os_ + d, o1.to(out_ptr.dtype.element_ty), mask=mask)        # torch.cat((o1, o2), -1)
    tl.store(os_ + half + d, o2.to(out_ptr.dtype.element_ty), mask=mask)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    """Rotate x [B, H, T, D] by cos/sin [B or 1, T, D] (one kernel launch)."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    batch, n_heads, seq_len, dim = x.shape
    out = torch.empty((batch, n_heads, seq_len, dim), dtype=x.dtype, device=x.device)
    stride_cb = 0 if cos.shape[0] == 1 else cos.stride(0)                 # cos shared across the batch
    half, n_rows = dim // 2, batch * n_heads * seq_len
    block_d = triton.next_power_of_2(half)
    # About 4K values a program on a GPU; the interpreter runs programs one by one, so far fewer, larger ones.
    block_r = max(1, (1 << 16 if INTERPRET else 1 << 12) // block_d)
    _rope_kernel[(triton.cdiv(n_rows, block_r),)](
        x, cos, sin, out, n_rows, n_heads, seq_len, half,
        x.stride(0), x.stride(1), x.stride(2), stride_cb, cos.stride(1), out.stride(0), out.stride(1),
        out.stride(2), BACKWARD=backward, BLOCK_R=block_r, BLOCK_D=block_d)
    return out


class RopeFunction(torch.autograd.Function):
    """Autograd wrapper: one launch per tensor forward, one per gradient backward."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        cos, sin = cos.contiguous(), sin.contiguous()
        ctx.save_for_backward(cos, sin)
        return _rotate(q, cos, sin, False), _rotate(k, cos, sin, False)

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(dq, cos, sin, True), _rotate(dk, cos, sin, True), None, None


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries [B, Hq, T, D] and keys [B, Hk, T, D] by cos/sin [B or 1, T, D], as transformers'
    `apply_rotary_pos_emb(q, k, cos, sin)` does (unsqueeze_dim=1). The Triton kernel where it runs, else
    `apply_rope_reference`."""
    if q.shape[-1] % 2:
        raise ValueError(f"rotary embedding needs an even head dim, got {q.shape[-1]}")
    if use_triton(q, k, cos, sin) and not (cos.requires_grad or sin.requires_grad):
        return RopeFunction.apply(q, k, cos, sin)
    return apply_rope_reference(q, k, cos, sin)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope_reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch: x * cos + rotate_half(x) * sin, cos/sin broadcast over heads."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
