"""Shared by the kernel tests: the (dtype, atol, rtol) table every op is checked under, and `check`, which
compares an op with its reference on outputs and on the gradient of every floating input.

TRITON_INTERPRET=1 is set by tests/conftest.py (before anything imports labkit.kernels), so on a CPU the
Triton kernels run under the interpreter; bf16 rows need a GPU and carry the `gpu` marker.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

CUDA = torch.cuda.is_available()


@dataclasses.dataclass(frozen=True)
class Case:
    dtype: torch.dtype
    atol: float
    rtol: float
    device: str


CASES = [
    # fp32: the kernels do the reference's arithmetic in another order (online logsumexp, tiled sums, fused
    # multiply-adds), so only rounding differs: relative 1e-4 covers sums over a few thousand terms, and atol
    # covers values that cancel to near 0.
    pytest.param(Case(torch.float32, 1e-5, 1e-4, "cuda" if CUDA else "cpu"), id="fp32"),
    # bf16: 8 significant bits, so one rounding is up to 2^-8 = 0.4% relative. The kernels compute in fp32 and
    # round once; eager torch rounds after each op, so the two land a few roundings apart: 2-3%.
    pytest.param(Case(torch.bfloat16, 3e-2, 3e-2, "cuda"), id="bf16",
                 marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="bf16 kernels run on a GPU")]),
]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _compare(name: str, got: torch.Tensor, want: torch.Tensor, case: Case) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(got.float(), want.float(), atol=case.atol, rtol=case.rtol,
                               msg=lambda m: f"{name}: {m}")


def check_op(fn, ref, inputs: list, case: Case, *, seed: int = 0) -> None:
    """fn(*inputs) against ref(*inputs): every output, then every floating input's gradient under the same
    random upstream gradients. Floating inputs are cast to the case's dtype; all go to its device."""
    def prepare():
        out = []
        for x in inputs:
            if isinstance(x, torch.Tensor):
                x = x.to(case.device)
                if x.is_floating_point():
                    x = x.to(case.dtype).detach().requires_grad_(True)
            out.append(x)
        return out

    mine, theirs = prepare(), prepare()
    got, want = _as_tuple(fn(*mine)), _as_tuple(ref(*theirs))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        _compare(f"output {i}", g, w, case)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    upstream = [torch.randn(w.shape, generator=gen).to(case.device, w.dtype) for w in want]
    sum((g * u).sum() for g, u in zip(got, upstream)).backward()
    sum((w * u).sum() for w, u in zip(want, upstream)).backward()
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if isinstance(a, torch.Tensor) and a.requires_grad:
            assert a.grad is not None, f"input {i}: no gradient"
            _compare(f"grad of input {i}", a.grad, b.grad, case)


@pytest.fixture
def check():
    return check_op
