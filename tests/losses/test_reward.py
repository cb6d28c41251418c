"""labkit.losses.reward: hand arithmetic, parity with TRL's RewardTrainer.compute_loss (called directly),
invariants."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from labkit.losses.reward import bradley_terry_loss

TOL = dict(rel=1e-5, abs=1e-5)


def _trl_reward_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None):
    """Call trl.RewardTrainer.compute_loss on a bare instance whose 'model' returns the given rewards as
    logits."""
    from trl import RewardTrainer

    class _Model:
        training = False

        def __call__(self, **inputs):
            return SimpleNamespace(logits=torch.cat([chosen, rejected])[:, None])   # [2B, 1]

    t = object.__new__(RewardTrainer)
    t.model = _Model()
    t.args = SimpleNamespace(center_rewards_coefficient=None)
    t.accelerator = SimpleNamespace(gather_for_metrics=lambda x: x, gather=lambda x: x)
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t._total_train_tokens, t._tp_size = 0, 1
    inputs = {"attention_mask": torch.ones(2 * len(chosen), 4, dtype=torch.long)}
    if margin is not None:
        inputs["margin"] = margin
    loss = t.compute_loss(t.model, inputs)
    return loss, t._metrics["eval"]


def test_hand_computed():
    # r_c - r_r - m = 2 - 0.5 - 0.5 = 1; second pair 0 - 1 - 0 = -1
    loss, m = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.5, 1.0]), torch.tensor([0.5, 0.0]))
    expected = (-math.log(1 / (1 + math.exp(-1))) - math.log(1 / (1 + math.exp(1)))) / 2
    assert loss.item() == pytest.approx(expected, **TOL)
    assert m["accuracy"] == 0.5 and m["margin"] == pytest.approx((1.5 - 1.0) / 2)


def test_symmetric_case_gives_log2():
    r = torch.randn(7)
    assert bradley_terry_loss(r, r.clone())[0].item() == pytest.approx(math.log(2), **TOL)


def test_swapping_chosen_and_rejected():
    g = torch.Generator().manual_seed(0)
    c, r = torch.randn(9, generator=g), torch.randn(9, generator=g)
    a, _ = bradley_terry_loss(c, r)
    b, _ = bradley_terry_loss(r, c)
    # -log σ(x) - -log σ(-x) = -x, so L(c, r) - L(r, c) = -mean(c - r)
    assert (a - b).item() == pytest.approx(-(c - r).mean().item(), **TOL)


def test_gradients_push_rewards_apart():
    c = torch.tensor([0.3, -1.0], requires_grad=True)
    r = torch.tensor([0.1, 2.0], requires_grad=True)
    bradley_terry_loss(c, r, margin=1.0)[0].backward()
    assert (c.grad < 0).all() and (r.grad > 0).all()


@pytest.mark.parametrize("with_margin", [False, True])
def test_parity_with_trl_reward_trainer(with_margin):
    g = torch.Generator().manual_seed(1)
    c, r = torch.randn(6, generator=g) * 3, torch.randn(6, generator=g) * 3
    margin = torch.rand(6, generator=g) if with_margin else None
    trl_loss, trl_metrics = _trl_reward_loss(c, r, margin)               # direct call
    ours, m = bradley_terry_loss(c, r, margin)
    assert ours.item() == pytest.approx(trl_loss.item(), **TOL)
    assert m["accuracy"] == pytest.approx(trl_metrics["accuracy"][-1], **TOL)
    assert m["margin"] == pytest.approx(trl_metrics["margin"][-1], **TOL)
