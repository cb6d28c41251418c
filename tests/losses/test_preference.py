"""labkit.losses.preference: hand arithmetic, parity with TRL 1.16's loss code, invariants.

Parity: CPOTrainer.cpo_loss (sigmoid/cDPO, hinge, ipo, simpo) and ORPOTrainer.odds_ratio_loss are called
directly on an `object.__new__` instance carrying the few attributes they read. DPOTrainer and KTOTrainer
compute their losses inline in `_compute_loss` (model forward included), so those expressions are reproduced
here with the file and line they come from.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from labkit.losses.preference import dpo_loss, hinge_loss, ipo_loss, kto_loss, orpo_loss, simpo_loss

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
TOL = dict(rel=1e-5, abs=1e-5)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _logps(b: int = 6, seed: int = 0, average: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    scale = 1.0 if average else 30.0
    return tuple(-(torch.rand(b, generator=g) * scale + 0.05) for _ in range(4))


def _cpo(loss_type: str, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.5):
    from trl.experimental.cpo import CPOTrainer

    t = object.__new__(CPOTrainer)
    t.alpha, t.loss_type, t.beta = 0.0, loss_type, beta
    t.label_smoothing, t.simpo_gamma = label_smoothing, simpo_gamma
    t.accelerator = SimpleNamespace(device=torch.device("cpu"))
    return t


# ---------------------------------------------------------------- DPO


def test_dpo_hand_computed():
    # Δ = (-1 - -2) - (-3 - -2.5) = 1.5, β = 0.5: βΔ = 0.75.
    args = [torch.tensor([x]) for x in (-1.0, -3.0, -2.0, -2.5)]
    loss, m = dpo_loss(*args, beta=0.5)
    assert loss.item() == pytest.approx(-math.log(sig(0.75)), **TOL)
    assert m["rewards/chosen"] == pytest.approx(0.5) and m["rewards/rejected"] == pytest.approx(-0.25)
    assert m["rewards/margins"] == pytest.approx(0.75) and m["rewards/accuracies"] == 1.0
    # cDPO, ε = 0.1
    c, _ = dpo_loss(*args, beta=0.5, label_smoothing=0.1)
    assert c.item() == pytest.approx(-0.9 * math.log(sig(0.75)) - 0.1 * math.log(sig(-0.75)), **TOL)
    # rDPO, ε = 0.1
    r, _ = dpo_loss(*args, beta=0.5, label_smoothing=0.1, robust=True)
    assert r.item() == pytest.approx((-0.9 * math.log(sig(0.75)) + 0.1 * math.log(sig(-0.75))) / 0.8, **TOL)


def test_dpo_policy_equals_reference_gives_log2():
    pc, pr, _, _ = _logps()
    for kw in ({}, {"label_smoothing": 0.2}, {"label_smoothing": 0.2, "robust": True}):
        loss, m = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=0.3, **kw)
        assert loss.item() == pytest.approx(math.log(2), **TOL), kw
        assert m["rewards/margins"] == 0.0 and m["rewards/accuracies"] == 0.0


def test_dpo_gradient_raises_chosen_lowers_rejected():
    pc, pr, rc, rr = _logps()
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    dpo_loss(pc, pr, rc, rr, beta=0.1)[0].backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()


def test_dpo_parity_with_trl_sigmoid_and_cdpo():
    pc, pr, rc, rr = _logps()
    for beta, eps in ((0.1, 0.0), (0.5, 0.0), (0.1, 0.2)):
        # trl/trainer/dpo_trainer.py:1350-1351, 1387-1388 (sigmoid, reverse KL) and 1528 (.mean())
        delta = (pc - rc) - (pr - rr)
        trl_dpo = (-F.logsigmoid(beta * delta)).mean() if eps == 0 else None
        # Direct call: CPOTrainer.cpo_loss "sigmoid" is -(1-ε)logσ(βx) - ε logσ(-βx), x = its chosen -
        # rejected arguments; fed the log-ratios it is exactly cDPO (and DPO at ε = 0).
        trl_cpo, _, _ = _cpo("sigmoid", beta, eps).cpo_loss(pc - rc, pr - rr)
        ours, m = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps)
        assert ours.item() == pytest.approx(trl_cpo.mean().item(), **TOL)
        if trl_dpo is not None:
            assert ours.item() == pytest.approx(trl_dpo.item(), **TOL)
        # metrics: dpo_trainer.py:1582-1597
        assert m["rewards/chosen"] == pytest.approx((beta * (pc - rc)).mean().item(), **TOL)
        assert m["rewards/margins"] == pytest.approx((beta * delta).mean().item(), **TOL)
        assert m["rewards/accuracies"] == pytest.approx(((pc - rc) > (pr - rr)).float().mean().item())


def test_robust_dpo_parity_with_trl_expression():
    pc, pr, rc, rr = _logps(seed=3)
    beta, eps = 0.2, 0.15
    # trl/trainer/dpo_trainer.py:1428-1431, reproduced (inline in DPOTrainer._compute_loss)
    delta = (pc - rc) - (pr - rr)
    clean = -(1 - eps) * F.logsigmoid(beta * delta)
    flipped = -eps * F.logsigmoid(-beta * delta)
    trl = ((clean - flipped) / (1 - 2 * eps)).mean()
    assert dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps, robust=True)[0].item() == pytest.approx(
        trl.item(), **TOL)


def test_robust_dpo_rejects_bad_smoothing_and_reduces_to_dpo():
    pc, pr, rc, rr = _logps()
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.5, robust=True)
    assert dpo_loss(pc, pr, rc, rr,
                    robust=True)[0].item() == pytest.approx(dpo_loss(pc, pr, rc, rr)[0].item(), **TOL)


# ---------------------------------------------------------------- hinge (SLiC)


def test_hinge_hand_computed_and_zero_gradient_region():
    # βΔ = 0.5 * 1.5 = 0.75 -> loss 0.25; pair 2 has Δ = 4, βΔ = 2 -> 0.
    pc = torch.tensor([-1.0, 0.0], requires_grad=True)
    pr = torch.tensor([-3.0, -4.0], requires_grad=True)
    rc, rr = torch.tensor([-2.0, 0.0]), torch.tensor([-2.5, 0.0])
    loss, _ = hinge_loss(pc, pr, rc, rr, beta=0.5)
    assert loss.item() == pytest.approx((0.25 + 0.0) / 2, **TOL)
    loss.backward()
    assert pc.grad[1].item() == 0.0 and pr.grad[1].item() == 0.0      # βΔ ≥ 1: no gradient
    assert pc.grad[0].item() == pytest.approx(-0.25) and pr.grad[0].item() == pytest.approx(0.25)


def test_hinge_parity_with_trl():
    pc, pr, rc, rr = _logps(seed=1)
    beta = 0.1
    trl, _, _ = _cpo("hinge", beta).cpo_loss(pc - rc, pr - rr)         # direct call
    trl_dpo = torch.relu(1 - beta * ((pc - rc) - (pr - rr))).mean()    # dpo_trainer.py:1390-1391, reproduced
    ours = hinge_loss(pc, pr, rc, rr, beta=beta)[0].item()
    assert ours == pytest.approx(trl.mean().item(), **TOL) and ours == pytest.approx(trl_dpo.item(), **TOL)


# ---------------------------------------------------------------- IPO


def test_ipo_hand_computed():
    # Δ = 1.5, β = 0.5: (1.5 - 1)² = 0.25
    args = [torch.tensor([x]) for x in (-1.0, -3.0, -2.0, -2.5)]
    assert ipo_loss(*args, beta=0.5)[0].item() == pytest.approx(0.25, **TOL)


def test_ipo_minimum_at_half_inverse_beta():
    beta = 0.25                                                        # target margin 1/(2β) = 2
    rc, rr = torch.tensor([-1.0]), torch.tensor([-1.0])
    margins = torch.linspace(0.0, 4.0, 81)
    losses = [ipo_loss(rc + d, rr, rc, rr, beta=beta)[0].item() for d in margins]
    assert margins[int(torch.tensor(losses).argmin())].item() == pytest.approx(2.0)
    assert min(losses) == pytest.approx(0.0, abs=1e-10)
    pc = (rc + 2.0).requires_grad_(True)
    ipo_loss(pc, rr, rc, rr, beta=beta)[0].backward()
    assert pc.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_ipo_parity_with_trl():
    g = torch.Generator().manual_seed(2)
    b = 5
    n_c = torch.randint(3, 40, (b,), generator=g).float()
    n_r = torch.randint(3, 40, (b,), generator=g).float()
    pc_sum, pr_sum, rc_sum, rr_sum = _logps(b, seed=2)
    beta = 0.1
    # trl/trainer/dpo_trainer.py:1393-1404, reproduced: summed log-ratios / completion token counts
    ipo_delta = (pc_sum - rc_sum) / n_c.clamp(min=1.0) - (pr_sum - rr_sum) / n_r.clamp(min=1.0)
    trl_dpo = ((ipo_delta - 1 / (2 * beta)) ** 2).mean()
    pc, pr, rc, rr = pc_sum / n_c, pr_sum / n_r, rc_sum / n_c, rr_sum / n_r   # average log-probs
    trl_cpo, _, _ = _cpo("ipo", beta).cpo_loss(pc - rc, pr - rr)                 # direct call
    ours = ipo_loss(pc, pr, rc, rr, beta=beta)[0].item()
    assert ours == pytest.approx(trl_dpo.item(), **TOL) and ours == pytest.approx(trl_cpo.mean().item(),
                                                                                  **TOL)


# ---------------------------------------------------------------- SimPO


def test_simpo_hand_computed():
    # z = 2 * (-0.5 - -1.0) - 0.5 = 0.5
    loss, m = simpo_loss(torch.tensor([-0.5]), torch.tensor([-1.0]), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(-math.log(sig(0.5)), **TOL)
    assert m["rewards/chosen"] == pytest.approx(-1.0) and m["rewards/rejected"] == pytest.approx(-2.0)


def test_simpo_parity_with_trl():
    pc, pr, _, _ = _logps(seed=4, average=True)
    for beta, gamma, eps in ((2.0, 0.5, 0.0), (2.5, 1.375, 0.0), (2.0, 1.0, 0.1)):
        t = _cpo("simpo", beta, eps, simpo_gamma=gamma)
        trl, ch, rj = t.cpo_loss(pc, pr)                                # direct call
        ours, m = simpo_loss(pc, pr, beta=beta, gamma=gamma, label_smoothing=eps)
        assert ours.item() == pytest.approx(trl.mean().item(), **TOL)
        assert m["rewards/chosen"] == pytest.approx(ch.mean().item(), **TOL)
        assert m["rewards/rejected"] == pytest.approx(rj.mean().item(), **TOL)


def test_simpo_gradients_and_saturation():
    pc = torch.tensor([-0.5, -0.1], requires_grad=True)
    pr = torch.tensor([-1.0, -20.0], requires_grad=True)
    simpo_loss(pc, pr, beta=2.0, gamma=0.5)[0].backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    # Second pair: z ≈ 37.3, the sigmoid has saturated, the gradient is (numerically) zero.
    assert abs(pc.grad[1].item()) < 1e-12 and abs(pc.grad[0].item()) > 1e-2


def test_simpo_ignores_length_when_average_logps_match():
    # Reference-free and length-normalised: equal average log-probs give -log σ(-γ) whatever the lengths.
    loss, _ = simpo_loss(torch.tensor([-0.7]), torch.tensor([-0.7]), beta=2.0, gamma=0.5)
    assert loss.item() == pytest.approx(-math.log(sig(-0.5)), **TOL)


# ---------------------------------------------------------------- ORPO


def test_orpo_hand_computed():
    # P_w = 0.5, P_l = 0.25: odds 1 and 1/3, log OR = log 3
    pc, pr = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    loss, m = orpo_loss(pc, pr, beta=0.1)
    assert m["log_odds_chosen"] == pytest.approx(math.log(3), **TOL)
    assert loss.item() == pytest.approx(-0.1 * math.log(sig(math.log(3))), **TOL)   # = -0.1 log 0.75
    assert loss.item() == pytest.approx(-0.1 * math.log(0.75), **TOL)


def test_orpo_parity_with_trl():
    from trl.experimental.orpo import ORPOTrainer

    pc, pr, _, _ = _logps(seed=5, average=True)
    pc = torch.cat([pc, torch.tensor([-1e-4, -30.0])])                  # both log1mexp branches, extremes
    pr = torch.cat([pr, torch.tensor([-25.0, -1e-3])])
    t = object.__new__(ORPOTrainer)
    t.beta, t.accelerator = 0.25, SimpleNamespace(device=torch.device("cpu"))
    losses, ch, rj, ratio, log_odds = t.odds_ratio_loss(pc, pr)        # direct call
    ours, m = orpo_loss(pc, pr, beta=0.25)
    # ORPOTrainer: loss = policy_nll_loss - losses.mean() (orpo_trainer.py:848),
    # so the OR term is -losses.mean()
    assert ours.item() == pytest.approx(-losses.mean().item(), **TOL)
    assert m["log_odds_ratio"] == pytest.approx(ratio.item(), **TOL)
    assert m["log_odds_chosen"] == pytest.approx(log_odds.item(), **TOL)
    assert m["rewards/chosen"] == pytest.approx(ch.mean().item(), **TOL)
    assert m["rewards/rejected"] == pytest.approx(rj.mean().item(), **TOL)
    assert math.isfinite(ours.item())


def test_orpo_gradient_direction():
    pc = torch.tensor([-0.8, -2.0], requires_grad=True)
    pr = torch.tensor([-1.0, -0.3], requires_grad=True)
    orpo_loss(pc, pr)[0].backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()


# ---------------------------------------------------------------- KTO


def _kto_trl(pc, pr, rc, rr, kl_p, kl_r, beta, wd, wu):
    """trl/trainer/kto_trainer.py:1442-1482 and 1548, reproduced (inline in KTOTrainer._compute_loss,
    one process)."""
    kl = (kl_p - kl_r).mean().detach().clamp(min=0)
    chosen_losses = 1 - F.sigmoid(beta * ((pc - rc) - kl))
    rejected_losses = 1 - F.sigmoid(beta * (kl - (pr - rr)))
    return torch.cat((wd * chosen_losses, wu * rejected_losses), 0).nanmean(), kl


def test_kto_hand_computed():
    # desirable r = 1, undesirable r = -1, z₀ = mean(0.5, 1.5) = 1, β = 1, λ_D = 1, λ_U = 2
    loss, m = kto_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
                       torch.tensor([-1.5, -0.5]), torch.tensor([-2.0, -2.0]),
                       beta=1.0, desirable_weight=1.0, undesirable_weight=2.0)
    # desirable: 1 - σ(1 - 1) = 0.5; undesirable: 2 * (1 - σ(1 - -1)) = 2(1 - σ(2))
    assert loss.item() == pytest.approx((0.5 + 2 * (1 - sig(2.0))) / 2, **TOL)
    assert m["kl"] == pytest.approx(1.0) and m["rewards/margins"] == pytest.approx(2.0)


def test_kto_parity_with_trl_unpaired():
    g = torch.Generator().manual_seed(6)
    pc, rc = -torch.rand(5, generator=g) * 20, -torch.rand(5, generator=g) * 20
    pr, rr = -torch.rand(3, generator=g) * 20, -torch.rand(3, generator=g) * 20
    kl_p, kl_r = -torch.rand(8, generator=g) * 20, -torch.rand(8, generator=g) * 20
    for beta, wd, wu in ((0.1, 1.0, 1.0), (0.5, 1.0, 1.33)):
        trl, kl = _kto_trl(pc, pr, rc, rr, kl_p, kl_r, beta, wd, wu)
        ours, m = kto_loss(pc, pr, rc, rr, kl_p, kl_r, beta=beta, desirable_weight=wd, undesirable_weight=wu)
        assert ours.item() == pytest.approx(trl.item(), **TOL) and m["kl"] == pytest.approx(kl.item(), **TOL)
        assert m["rewards/chosen"] == pytest.approx((beta * (pc - rc)).mean().item(), **TOL)


def test_kto_all_desirable_batch_is_finite_and_kl_detached():
    pc = torch.tensor([-3.0, -4.0], requires_grad=True)
    rc = torch.tensor([-3.5, -3.0])
    kl_p = torch.tensor([-2.0, -1.0], requires_grad=True)
    empty = torch.zeros(0)
    loss, m = kto_loss(pc, empty, rc, empty, kl_p, torch.tensor([-3.0, -3.0]), beta=0.1)
    assert math.isfinite(loss.item()) and "rewards/rejected" not in m and "rewards/margins" not in m
    loss.backward()
    assert (pc.grad < 0).all() and kl_p.grad is None                   # z₀ carries no gradient
    trl, _ = _kto_trl(pc, empty, rc, empty, kl_p, torch.tensor([-3.0, -3.0]), 0.1, 1.0, 1.0)
    assert loss.item() == pytest.approx(trl.item(), **TOL)


def test_kto_policy_equals_reference_gives_half():
    pc, pr, _, _ = _logps()
    loss, m = kto_loss(pc, pr, pc.clone(), pr.clone(), pc, pc.clone(), beta=0.1)
    assert loss.item() == pytest.approx(0.5, **TOL) and m["kl"] == 0.0
    with pytest.raises(ValueError, match="at least one"):
        kto_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0))
