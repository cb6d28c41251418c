"""labkit.losses.advantages: hand arithmetic, parity with TRL 1.16's advantage code, invariants.

TRL computes GRPO and RLOO advantages inline in `_generate_and_score_completions` (generation, reward calls
and logging in the same method), which cannot run without a model and a tokenizer, so those expressions are
reproduced here with the file and line they come from, using TRL's own `nanstd`. TRL 1.16 has no PPO trainer:
GAE and whitening are checked by hand arithmetic and invariants.
"""

from __future__ import annotations

import math

import pytest
import torch

from labkit.errors import ConfigError
from labkit.losses.advantages import gae, group_advantages, rloo_advantages, whiten

TOL = dict(rel=1e-5, abs=1e-6)


def _rewards(b: int = 5, g: int = 4, seed: int = 0, nan: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 3, (b * g,), generator=gen).float() + 0.1 * torch.randn(b * g, generator=gen)
    r[g:2 * g] = 0.5                                                     # one group with identical rewards
    if nan:
        r[1] = r[2 * g + 3] = float("nan")                               # unscorable completions
        # a group with one scorable completion
        r[3 * g:3 * g + g - 1] = float("nan")
    return r


# ---------------------------------------------------------------- GRPO group advantages


def test_group_advantages_hand_computed():
    # G = 3: groups [1, 2, 3] and [0, 0, 0]
    r = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0])
    # group [1, 2, 3]: mean 2, sample std 1; group of zeros: std 0 -> advantage 0
    assert group_advantages(r, 3).tolist() == pytest.approx([-1 / 1.0001, 0, 1 / 1.0001, 0, 0, 0], **TOL)
    # batch std of all six: mean 1, squares 0+1+4+1+1+1 = 8, var 8/5
    s = math.sqrt(8 / 5) + 1e-4
    assert group_advantages(r, 3, scale="batch").tolist() == pytest.approx([-1 / s, 0, 1 / s, 0, 0, 0], **TOL)
    assert group_advantages(r, 3, scale="none").tolist() == pytest.approx([-1, 0, 1, 0, 0, 0], **TOL)


def _trl_group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """trl/trainer/grpo_trainer.py:2765-2787 and 2809, reproduced (inline in
    _generate_and_score_completions)."""
    from trl.trainer.utils import nanstd

    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    else:
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("nan", [False, True])
def test_group_advantages_parity_with_trl(scale, nan):
    for g in (2, 4, 8):
        r = _rewards(g=g, seed=g, nan=nan)
        ours = group_advantages(r, g, scale=scale)
        assert torch.allclose(ours, _trl_group_advantages(r, g, scale), atol=1e-6, rtol=1e-5), (scale, g)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_sum_to_zero_per_group(scale):
    r = _rewards(b=6, g=4, seed=3, nan=True)
    adv = group_advantages(r, 4, scale=scale).view(-1, 4)
    assert torch.allclose(adv.sum(1), torch.zeros(6), atol=1e-5)
    assert adv[1].abs().max() == 0                                       # identical rewards teach nothing
    assert adv.view(-1)[1] == 0 and adv[3].abs().max() == 0              # unscorable / lone scorable: 0


def test_group_advantages_invariances():
    r = _rewards(seed=4)
    shift = torch.arange(5.0).repeat_interleave(4) * 10                  # a different constant per group
    # only differences within a group count
    for scale in ("group", "none"):
        assert torch.allclose(group_advantages(r + shift, 4, scale=scale),
                              group_advantages(r, 4, scale=scale),
                              atol=1e-4)
    # the batch std sees the shifts between groups, so only a common shift leaves it unchanged
    assert torch.allclose(group_advantages(r + 7.0, 4, scale="batch"), group_advantages(r, 4, scale="batch"),
                          atol=1e-4)
    assert not torch.allclose(group_advantages(r + shift, 4, scale="batch"),
                              group_advantages(r, 4, scale="batch"),
                              atol=1e-4)
    # group scale ignores the reward scale (up to eps); none scales with it
    assert torch.allclose(group_advantages(3 * r, 4), group_advantages(r, 4), atol=1e-3)
    assert torch.allclose(group_advantages(3 * r, 4, scale="none"), 3 * group_advantages(r, 4, scale="none"))
    assert not group_advantages(r.requires_grad_(True), 4).requires_grad


def test_group_advantages_bad_arguments():
    with pytest.raises(ConfigError, match="scale_rewards"):
        group_advantages(torch.zeros(8), 4, scale="std")
    with pytest.raises(ConfigError, match="groups of 3"):
        group_advantages(torch.zeros(8), 3)


# ---------------------------------------------------------------- RLOO


def test_rloo_advantages_hand_computed():
    # [1, 2, 3]: baselines (2+3)/2 = 2.5, (1+3)/2 = 2, (1+2)/2 = 1.5
    assert rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), 3).tolist() == pytest.approx(
        [-1.5, 0.0, 1.5, 0.0, 0.0, 0.0])


def _trl_rloo_advantages(rewards: torch.Tensor, num_generations: int, normalize: bool) -> torch.Tensor:
    """trl/trainer/rloo_trainer.py:1675-1699, reproduced (inline in _generate_and_score_completions)."""
    from trl.trainer.utils import nanstd

    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    advantages = rewards - baselines.view(-1)
    if normalize:
        advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("nan", [False, True])
def test_rloo_advantages_parity_with_trl(normalize, nan):
    for g in (2, 4, 8):
        r = _rewards(g=g, seed=10 + g, nan=nan)
        ours = rloo_advantages(r, g, normalize=normalize)
        assert torch.allclose(ours, _trl_rloo_advantages(r, g, normalize), atol=1e-6, rtol=1e-5), g


