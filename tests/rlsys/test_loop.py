"""Asynchronous GRPO: the staleness bound holds, bound 0 is the synchronous loop, a killed worker is replaced
with nothing counted twice, collocated mode alternates, and weight syncs send what their kind says."""

from __future__ import annotations

import types

import pytest
import torch

from labkit.errors import ConfigError
from labkit.rlsys.loop import (
    AsyncRLConfig,
    Group,
    _Run,
    merged_weights,
    replay_synchronous,
    run,
    trainable_model,
)

# The tiny random model never answers arithmetic, so the tests reward shortness (in words): its completions
# differ in word count, which gives GRPO non-zero advantages to learn from.
TINY = dict(model="tiny", n_eval=0, rewards="length", length_budget=3, max_new_tokens=12, timeout_s=120)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="staleness"):
        AsyncRLConfig(staleness=0, sync_every=2)      # workers would keep version 0 for two steps
    with pytest.raises(ConfigError, match="sync"):
        AsyncRLConfig(method="full", sync="adapter")
    with pytest.raises(ConfigError, match="rewards"):   # before any model loads or process starts
        run(AsyncRLConfig(**{**TINY, "rewards": "correctness,vibes"}))
    with pytest.raises(ConfigError, match="group_size"):
        AsyncRLConfig(group_size=1)


def fake_group(gid: int, version: int) -> Group:
    return Group(gid, "p", "1", [1], [[5]], [[-1.0]], [[version]], [True], [0.0])


def test_take_batch_drops_groups_beyond_the_bound_and_never_returns_them():
    cfg = AsyncRLConfig(staleness=2, prompts_per_step=2)
    state = types.SimpleNamespace(cfg=cfg, step=5, log=types.SimpleNamespace(dropped_stale=0),
                                  ready=[fake_group(i, v) for i, v in enumerate([1, 2, 3, 4, 5])])
    batch = _Run.take_batch(state)
    assert state.log.dropped_stale == 2                       # versions 1 and 2 lag 4 and 3 > 2
    assert [g.group_id for g in batch] == [2, 3]              # oldest allowed first
    assert all(5 - g.min_version <= 2 for g in batch)
    assert _Run.take_batch(state) is None                     # one left: not a full batch


@pytest.mark.parametrize("kind", ["adapter", "full"])
def test_a_synced_engine_samples_the_trainers_policy(kind, tmp_path):
    from peft import get_peft_model_state_dict

    from labkit.infer.engine import SamplingParams
    from labkit.infer.hf import HFEngine
    from labkit.rlsys.loop import build_model

    cfg = AsyncRLConfig(**TINY)
    torch.manual_seed(0)
    policy, tok = trainable_model(cfg)
    policy.save_pretrained(tmp_path)
    engine = HFEngine(build_model(cfg)[0], tok)
    if kind == "adapter":
        engine.load_adapter("policy", str(tmp_path))
    with torch.no_grad():   # a trained adapter: B is no longer zero
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    if kind == "adapter":
        engine.update_weights(dict(get_peft_model_state_dict(policy)), adapter="policy")
    else:
        engine.update_weights(merged_weights(policy))
    params = SamplingParams(max_new_tokens=6, logprobs=True)
    got = engine.generate(["What is 2 + 2?"], params, adapter="policy" if kind == "adapter" else None)[0]
    policy.eval()
    want = HFEngine(policy, tok).generate(["What is 2 + 2?"], params)[0]
    assert got.token_ids == want.token_ids
    assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


@pytest.fixture(scope="module")
def stale_run():
    cfg = AsyncRLConfig(**TINY, steps=4, staleness=1, sync_every=2, partial_tokens=5, sync="delta")
    return cfg, run(cfg, progress=False)


@pytest.mark.smoke
def test_trainer_never_consumes_a_rollout_older_than_the_bound(stale_run):
    cfg, log = stale_run
    lags = [lag for s in log.steps for lag in s["lags"]]
    assert len(log.steps) == cfg.steps
    assert max(lags) <= cfg.staleness
    assert 1 in lags                                          # sync every 2 steps: step 1 trains on version 0
    assert len(log.consumed) == len(set(log.consumed)) == cfg.steps * cfg.prompts_per_step
    # Partial rollouts: generations came back parked, and every token's version is accounted for.
    assert any(e["kind"] == "generate" and e["partial"] for e in log.events)
    for groups, s in zip(log.batches, log.steps):
        assert [sum(g.version_mix.values()) for g in groups] == [sum(map(len, g.tokens)) for g in groups]
        assert all(min(mix) >= s["step"] - cfg.staleness for mix in s["versions"])


