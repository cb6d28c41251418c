"""SwiGLU's gate as a Triton kernel: silu(gate) * up, the middle of a Llama/Qwen MLP.

Eager torch writes silu(gate) as a temporary, then the product, and autograd saves both inputs plus that
temporary; the kernel reads gate and up once and writes the product once. The backward recomputes the
sigmoid from the saved inputs instead of storing it.
"""

import torch
import torch.nn.functional as F

from labkit.kernels.runtime import INTERPRET, tl, triton, use_triton


@triton.jit
def _swiglu_forward(gate_ptr, up_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)   # flat element index
    mask = offs < n
    g = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)   # gate.float()
    u = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)     # up.float()
    h = g * tl.sigmoid(g) * u                                           # F.silu(gate) * up
    tl.store(out_ptr + offs, h.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_backward(dh_ptr, gate_ptr, up_ptr, dgate_ptr, dup_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)    # grad_out
    g = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)                                                 # torch.sigmoid(gate)
    silu = g * sig                                                      # F.silu(gate)
    # d silu(g)/dg = sig * (1 + g * (1 - sig))
    tl.store(dgate_ptr + offs, (dh * u * sig * (1.0 + g * (1.0 - sig))).to(dgate_ptr.dtype.element_ty),
             mask=mask)
    tl.store(dup_ptr + offs, (dh * silu).to(dup_ptr.dtype.element_ty), mask=mask)   # grad_out * silu(gate)


# 1,024 elements a program on a GPU; the interpreter runs programs one by one, so fewer, wider ones.
_BLOCK = 16384 if INTERPRET else 1024


class SwiGLUFunction(torch.autograd.Function):
    """Autograd wrapper over the elementwise kernels (inputs made contiguous: the kernels index flat)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate)
        n, block = gate.numel(), _BLOCK
        _swiglu_forward[(triton.cdiv(n, block),)](gate, up, out, n, BLOCK=block)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, dh: torch.Tensor):
        gate, up = ctx.saved_tensors
        dh = dh.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        n, block = gate.numel(), _BLOCK
        _swiglu_backward[(triton.cdiv(n, block),)](dh, gate, up, dgate, dup, n, BLOCK=block)
        return dgate, dup


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for same-shape tensors: the Triton kernels where they run, else `swiglu_reference`."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        return swiglu_reference(gate, up)
    if use_triton(gate, up):
        return SwiGLUFunction.apply(gate, up)
    return swiglu_reference(gate, up)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Plain torch, as transformers' LlamaMLP computes it: act_fn(gate_proj(x)) * up_proj(x)."""
    return F.silu(gate) * up