def test_rloo_advantages_invariants():
    r = _rewards(b=6, g=4, seed=5, nan=True)
    adv = rloo_advantages(r, 4).view(-1, 4)
    assert torch.allclose(adv.sum(1), torch.zeros(6), atol=1e-5)         # sums to zero in every group
    # without unscorable rows, RLOO = G/(G-1) × (r - group mean), the Dr. GRPO advantage rescaled
    clean = _rewards(seed=6)
    assert torch.allclose(rloo_advantages(clean, 4), 4 / 3 * group_advantages(clean, 4, scale="none"),
                          atol=1e-6)
    assert rloo_advantages(torch.tensor([1.0, 2.0]), 1).tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError):
        rloo_advantages(torch.zeros(7), 2)


# ---------------------------------------------------------------- GAE


def test_gae_hand_computed_three_tokens():
    # γ = 0.9, λ = 0.8 (γλ = 0.72). Row 0: r = [0, 0, 1], V = [0.5, 0.6, 0.7], all valid:
    #   δ2 = 1 - 0.7 = 0.3                      Â2 = 0.3
    #   δ1 = 0.9·0.7 - 0.6 = 0.03               Â1 = 0.03 + 0.72·0.3 = 0.246
    #   δ0 = 0.9·0.6 - 0.5 = 0.04               Â0 = 0.04 + 0.72·0.246 = 0.21712
    # Row 1: r = [0, 1, (5)], V = [0.2, 0.4, (9)], last token masked (its reward and value are ignored):
    #   δ1 = 1 - 0.4 = 0.6                      Â1 = 0.6
    #   δ0 = 0.9·0.4 - 0.2 = 0.16               Â0 = 0.16 + 0.72·0.6 = 0.592
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.4, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert adv[0].tolist() == pytest.approx([0.21712, 0.246, 0.3], **TOL)
    assert adv[1].tolist() == pytest.approx([0.592, 0.6, 0.0], **TOL)
    assert ret[0].tolist() == pytest.approx([0.71712, 0.846, 1.0], **TOL)
    assert ret[1].tolist() == pytest.approx([0.792, 1.0, 0.0], **TOL)


def _ragged(b=4, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards, values = torch.randn(b, t, generator=g), torch.randn(b, t, generator=g)
    lengths = torch.tensor([t, 1, 4, 6])[:b]
    return rewards, values, (torch.arange(t)[None] < lengths[:, None]).long()


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards, values, mask = _ragged()
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    r = rewards * mask
    to_go = r.flip(1).cumsum(1).flip(1)                                  # Σ_{s≥t} r_s over valid tokens
    assert torch.allclose(adv, (to_go - values) * mask, atol=1e-5)
    assert torch.allclose(ret, to_go * mask, atol=1e-5)


def test_gae_lambda_zero_is_one_step_td_and_masking():
    rewards, values, mask = _ragged(seed=1)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    next_v = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(4, 1)], dim=1)
    assert torch.allclose(adv, (rewards + 0.9 * next_v - values) * mask, atol=1e-6)
    # a masked gap in the middle (e.g. a tool reply) is skipped: same result as the row without it
    gap_r = torch.cat([rewards[:1, :3], torch.full((1, 2), 9.0), rewards[:1, 3:]], dim=1)
    gap_v = torch.cat([values[:1, :3], torch.full((1, 2), -9.0), values[:1, 3:]], dim=1)
    gap_m = torch.tensor([[1, 1, 1, 0, 0] + [1] * 4])
    a_gap, r_gap = gae(gap_r, gap_v, gap_m, gamma=0.95, lam=0.9)
    a_full, r_full = gae(rewards[:1], values[:1], torch.ones(1, 7), gamma=0.95, lam=0.9)
    keep = gap_m[0].bool()
    assert torch.allclose(a_gap[0, keep], a_full[0], atol=1e-6) and (a_gap[0, ~keep] == 0).all()
    assert torch.allclose(r_gap[0, keep], r_full[0], atol=1e-6)


def test_gae_carries_no_gradient():
    rewards, values, mask = _ragged(seed=2)
    adv, ret = gae(rewards, values.requires_grad_(True), mask)
    assert not adv.requires_grad and not ret.requires_grad


# ---------------------------------------------------------------- whiten


def test_whiten_hand_computed():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])                               # mean 2.5, sample var 5/3
    expected = [(v - 2.5) / math.sqrt(5 / 3 + 1e-8) for v in (1, 2, 3, 4)]
    assert whiten(x).tolist() == pytest.approx(expected, **TOL)
    assert whiten(x, shift_mean=False).tolist() == pytest.approx([e + 2.5 for e in expected], **TOL)


def test_whiten_masked_statistics():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 5, generator=g) * 4 + 2
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    # junk outside the mask must not matter
    x_junk = torch.where(mask.bool(), x, 1e6)
    w = whiten(x_junk, mask)
    valid = w[mask.bool()]
    assert valid.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert valid.std().item() == pytest.approx(1.0, abs=1e-5)
    assert (w[~mask.bool()] == 0).all()
    assert torch.allclose(valid, whiten(x[mask.bool()]), atol=1e-6)
    w_keep = whiten(x_junk, mask, shift_mean=False)[mask.bool()]
    assert w_keep.mean().item() == pytest.approx(x[mask.bool()].mean().item(), rel=1e-5)
    assert w_keep.std().item() == pytest.approx(1.0, abs=1e-5)
