"""labkit.kernels.rmsnorm: the Triton RMSNorm against plain torch and transformers' LlamaRMSNorm."""

from __future__ import annotations

import pytest
import torch

from labkit.kernels import HAVE_TRITON, rms_norm, rms_norm_reference

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")


@pytest.mark.parametrize("shape", [
    (2, 5, 48),          # hidden not a power of two: the block's tail is masked
    (1, 1, 64),          # one token
    (3, 7, 576),         # SmolLM2-135M's hidden size
    (130, 24),           # more rows than one tile: several programs, and a partial last tile
])
def test_matches_reference(check, case, shape):
    torch.manual_seed(0)
    x, w = torch.randn(shape), 1 + 0.1 * torch.randn(shape[-1])
    check(lambda x, w: rms_norm(x, w, 1e-6), lambda x, w: rms_norm_reference(x, w, 1e-6), [x, w], case)


def test_reference_is_transformers_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(40, eps=1e-5)
    norm.weight.data.normal_()
    x = torch.randn(3, 40)
    torch.testing.assert_close(rms_norm_reference(x, norm.weight, 1e-5), norm(x))
