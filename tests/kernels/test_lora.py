"""labkit.kernels.lora: the fused LoRA linear against PEFT's formula, dense and on a bitsandbytes 4-bit
base."""

from __future__ import annotations

import pytest
import torch

from labkit.kernels import HAVE_TRITON, lora_linear, lora_linear_reference

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")


@pytest.mark.parametrize("tokens,d_in,d_out,rank,bias", [
    ((2, 7), 40, 24, 4, True),     # sizes not multiples of the 64-wide tiles; a bias
    ((1,), 16, 16, 1, False),      # one token, rank 1 (padded to 16 inside tl.dot)
    ((3, 30), 96, 136, 20, False), # several tiles each way; rank over 16, not a power of two
])
def test_matches_reference(check, case, tokens, d_in, d_out, rank, bias):
    torch.manual_seed(0)
    x = torch.randn(*tokens, d_in)
    w = torch.randn(d_out, d_in) / d_in ** 0.5
    a, b = torch.randn(rank, d_in) / d_in ** 0.5, torch.randn(d_out, rank)
    inputs = [x, w, a, b] + ([torch.randn(d_out)] if bias else [])
    # Every input gets a gradient here, the base weight and bias included (a full fine-tune of the layer).
    check(lambda x, w, a, b, *bias: lora_linear(x, w, a, b, 0.5, *bias),
          lambda x, w, a, b, *bias: lora_linear_reference(x, w, a, b, 0.5, *bias), inputs, case)


def test_frozen_base_gets_no_gradient():
    torch.manual_seed(0)
    x, w = torch.randn(5, 32, requires_grad=True), torch.randn(48, 32)
    a, b = torch.randn(8, 32, requires_grad=True), torch.randn(48, 8, requires_grad=True)
    lora_linear(x, w, a, b, 2.0).sum().backward()
    assert w.grad is None and a.grad is not None and b.grad is not None and x.grad is not None


def test_4bit_base():
    # QLoRA: a bitsandbytes NF4 weight is dequantized (on CPU too, with bitsandbytes 0.50) and then fused.
    bnb = pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import dequantize_4bit

    torch.manual_seed(0)
    w = torch.randn(48, 64) / 8
    base = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
    base = base.to("cuda" if torch.cuda.is_available() else "cpu")     # quantizes
    dense = dequantize_4bit(base.data, base.quant_state).float()
    x = torch.randn(6, 64, device=dense.device)
    a = (torch.randn(8, 64, device=dense.device) / 8).requires_grad_(True)
    b = torch.randn(48, 8, device=dense.device).requires_grad_(True)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got = lora_linear(x1, base, a, b, 0.25)
    want = lora_linear_reference(x2, dense, a, b, 0.25)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    got.sum().backward()
    ga, gb = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    want.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ga, a.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gb, b.grad, atol=1e-5, rtol=1e-4)


def test_under_autocast():
    # Autocast is off inside the kernel's autograd function: the result is the fp32 one, not a dtype error.
    torch.manual_seed(0)
    x, w, a, b = torch.randn(5, 32), torch.randn(24, 32), torch.randn(4, 32), torch.randn(24, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lora_linear(x, w, a, b, 0.5)
    torch.testing.assert_close(got, lora_linear_reference(x, w, a, b, 0.5), atol=1e-5, rtol=1e-4)
