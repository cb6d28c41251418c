"""Where labkit.kernels' Triton code runs, and the launch sizes it uses there.

Triton compiles for GPUs. On a CPU it runs only under its interpreter (TRITON_INTERPRET=1), which executes
every program with numpy: exact but slow, so it is how the tests check the kernels without a GPU. The variable
must be set before this module is first imported: `triton.jit` reads it when each kernel is defined. Anywhere
else (no Triton, or a CPU without the interpreter) each public op runs its plain-torch path, so importing
labkit.kernels never fails.
"""

import functools
import os

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # a CPU-only install without the `kernels` extra

    class _NoTriton:
        """Stands in for `triton` and `triton.language`: kernels still define (jit returns the function and
        constexpr is a plain annotation) but are never launched, since `use_triton` is then always False."""

        constexpr = int

        @staticmethod
        def jit(fn):
            return fn

    triton = tl = _NoTriton
    HAVE_TRITON = False

# What triton.jit saw when the kernels were defined: interpreted kernels run on CPU tensors.
INTERPRET = HAVE_TRITON and os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the Triton kernels can run on these tensors: all on a GPU, or all on the CPU under the
    interpreter."""
    if not HAVE_TRITON:
        return False
    devices = {t.device.type for t in tensors}
    if INTERPRET:
        return devices <= {"cpu", "cuda"}
    return devices == {"cuda"}


def backend_name() -> str:
    """'triton', 'triton-interpreter' or 'torch': which path the ops take for CPU or GPU tensors here."""
    if not HAVE_TRITON:
        return "torch"
    if INTERPRET:
        return "triton-interpreter"
    return "triton" if torch.cuda.is_available() else "torch"


def row_block(n: int) -> int:
    """One power-of-two block covering a row of n values (Triton blocks are powers of two; the tail is
    masked)."""
    return triton.next_power_of_2(n)


def vocab_block(vocab: int) -> int:
    """Tile width for loops over the vocabulary: 4,096 fp32 values fit a GPU program's registers."""
    return min(4096, triton.next_power_of_2(vocab))


def tile_rows(block_cols: int, n_rows: int) -> int:
    """Rows a program handles at once, so that a tile holds about 4K values on a GPU (several short rows per
    program, one long one). The interpreter pays Python overhead per operation per program, not per value, so
    it takes tiles of 64K values: far fewer programs for the same work."""
    budget = 1 << 16 if INTERPRET else 1 << 12
    return max(1, min(budget // block_cols, triton.next_power_of_2(n_rows)))


def num_warps(block: int) -> int:
    """Warps per program for a tile of `block` values: bigger tiles spread over more threads (ignored by the
    interpreter)."""
    return 4 if block <= 2048 else 8 if block <= 8192 else 16


def reduction_programs(rows: int) -> int:
    """Programs for kernels whose programs each walk a range of rows and accumulate a partial sum (RMSNorm's
    weight gradient): a few per GPU core keeps it busy; the interpreter runs programs one after another, so a
    handful is as fast as any number."""
    if INTERPRET or not torch.cuda.is_available():
        return max(1, min(rows, 4))
    return max(1, min(rows, 4 * torch.cuda.get_device_properties(0).multi_processor_count))


def without_autocast(method):
    """Run an autograd.Function's forward or backward with autocast off. Their torch matmuls must keep the
    dtypes the kernels are given: autocast would turn some into bf16 behind the kernels' back."""

    @functools.wraps(method)
    def run(ctx, *args):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return method(ctx, *args)

    return run
