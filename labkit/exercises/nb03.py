"""Checks for notebook 03 (reward models): the Bradley–Terry probability and loss."""

from __future__ import annotations

import math

import torch

from labkit.exercises import cases, close, exercise, number, wrong
from labkit.losses.reward import bradley_terry_loss


@exercise("03.1", hints=["Bradley–Terry: P(chosen beats rejected) = σ(r_chosen − r_rejected).",
                         "σ(x) = 1 / (1 + e^(−x)); here x = 1."])
def preference_probability(answer) -> str:
    p = number(answer, "a probability")
    expected = 1 / (1 + math.exp(-1))
    if close(p, 1 - expected, rel=0.01):
        wrong("that is the probability that the rejected reply wins; the difference is chosen − rejected")
    if close(p, 0.5):
        wrong("0.5 is what equal rewards give; these differ by 1")
    if close(p, 1.0):
        wrong("a reward gap never makes a preference certain: σ only reaches 1 in the limit")
    if not close(p, expected, rel=0.01):
        wrong(f"{p:g} is not σ(1.0 − 0.0)")
    return (f"σ(1) = {expected:.3f}: only the difference of rewards matters, so a reward model's scale and "
            "offset are free, which is why its raw numbers need calibrating.")


def _same(a, b) -> bool:
    return torch.is_tensor(a) and a.dim() == 0 and torch.allclose(a.float(), b, atol=1e-5)


@exercise("03.2", hints=["The loss is −log σ(r_chosen − r_rejected), averaged over the batch.",
                         "torch.nn.functional.logsigmoid is stable where log(sigmoid(x)) underflows."])
def bt_loss_function(answer) -> str:
    g = torch.Generator().manual_seed(3)
    c, r = torch.randn(8, generator=g), torch.randn(8, generator=g)
    far = torch.tensor([100.0, -100.0])
    out = answer(c, r)
    if not torch.is_tensor(out) or out.dim() != 0:
        wrong(f"return one number for the batch, a 0-d tensor (the mean over pairs), got {out!r}")
    cases(answer, [
        ((torch.zeros(4), torch.zeros(4)), bradley_terry_loss(torch.zeros(4), torch.zeros(4))[0],
         "equal rewards (should be log 2)"),
        ((c, r), bradley_terry_loss(c, r)[0], "a random batch (a scalar: the mean over pairs)"),
        ((r, c), bradley_terry_loss(r, c)[0], "the same pairs with chosen and rejected swapped"),
        ((far, -far), bradley_terry_loss(far, -far)[0], "rewards 200 apart (log(sigmoid(x)) gives inf here)"),
    ], same=_same)
    return ("−log σ(Δ) is log 2 at Δ = 0, falls towards 0 as the chosen reply wins by more, and grows "
            "linearly when the pair is ranked the wrong way: TRL's RewardTrainer loss.")
