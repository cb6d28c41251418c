"""labkit.losses.policy: hand arithmetic, parity with TRL 1.16's GRPO and RLOO loss code, invariants.

Parity: `GRPOTrainer._compute_loss` and `RLOOTrainer._compute_loss` are called unbound on an `object.__new__`
instance carrying the attributes they read, with `_get_per_token_logps_and_entropies` replaced by a function
that returns our log-prob tensor, so TRL's own loss code runs on the same tensors, gradients included. TRL
1.16 has no PPO trainer, so the PPO losses are checked by hand arithmetic and invariants only.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from labkit.errors import ConfigError
from labkit.losses.kl import kl_k3
from labkit.losses.policy import grpo_loss, masked_mean, ppo_policy_loss, ppo_value_loss, reinforce_loss

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
TOL = dict(rel=1e-5, abs=1e-6)


def _batch(b: int = 4, t: int = 6, seed: int = 0, spread: float = 0.3):
    """Random completion log-probs [B, T] (policy, old, reference), ragged right-padded mask,
    advantages [B]."""
    g = torch.Generator().manual_seed(seed)
    logp = -(torch.rand(b, t, generator=g) * 3 + 0.05)
    old = logp + spread * torch.randn(b, t, generator=g)                 # ratios up to e^{±0.9}: some clip
    ref = logp + spread * torch.randn(b, t, generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t                                                        # one full-length row
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()          # [B, T]
    adv = torch.randn(b, generator=g)
    return logp, old.clamp(max=-1e-3), ref.clamp(max=-1e-3), mask, adv


# ---------------------------------------------------------------- masked_mean


def test_masked_mean_hand_computed():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # the NaN is masked out, not multiplied
    assert masked_mean(x, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert masked_mean(x, mask, dim=1).tolist() == pytest.approx([1.5, 4.0])
    assert masked_mean(x, torch.zeros_like(mask), dim=1).tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- PPO


def test_ppo_policy_loss_hand_computed():
    # ratio, advantage -> token loss -max(... ) worked by hand (ε = 0.2):
    #   1.5, +1: min(1.5, 1.2) = 1.2      -> -1.2   clipped branch active
    #   0.5, -1: min(-0.5, -0.8) = -0.8   ->  0.8   clipped branch active
    #   1.0, +1: 1                        -> -1.0
    #   1.5, -1: min(-1.5, -1.2) = -1.5   ->  1.5   unclipped (a move the wrong way is not clipped)
    #   0.5, +1: min(0.5, 0.8) = 0.5      -> -0.5   unclipped
    #   (masked token with ratio 9, advantage 100: ignored)
    ratios = torch.tensor([[1.5, 0.5, 1.0], [1.5, 0.5, 9.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    old = torch.full((2, 3), -2.0)
    logp = (old + ratios.log()).requires_grad_(True)
    loss, m = ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 1.0 + 1.5 - 0.5) / 5, **TOL)
    assert m["clip_fraction"] == pytest.approx(2 / 5)
    assert m["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.0 + 1.5 + 0.5) / 5, **TOL)
    logs = [math.log(r) for r in (1.5, 0.5, 1.0, 1.5, 0.5)]
    assert m["approx_kl"] == pytest.approx(sum(0.5 * x * x for x in logs) / 5, **TOL)
    loss.backward()
    # d/dlogp of -ρA/5 is -ρA/5 on unclipped tokens, 0 on clipped and masked ones
    expected = torch.tensor([[0.0, 0.0, -1.0 / 5], [1.5 / 5, -0.5 / 5, 0.0]])
    assert torch.allclose(logp.grad, expected, atol=1e-6)


def test_ppo_policy_loss_ratio_one_is_minus_mean_advantage():
    logp, _, _, mask, adv = _batch()
    adv_t = adv[:, None].expand_as(logp) * torch.linspace(0.5, 1.5, logp.shape[1])   # per-token advantages
    loss, m = ppo_policy_loss(logp, logp.clone(), adv_t, mask)
    assert loss.item() == pytest.approx(-masked_mean(adv_t, mask).item(), **TOL)
    assert m["clip_fraction"] == 0.0 and m["approx_kl"] == 0.0 and m["ratio_mean"] == pytest.approx(1.0)


def test_ppo_value_loss_hand_computed():
    # ε = 0.2; V_clip = V_old + clip(V - V_old, ±0.2); token loss ½ max((V-R)², (V_clip-R)²)
    #   V 1.0, V_old 0.5, R 0.0: V_clip 0.7 -> max(1.0, 0.49) = 1.0    unclipped
    #   V 1.0, V_old 0.5, R 2.0: V_clip 0.7 -> max(1.0, 1.69) = 1.69   clipped active
    #   V 0.3, V_old 0.4, R 0.3: V_clip 0.3 -> max(0, 0) = 0           inside the range
    #   masked token (V 50): ignored
    values = torch.tensor([[1.0, 1.0], [0.3, 50.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5], [0.4, 0.0]])
    returns = torch.tensor([[0.0, 2.0], [0.3, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, m = ppo_value_loss(values, old, returns, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.69 + 0.0) / 3, **TOL)
    assert m["value_clip_fraction"] == pytest.approx(1 / 3)
    assert m["value_mean"] == pytest.approx((1.0 + 1.0 + 0.3) / 3, **TOL)
    loss.backward()
    # ½(V-R)²/3 -> (V-R)/3 on the unclipped token; the clipped one has no gradient wrt V
    assert torch.allclose(values.grad, torch.tensor([[1.0 / 3, 0.0], [0.0, 0.0]]), atol=1e-6)


# ---------------------------------------------------------------- GRPO: hand arithmetic


def test_grpo_loss_hand_computed_each_aggregation():
    # B = 2, T = 3, lengths 3 and 1. On-policy, so every token loss is -Â_b (ε irrelevant).
    # Row 0 (Â = 1): -1, -1, -1.  Row 1 (Â = -2): +2, (pad), (pad).
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.7, -3.0, -3.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    grpo, _ = grpo_loss(logp, None, adv, mask, loss_type="grpo")
    assert grpo.item() == pytest.approx((-3 / 3 + 2 / 1) / 2, **TOL)               # mean of sequence means
    dr, _ = grpo_loss(logp, None, adv, mask, loss_type="dr_grpo", max_completion_length=4)
    assert dr.item() == pytest.approx((-3 + 2) / (2 * 4), **TOL)                     # sum / (B · L)
    dapo, _ = grpo_loss(logp, None, adv, mask, loss_type="dapo")
    assert dapo.item() == pytest.approx((-3 + 2) / 4, **TOL)                         # sum / valid tokens
    dapo_acc, _ = grpo_loss(logp, None, adv, mask, loss_type="dapo", num_items=10)
    # sum / accumulated tokens
    assert dapo_acc.item() == pytest.approx((-3 + 2) / 10, **TOL)
    bnpo, _ = grpo_loss(logp, None, adv, mask, loss_type="bnpo", num_items=10)
    assert bnpo.item() == pytest.approx((-3 + 2) / 4, **TOL)                         # bnpo: local count only


def test_grpo_loss_hand_computed_clipping_and_kl():
    # One row, two tokens, Â = 1, ε_low 0.2, ε_high 0.28 (clip-higher), β = 0.5,
    # plain k3 (no ratio weighting).
    #   token 0: ratio 1.5 -> clipped at 1.28 -> -1.28;  token 1: ratio 0.5 -> -min(0.5, 0.8) = -0.5
    #   k3 with r = ref - logp: token 0 r = 0.1, token 1 r = -0.2: e^r - r - 1
    old = torch.tensor([[-1.0, -1.0]])
    logp = old + torch.tensor([[math.log(1.5), math.log(0.5)]])
    ref = logp + torch.tensor([[0.1, -0.2]])
    k3 = [math.exp(r) - r - 1 for r in (0.1, -0.2)]
    loss, m = grpo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), ref_logp=ref, beta=0.5,
                        epsilon=0.2, epsilon_high=0.28, kl_bias_correction=False)
    assert loss.item() == pytest.approx(((-1.28 + 0.5 * k3[0]) + (-0.5 + 0.5 * k3[1])) / 2, **TOL)
    assert m["kl"] == pytest.approx(sum(k3) / 2, **TOL)
    assert m["clip_ratio/high_mean"] == pytest.approx(0.5) and m["clip_ratio/low_mean"] == 0.0
    assert m["clip_ratio/region_mean"] == pytest.approx(0.5)
    # with the default ratio weighting the KL terms are multiplied by 1.5 and 0.5
    weighted, mw = grpo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), ref_logp=ref, beta=0.5,
                             epsilon=0.2, epsilon_high=0.28)
    assert weighted.item() == pytest.approx(((-1.28 + 0.75 * k3[0]) + (-0.5 + 0.25 * k3[1])) / 2, **TOL)
    assert mw["kl"] == pytest.approx((1.5 * k3[0] + 0.5 * k3[1]) / 2, **TOL)


# ---------------------------------------------------------------- GRPO: parity with TRL's _compute_loss


def _trl_grpo(logp, old, ref, mask, adv, *, loss_type, beta, epsilon, epsilon_high, max_len, num_items,
              bias_correction):
    """Run trl.GRPOTrainer._compute_loss on these tensors; return (loss, metrics it logged)."""
    from trl import GRPOTrainer

    t = object.__new__(GRPOTrainer)
    b, n = logp.shape
    t._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros(b, n), None)
    t.top_entropy_quantile, t.aux_loss_enabled, t.off_policy_mask_threshold = 1.0, False, None
    t.importance_sampling_level, t.loss_type, t.beta = "token", loss_type, beta
    t.epsilon_low, t.epsilon_high = epsilon, epsilon if epsilon_high is None else epsilon_high
    t.use_vllm, t.vllm_importance_sampling_correction, t._entropy_bonus_enabled = False, False, False
    t.max_completion_length, t.current_gradient_accumulation_steps = max_len, 1
    t.args = SimpleNamespace(use_bias_correction_kl=bias_correction, delta=None, steps_per_generation=1)
    t.model = SimpleNamespace(training=True)
    t.accelerator = SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x)
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long), "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, n, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "num_items_in_batch": torch.tensor(float(num_items)),
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    if beta != 0.0:
        inputs["ref_per_token_logps"] = ref
    loss = GRPOTrainer._compute_loss(t, None, inputs)
    return loss, {k: v[-1] for k, v in t._metrics["train"].items()}


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("on_policy", [True, False])
def test_grpo_loss_parity_with_trl_compute_loss(loss_type, beta, on_policy):
    logp0, old0, ref, mask, adv = _batch(seed=1)
    old = None if on_policy else old0
    for eps_high, bias_correction, num_items in ((None, True, None), (0.28, False, 37)):
        n_items = int(mask.sum()) if num_items is None else num_items
        logp_trl = logp0.clone().requires_grad_(True)
        trl_loss, trl_m = _trl_grpo(logp_trl, old, ref, mask, adv, loss_type=loss_type, beta=beta,
                                    epsilon=0.2,
                                    epsilon_high=eps_high, max_len=9, num_items=n_items,
                                    bias_correction=bias_correction)
        logp = logp0.clone().requires_grad_(True)
        ours, m = grpo_loss(logp, old, adv, mask, ref_logp=ref if beta else None, beta=beta, epsilon=0.2,
                            epsilon_high=eps_high, loss_type=loss_type, max_completion_length=9,
                            num_items=num_items, kl_bias_correction=bias_correction)
        case = (loss_type, beta, on_policy, eps_high, bias_correction)
        assert ours.item() == pytest.approx(trl_loss.item(), **TOL), case
        trl_loss.backward()
        ours.backward()
        assert torch.allclose(logp.grad, logp_trl.grad, atol=1e-6, rtol=1e-5), case
        for name in ("clip_ratio/low_mean", "clip_ratio/high_mean",
                     "clip_ratio/region_mean") + (("kl",) if beta
                                                                                                  else ()):
            assert m[name] == pytest.approx(trl_m[name], **TOL), (case, name)
        if not on_policy and loss_type == "grpo" and eps_high is None:
            # the off-policy batch does clip something
            assert m["clip_ratio/region_mean"] > 0


# ---------------------------------------------------------------- GRPO: invariants


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_grpo_ratio_one_no_clipping(loss_type):
    logp, _, _, mask, adv = _batch(seed=2)
    loss, m = grpo_loss(logp, logp.clone(), adv, mask, loss_type=loss_type, max_completion_length=6)
    assert m["clip_ratio/low_mean"] == m["clip_ratio/high_mean"] == m["clip_ratio/region_mean"] == 0.0
    if loss_type == "grpo":
        assert loss.item() == pytest.approx(-adv.mean().item(), **TOL)
    loss_on, _ = grpo_loss(logp, None, adv, mask, loss_type=loss_type, max_completion_length=6)
    # old_logp None is the same as old == logp
    assert loss_on.item() == pytest.approx(loss.item(), **TOL)


def test_grpo_on_policy_gradient_is_policy_gradient():
    # On-policy with β = 0 the gradient is -Â_b / (B |o_b|) on each valid token ("grpo" aggregation).
    logp, _, _, mask, adv = _batch(seed=3)
    logp.requires_grad_(True)
    grpo_loss(logp, None, adv, mask)[0].backward()
    expected = -adv[:, None] / (mask.sum(-1, keepdim=True) * logp.shape[0]) * mask
    assert torch.allclose(logp.grad, expected, atol=1e-7)


def test_grpo_kl_zero_when_policy_is_reference_and_gradient_finite():
    logp, old, _, mask, adv = _batch(seed=4)
    loss_ref, m = grpo_loss(logp, old, adv, mask, ref_logp=logp.clone(), beta=0.1)
    loss_none, _ = grpo_loss(logp, old, adv, mask)
    assert m["kl"] == 0.0 and loss_ref.item() == pytest.approx(loss_none.item(), **TOL)
    # extreme log-probs (very unlikely tokens, far from old and ref), -inf in padding
    x = torch.tensor([[-40.0, -1e-6, -25.0], [-0.1, float("-inf"), float("-inf")]], requires_grad=True)
    xm = torch.tensor([[1, 1, 1], [1, 0, 0]])
    for loss_type in ("grpo", "dr_grpo", "dapo"):
        x.grad = None
        loss, _ = grpo_loss(x, torch.full((2, 3), -1.0), torch.tensor([1.0, -1.0]), xm,
                            ref_logp=torch.full((2, 3), -2.0), beta=0.04, loss_type=loss_type,
                            max_completion_length=3)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all(), loss_type
    x.grad = None
    ppo_policy_loss(x, torch.full((2, 3), -1.0), torch.ones(2, 3), xm)[0].backward()
    assert torch.isfinite(x.grad).all()


def test_grpo_bad_arguments():
    logp, _, _, mask, adv = _batch()
    with pytest.raises(ConfigError, match="loss_type"):
        grpo_loss(logp, None, adv, mask, loss_type="gspo")
    with pytest.raises(ConfigError, match="max_completion_length"):
        grpo_loss(logp, None, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, None, adv, mask, beta=0.1)


def test_grpo_kl_metric_is_token_mean_of_k3():
    logp, _, ref, mask, adv = _batch(seed=5)
    _, m = grpo_loss(logp, None, adv, mask, ref_logp=ref, beta=0.0)
    k3 = kl_k3(logp, ref)
    assert m["kl"] == pytest.approx(((k3 * mask).sum() / mask.sum()).item(), **TOL)


# ---------------------------------------------------------------- REINFORCE (RLOO)


def test_reinforce_loss_hand_computed():
    # Σ_t logp: row 0 = -3, row 1 = -0.5 (padding ignored); L = -(2·(-3) + (-1)·(-0.5)) / 2 = 2.75
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]], requires_grad=True)
    loss, m = reinforce_loss(logp, torch.tensor([2.0, -1.0]), torch.tensor([[1, 1], [1, 0]]))
    assert loss.item() == pytest.approx(2.75, **TOL)
    assert m["seq_logp_mean"] == pytest.approx(-1.75) and m["advantage_mean"] == pytest.approx(0.5)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, -1.0], [0.5, 0.0]]))   # -Â_b / B on valid tokens


def test_reinforce_gradient_matches_trl_rloo_on_policy():
    from trl import RLOOTrainer

    logp0, _, _, mask, adv = _batch(seed=6)
    b, n = logp0.shape
    logp_trl = logp0.clone().requires_grad_(True)
    t = object.__new__(RLOOTrainer)
    t._get_per_token_logps_and_entropies = lambda *a, **k: (logp_trl, torch.zeros(b, n), None)
    t.aux_loss_enabled, t.epsilon_low, t.epsilon_high = False, 0.2, 0.2
    t.model = SimpleNamespace(training=True)
    t.accelerator = SimpleNamespace(reduce=lambda x, reduction: x, gather=lambda x: x)
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long), "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, n, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "old_logps": (logp0 * mask).sum(1),           # first pass: π_old = π
    }
    trl_loss = RLOOTrainer._compute_loss(t, None, inputs)
    assert trl_loss.item() == pytest.approx(-adv.mean().item(), **TOL)  # ratio 1: TRL's value is -mean Â
    trl_loss.backward()
    logp = logp0.clone().requires_grad_(True)
    reinforce_loss(logp, adv, mask)[0].backward()
    assert torch.allclose(logp.grad, logp_trl.grad, atol=1e-7)
