"""labkit.losses.kl: hand arithmetic, exact and Monte-Carlo checks on small categoricals, TRL's k3,
invariants."""

from __future__ import annotations

import math

import pytest
import torch

from labkit.errors import ConfigError
from labkit.losses.kl import kl_estimate, kl_k1, kl_k2, kl_k3

# Two nearby categoricals, where the exact KL(p ‖ q) is a four-term sum.
P = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
Q = torch.tensor([0.3, 0.3, 0.25, 0.15], dtype=torch.float64)


def _exact_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.log() - q.log())).sum())


def test_hand_computed():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])   # r = log(0.25/0.5) = -log 2
    assert kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    assert kl_k2(logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_k3(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)      # e^r = 1/2


def test_all_zero_when_policy_equals_reference():
    logp = -torch.rand(3, 5) * 4
    for kind in ("k1", "k2", "k3"):
        assert (kl_estimate(logp, logp.clone(), kind) == 0).all(), kind


def test_k3_and_k2_nonnegative_k1_not():
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(1000, generator=g) * 10, -torch.rand(1000, generator=g) * 10
    assert (kl_k3(logp, ref) >= 0).all() and (kl_k2(logp, ref) >= 0).all()
    assert (kl_k1(logp, ref) < 0).any()


def test_exact_expectations_under_p():
    # E_p[k1] and E_p[k3] are exactly KL(p ‖ q) (E_p[q/p] = 1); E_p[k2] only to second order.
    lp, lq = P.log(), Q.log()
    kl = _exact_kl(P, Q)
    assert float((P * kl_k1(lp, lq)).sum()) == pytest.approx(kl, rel=1e-9)
    assert float((P * kl_k3(lp, lq)).sum()) == pytest.approx(kl, rel=1e-6)
    # close distributions: small bias
    assert float((P * kl_k2(lp, lq)).sum()) == pytest.approx(kl, rel=0.02)
    far = torch.tensor([0.05, 0.05, 0.1, 0.8], dtype=torch.float64)
    bias_far = abs(float((P * kl_k2(lp, far.log())).sum()) - _exact_kl(P, far)) / _exact_kl(P, far)
    # ... and a large one far apart
    assert bias_far > 0.1


def test_monte_carlo_means_match_exact_kl_and_k2_k3_have_lower_variance():
    g = torch.Generator().manual_seed(1234)
    n = 200_000
    x = torch.multinomial(P.float(), n, replacement=True, generator=g)       # tokens sampled from π = p
    logp, ref = P.log()[x], Q.log()[x]
    kl = _exact_kl(P, Q)
    k = {kind: kl_estimate(logp, ref, kind) for kind in ("k1", "k2", "k3")}
    # unbiased: within 4 std errors
    for kind in ("k1", "k3"):
        se = k[kind].std().item() / math.sqrt(n)
        assert abs(k[kind].mean().item() - kl) < 4 * se, kind
    assert k["k2"].mean().item() == pytest.approx(kl, rel=0.05)
    assert k["k3"].var() < k["k1"].var() / 10 and k["k2"].var() < k["k1"].var() / 10


def test_k3_is_trls_grpo_kl_term():
    g = torch.Generator().manual_seed(2)
    per_token_logps, ref_per_token_logps = -torch.rand(4, 6, generator=g) * 5, -torch.rand(4, 6,
                                                                                           generator=g) * 5
    # trl/trainer/grpo_trainer.py:3099-3101 (TRL 1.16), reproduced
    trl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
    assert torch.allclose(kl_k3(per_token_logps, ref_per_token_logps), trl)


def test_unknown_kind_is_config_error():
    with pytest.raises(ConfigError, match="k4"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
