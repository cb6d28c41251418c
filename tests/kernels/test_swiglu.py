"""labkit.kernels.swiglu: the Triton silu(gate) * up against plain torch."""

from __future__ import annotations

import pytest
import torch

from labkit.kernels import HAVE_TRITON, swiglu, swiglu_reference

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")


@pytest.mark.parametrize("shape", [
    (3, 7, 40),          # not a multiple of the block: the tail is masked
    (1, 1, 1),           # one token, one unit
    (2, 5, 1536),        # SmolLM2-135M's intermediate size
])
def test_matches_reference(check, case, shape):
    torch.manual_seed(0)
    check(swiglu, swiglu_reference, [3 * torch.randn(shape), torch.randn(shape)], case)


def test_non_contiguous_inputs():
    torch.manual_seed(0)
    gate, up = torch.randn(6, 10).t(), torch.randn(6, 10).t()       # [10, 6], column-major
    torch.testing.assert_close(swiglu(gate, up), swiglu_reference(gate, up))
