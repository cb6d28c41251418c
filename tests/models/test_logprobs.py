"""models.logprobs against the naive gather(log_softmax) form."""

import pytest
import torch

from labkit.models.logprobs import IGNORE_INDEX, sequence_logprobs, shift_for_next_token, token_logprobs


def naive(logits, labels):
    mask = labels != IGNORE_INDEX
    lp = logits.log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return lp * mask


def test_matches_naive_with_masking():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50) * 4
    labels = torch.randint(0, 50, (3, 7))
    labels[0, :2] = IGNORE_INDEX
    labels[2, -3:] = IGNORE_INDEX
    got = token_logprobs(logits, labels)
    torch.testing.assert_close(got, naive(logits, labels))
    assert (got[0, :2] == 0).all()


def test_sequence_sum_and_mean():
    logits = torch.zeros(1, 4, 10)  # uniform: every token has log-prob -log(10)
    labels = torch.tensor([[1, 2, IGNORE_INDEX, 3]])
    lp = -torch.log(torch.tensor(10.0))
    torch.testing.assert_close(sequence_logprobs(logits, labels), (3 * lp).reshape(1))
    torch.testing.assert_close(sequence_logprobs(logits, labels, average=True), lp.reshape(1))


def test_shift_aligns_prediction_with_next_token():
    logits = torch.randn(2, 5, 8)
    labels = torch.arange(10).reshape(2, 5)
    sl, sb = shift_for_next_token(logits, labels)
    assert sl.shape == (2, 4, 8) and torch.equal(sb, labels[:, 1:])
    torch.testing.assert_close(sl, logits[:, :-1])


def test_masked_logps_batches_sorted_and_padded_equal_one_at_a_time(tiny):
    from labkit.models.logprobs import masked_logps

    model, tok = tiny
    seqs = [[5, 6, 7, 8, 9], [11, 12], [3, 4, 5, 6, 7, 8, 9, 10]]
    masks = [[0, 0, 1, 1, 1], [0, 1], [0, 0, 0, 0, 1, 1, 0, 1]]
    batched = masked_logps(model, seqs, masks, pad_id=0, batch_size=2)
    for (total, n), seq, mask in zip(batched, seqs, masks):
        x = torch.tensor([seq])
        with torch.no_grad():
            lp = model(x).logits.log_softmax(-1)[0, :-1].gather(-1, x[0, 1:, None])[:, 0]
        assert n == sum(mask[1:]) and total == pytest.approx(float((lp * torch.tensor(mask[1:])).sum()),
                                                             abs=1e-4)


def test_masked_token_logps_builds_no_graph(tiny):
    """Scoring is inference only: no autograd graph is kept (memory), and summing a result warns nothing."""
    from labkit.models.logprobs import masked_token_logps

    model, _ = tiny
    assert any(p.requires_grad for p in model.parameters())
    out = masked_token_logps(model, [[5, 6, 7, 8]], [[0, 1, 1, 1]], pad_id=0)
    assert not out[0].requires_grad
