"""Checks for notebook 11 (kernels lab): the LM head's logits memory, and RMSNorm by hand."""

from __future__ import annotations

import torch

from labkit.exercises import cases, close, exercise, number, wrong
from labkit.kernels import rms_norm_reference


@exercise("11.1", hints=["The logits are a tokens × vocabulary matrix.",
                         "4096 × 49152 numbers × 4 bytes (fp32), / 2**20 for MiB."])
def logits_memory(answer) -> str:
    mib = number(answer, "MiB")
    n = 4096 * 49152
    if close(mib, n * 2 / 2**20, rel=0.05):
        wrong("that is bf16 (2 bytes); the question asks for fp32 logits (4 bytes)")
    if close(mib, n / 2**20, rel=0.05):
        wrong("that counts numbers, not bytes: each fp32 logit takes 4")
    if not (close(mib, n * 4 / 2**20, rel=0.05) or close(mib, n * 4 / 1e6, rel=0.05)):
        wrong(f"{mib:g} is not tokens × vocabulary × 4 bytes")
    return (f"{n * 4 / 2**20:.0f} MiB for one batch's logits, and as much again for their gradient: the "
            "chunked cross-entropy never holds more than one chunk of rows.")


def _same(a, b) -> bool:
    return torch.is_tensor(a) and a.shape == b.shape and torch.allclose(a.float(), b, atol=1e-4, rtol=1e-4)


@exercise("11.2", hints=["RMSNorm: x / √(mean(x², last dim) + eps), times weight.",
                         "x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight"])
def rms_norm_function(answer) -> str:
    g = torch.Generator().manual_seed(11)
    x, w = torch.randn(3, 5, 64, generator=g), torch.randn(64, generator=g)
    small = torch.full((2, 8), 1e-4)
    cases(answer, [
        ((x, w, 1e-6), rms_norm_reference(x, w, 1e-6), "a [3, 5, 64] batch"),
        ((x * 100, w, 1e-6), rms_norm_reference(x * 100, w, 1e-6), "the same batch × 100 (scale-free)"),
        ((small, torch.ones(8), 1e-2), rms_norm_reference(small, torch.ones(8), 1e-2),
         "tiny inputs, where eps matters (eps goes inside the square root)"),
    ], same=_same)
    return ("no mean subtraction and no bias, unlike LayerNorm: one reduction per row, which is why a fused "
            "kernel (one read, one write) beats the three-op PyTorch version.")
