"""Checks for notebook 04 (the preference family): reference models, and DPO's loss by hand."""

from __future__ import annotations

import torch

from labkit.exercises import cases, choice, exercise, wrong
from labkit.losses.preference import dpo_loss


@exercise("04.1", hints=["Which losses contain log π_ref terms? Read the formulas in section 1.",
                         "SimPO replaces the reference log-ratio by the length-normalised log-probability."])
def reference_free(answer) -> str:
    return choice(answer, "c", {
        "a": "DPO's margin is a log-ratio to the reference model: it needs π_ref's log-probs",
        "b": "IPO uses the same reference log-ratios as DPO, with a squared loss",
        "c": "SimPO (like ORPO) scores replies by the policy's own average log-prob: no reference model, "
             "so one model's memory and forward pass fewer",
        "d": "KTO compares each reply's log-ratio to a reference point: it needs π_ref",
    })


def _same(a, b) -> bool:
    return torch.is_tensor(a) and a.dim() == 0 and torch.allclose(a.float(), b, atol=1e-5)


@exercise("04.2", hints=["Δ = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)).",
                         "The loss is −log σ(β·Δ), averaged: -F.logsigmoid(beta * delta).mean()"])
def dpo_function(answer) -> str:
    g = torch.Generator().manual_seed(4)
    pc, pr, rc, rr = (torch.randn(6, generator=g) * 5 - 20 for _ in range(4))
    ref = lambda *a, beta: dpo_loss(*a, beta=beta)[0]  # noqa: E731
    out = answer(pc, pr, rc, rr, 0.1)
    if not torch.is_tensor(out) or out.dim() != 0:
        wrong(f"return one number for the batch, a 0-d tensor (the mean over pairs), got {out!r}")
    cases(answer, [
        ((pc, pr, rc, rr, 0.1), ref(pc, pr, rc, rr, beta=0.1), "β = 0.1, random log-probs"),
        ((pc, pr, rc, rr, 0.5), ref(pc, pr, rc, rr, beta=0.5), "β = 0.5: β scales Δ inside σ"),
        ((pc, pr, pc, pr, 0.1), ref(pc, pr, pc, pr, beta=0.1), "policy = reference (should be log 2)"),
        ((rc, rr, pc, pr, 0.1), ref(rc, rr, pc, pr, beta=0.1), "policy and reference swapped"),
    ], same=_same)
    return ("DPO is a Bradley–Terry loss on implicit rewards β·log(π/π_ref): it starts at log 2 "
            "where policy = reference, and β sets how far the policy may move before the loss saturates.")
