"""Device and dtype policy: pick CUDA, MPS or CPU, and a dtype each of them runs well."""

from __future__ import annotations

import functools
import pathlib

import torch

from labkit.errors import ConfigError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 runs ~2x fp32."""
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:  # macOS / Windows: no cheap check, stay with fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must be available."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device",
                          f"'{device}' asked for but torch sees no CUDA device; use 'auto' or 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", f"'{device}' asked for but MPS is not available; use 'auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """'auto': bf16 where the hardware runs it natively (recent CUDA, CPUs with AVX512-BF16/AMX),
    fp16 on older CUDA, fp32 elsewhere (MPS included, for stable training)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ConfigError("dtype", f"unknown dtype '{dtype}'; choose one of auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    device = device or resolve_device("auto")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32