@pytest.mark.smoke
def test_delta_sync_sends_only_the_tensors_lora_changed(stale_run):
    cfg, log = stale_run
    model, _ = trainable_model(cfg)
    full = merged_weights(model)
    full_bytes = sum(t.numel() * t.element_size() for t in full.values())
    assert log.syncs and all(s["kind"] == "delta" for s in log.syncs)
    # LoRA touches the 7 linears of each of the 2 layers; embeddings and norms never change.
    assert all(s["tensors"] == 14 for s in log.syncs)
    assert all(0 < s["bytes"] < full_bytes for s in log.syncs)
    assert all(s["worker_s"] for s in log.syncs)              # the worker applied each one


@pytest.mark.smoke
def test_bound_zero_is_on_policy_and_matches_synchronous_grpo():
    cfg = AsyncRLConfig(**TINY, steps=3, staleness=0, importance_sampling=True)
    log = run(cfg, progress=False)
    assert all(s["lags"] == [0] * cfg.prompts_per_step for s in log.steps)
    assert all(mix == {s["step"]: sum(mix.values())} for s in log.steps for mix in s["versions"])
    # The worker's log-probs are the trainer's: the IS weights are 1 and change nothing.
    assert all(s["behaviour_logp_gap"] < 1e-4 for s in log.steps)
    assert all(abs(s["is_weight_mean"] - 1) < 1e-4 for s in log.steps)
    assert any(len(set(g.rewards)) > 1 for b in log.batches for g in b)   # advantages are not all zero
    losses, state = replay_synchronous(cfg, log.batches)
    assert losses == pytest.approx([s["loss"] for s in log.steps], abs=1e-6)
    _, start = replay_synchronous(cfg, [])
    moved = max(float((state[k] - start[k]).abs().max()) for k in state)
    assert moved > 1e-5
    for k in state:
        torch.testing.assert_close(log.final_trainable[k], state[k], atol=1e-6, rtol=1e-5)


@pytest.mark.smoke
def test_killed_worker_is_replaced_and_no_rollout_counts_twice():
    cfg = AsyncRLConfig(**TINY, steps=3, staleness=1, kill_worker_at_task=1)
    log = run(cfg, progress=False)
    assert log.workers_replaced == 1
    assert any(e["kind"] == "killed" for e in log.events)
    assert len(log.steps) == cfg.steps
    assert len(log.consumed) == len(set(log.consumed)) == cfg.steps * cfg.prompts_per_step
    assert {e["lane"] for e in log.events if e["kind"] == "generate"} >= {"worker 1"}


@pytest.mark.smoke
def test_collocated_never_trains_while_generating():
    cfg = AsyncRLConfig(**TINY, steps=2, mode="collocated", sync="full")
    log = run(cfg, progress=False)
    gens = [e for e in log.events if e["kind"] == "generate"]
    trains = [e for e in log.events if e["kind"] == "train"]
    assert len(trains) == 2 and gens
    assert not any(g["start"] < t["end"] and t["start"] < g["end"] for g in gens for t in trains)
    assert {"sleep", "wake"} <= {e["kind"] for e in log.events}
    assert all(s["kind"] == "full" for s in log.syncs)


@pytest.mark.slow
def test_staleness_sweep_on_the_embedded_model():
    from labkit.rlsys.loop import sweep

    cfg = AsyncRLConfig(model="smollm2-135m-instruct", dtype="bfloat16", steps=4, prompts_per_step=2,
                        group_size=4, max_new_tokens=16, n_eval=8, lr=2e-4, timeout_s=600)
    logs = sweep(cfg, (0, 1, 2, 4, 8), progress=False)
    for bound, log in zip((0, 1, 2, 4, 8), logs):
        s = log.summary()
        assert s["max_lag"] <= bound and len(log.steps) == cfg.steps
        assert len(log.evals) == 2
    assert logs[0].summary()["mean_lag"] == 0
    assert logs[-1].summary()["mean_lag"] > 0                 # with room, the workers ran ahead
