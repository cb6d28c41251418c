"""labkit.kernels.cross_entropy: the chunked LM-head cross-entropy (Triton rows and torch rows) against the
full-logits F.cross_entropy, with ignored labels, one token and odd sizes."""

from __future__ import annotations

import pytest
import torch

from labkit.kernels import HAVE_TRITON, IGNORE_INDEX, linear_cross_entropy, linear_cross_entropy_reference

BACKENDS = [
    pytest.param("triton", marks=pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")),
    "torch",                                     # the CPU path: the same chunking, rows in plain torch
]


def make_inputs(tokens: int, hidden: int, vocab: int, ignored: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=gen)
    w = torch.randn(vocab, hidden, generator=gen) / hidden ** 0.5
    y = torch.randint(0, vocab, (tokens,), generator=gen)
    y[torch.randperm(tokens, generator=gen)[:ignored]] = IGNORE_INDEX
    return h, w, y


SHAPES = [
    # tokens, hidden, vocab, ignored labels, tokens per chunk
    (37, 24, 1000, 5, 8),          # several chunks, the last one partial; hidden not a power of two
    (1, 16, 50, 0, None),          # one token, default chunking
    (9, 40, 4099, 3, 4),           # vocab not a power of two and wider than one 4,096 tile
    (6, 8, 64, 6, 4),              # every label ignored
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("tokens,hidden,vocab,ignored,chunk", SHAPES)
def test_matches_reference(check, case, backend, reduction, tokens, hidden, vocab, ignored, chunk):
    h, w, y = make_inputs(tokens, hidden, vocab, ignored)
    y = y.to(case.device)

    def ref(h, w):
        # torch's mean over no labels is 0/0 = nan; labkit's is 0 (documented)
        return linear_cross_entropy_reference(h, w, y, reduction=reduction).nan_to_num(0.0)

    check(lambda h, w: linear_cross_entropy(h, w, y, reduction=reduction, chunk_rows=chunk, backend=backend),
          ref, [h, w], case)


def test_leading_dims_and_no_grad():
    h, w, y = make_inputs(12, 16, 100, 2)
    want = linear_cross_entropy_reference(h, w, y)
    with torch.no_grad():                        # no gradients are made when none are wanted
        got = linear_cross_entropy(h.view(3, 4, 16), w, y.view(3, 4))
    torch.testing.assert_close(got, want)


def test_only_the_weight_needs_a_gradient():
    h, w, y = make_inputs(10, 16, 100, 1)
    w.requires_grad_(True)
    linear_cross_entropy(h, w, y, chunk_rows=3).backward()
    w2 = w.detach().clone().requires_grad_(True)
    linear_cross_entropy_reference(h, w2, y).backward()
    torch.testing.assert_close(w.grad, w2.grad)


def test_bad_labels_and_arguments_are_errors():
    h, w, y = make_inputs(4, 8, 10, 0)
    with pytest.raises(ValueError, match="outside"):
        linear_cross_entropy(h, w, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, y, reduction="none")
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(h, w, y[:3])


def test_under_autocast_the_loss_stays_in_the_weights_dtype():
    # TRL trains fp32 weights under bf16 autocast; the chunked path turns autocast off inside, so it computes
    # what it would without autocast instead of failing on mixed dtypes.
    h, w, y = make_inputs(10, 16, 100, 1)
    want = linear_cross_entropy_reference(h, w, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h.bfloat16(), w, y)
    torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)     # h was rounded to bf16 on the way in
