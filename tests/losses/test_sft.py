"""labkit.losses.sft: hand arithmetic, parity with what TRL's SFTTrainer computes, invariants."""

from __future__ import annotations

import math

import pytest
import torch

from labkit.losses.sft import sft_loss
from labkit.models.logprobs import IGNORE_INDEX


def test_hand_computed_case():
    # Vocabulary of 3, one sequence of 3 tokens; only the last prediction is labelled.
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 0]])
    loss, m = sft_loss(logits, labels)
    # Position 1 predicts token 0 with logits (2, 0, 0): -log(e^2 / (e^2 + 2)).
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["nll_tokens"] == 1 and m["token_accuracy"] == 1.0


def test_uniform_logits_give_log_vocab():
    logits = torch.zeros(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    assert sft_loss(logits, labels)[0].item() == pytest.approx(math.log(7), rel=1e-6)


def test_fully_masked_batch_is_zero_not_nan():
    loss, m = sft_loss(torch.randn(1, 4, 5), torch.full((1, 4), IGNORE_INDEX))
    assert loss.item() == 0.0 and m["nll_tokens"] == 0


def test_num_items_normalises_across_accumulation():
    logits, labels = torch.randn(1, 6, 9), torch.randint(0, 9, (1, 6))
    per_batch, _ = sft_loss(logits, labels)
    assert sft_loss(logits, labels, num_items=10)[0].item() == pytest.approx(per_batch.item() * 5 / 10,
                                                                             rel=1e-6)


@pytest.mark.parametrize("padding_free", [False, True])
def test_matches_the_trainer_on_the_same_batch(tiny, padding_free, tmp_path):
    """The loss SFTTrainer optimises (the model's own loss on the collated batch) equals sft_loss."""
    from trl import SFTConfig, SFTTrainer

    from labkit.data.samples import load_sample
    from labkit.data.tokenize import sft_dataset

    model, tok = tiny
    ds = sft_dataset(tok, load_sample("sft_format")[:6])
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, report_to="none", use_cpu=True,
                     bf16=False, padding_free=padding_free, max_length=None, completion_only_loss=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == IGNORE_INDEX).any()  # prompts are masked out
    with torch.no_grad():
        out = model(**batch)
        ours, _ = sft_loss(out.logits, batch["labels"])
    torch.testing.assert_close(ours, out.loss, rtol=1e-5, atol=1e-6)
