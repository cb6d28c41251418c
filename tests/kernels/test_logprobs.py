"""labkit.kernels.logprobs: selected-token log-probs and entropy (Triton rows and torch rows), from logits and
chunked from hidden states, against a full log_softmax."""

from __future__ import annotations

import pytest
import torch

from labkit.kernels import (
    HAVE_TRITON,
    IGNORE_INDEX,
    linear_selected_logprobs,
    linear_selected_logprobs_reference,
    selected_logprobs,
    selected_logprobs_reference,
)
from labkit.models.logprobs import token_logprobs

BACKENDS = [
    pytest.param("triton", marks=pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")),
    "torch",
]


def make_labels(shape, vocab: int, ignored: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, vocab, shape, generator=gen)
    y.view(-1)[torch.randperm(y.numel(), generator=gen)[:ignored]] = IGNORE_INDEX
    return y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,vocab,ignored,temperature", [
    ((2, 9), 1000, 4, 1.0),        # a [B, T] batch with masked positions
    ((1,), 50, 0, 0.7),            # one token, sampling temperature
    ((5,), 4099, 1, 1.0),          # vocab not a power of two and wider than one 4,096 tile
    ((3,), 64, 3, 1.0),            # every position ignored
])
def test_from_logits_matches_reference(check, case, backend, shape, vocab, ignored, temperature):
    torch.manual_seed(0)
    logits = 3 * torch.randn(*shape, vocab)
    y = make_labels(shape, vocab, ignored).to(case.device)
    check(lambda z: selected_logprobs(z, y, temperature=temperature, backend=backend),
          lambda z: selected_logprobs_reference(z, y, temperature=temperature), [logits], case)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens,hidden,vocab,ignored,chunk", [
    (37, 24, 1000, 5, 8),          # several chunks, the last partial
    (1, 16, 50, 0, None),          # one token, default chunking
])
def test_from_hidden_matches_reference(check, case, backend, tokens, hidden, vocab, ignored, chunk):
    torch.manual_seed(0)
    h, w = torch.randn(tokens, hidden), torch.randn(vocab, hidden) / hidden ** 0.5
    y = make_labels((tokens,), vocab, ignored).to(case.device)
    check(lambda h, w: linear_selected_logprobs(h, w, y, temperature=0.9, chunk_rows=chunk, backend=backend),
          lambda h, w: linear_selected_logprobs_reference(h, w, y, temperature=0.9), [h, w], case)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_through_logp_alone(backend):
    # A DPO loss uses only the log-probs: the entropy output gets no gradient (None in the backward).
    torch.manual_seed(0)
    z1 = torch.randn(4, 30, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_(True)
    y = make_labels((4,), 30, 1)
    selected_logprobs(z1, y, backend=backend)[0].sum().backward()
    selected_logprobs_reference(z2, y)[0].sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad)


def test_agrees_with_labkit_token_logprobs():
    # labkit.models.logprobs is what the losses use today: the kernels must give the same numbers.
    torch.manual_seed(0)
    logits, y = torch.randn(2, 6, 80), make_labels((2, 6), 80, 3)
    torch.testing.assert_close(selected_logprobs(logits, y)[0], token_logprobs(logits, y))
