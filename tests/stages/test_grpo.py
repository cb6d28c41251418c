"""GRPO and RLOO stage smoke tests on the tiny model: TRL trains the adapter, every RL signal is logged, the
rollout log matches what the trainer saw, and pre-flight stops a run that cannot learn before its first
step."""

from __future__ import annotations

import json
import math

import pytest

import labkit.stages.grpo as grpo
import labkit.stages.rloo as rloo
from labkit.config import RLConfig
from labkit.rewards import PreflightError
from labkit.runs.callbacks import read_jsonl

pytestmark = pytest.mark.smoke


def cfg(tiny_model_dir, tmp_path, **kw) -> RLConfig:
    base = dict(model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=2, prompts_per_step=2,
                num_generations=4, max_completion_length=8, n_eval=4, eval_max_new_tokens=8, eval_every=1,
                dtype="float32", learning_rate=5e-2, beta=0.05, preflight=False, reward_weights="")
    return RLConfig.from_preset("cpu-smoke", **{**base, **kw})


def varied(prompts, completions, **kwargs):
    """A reward a random model can earn: the share of distinct characters, so groups are never all equal."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [len(set(t)) / max(len(t), 1) for t in texts]


@pytest.mark.parametrize("stage, loss_type", [(grpo, "grpo"), (grpo, "dr_grpo"), (grpo, "dapo"),
                                              (rloo, "grpo")])
def test_stage_trains_the_adapter_and_logs_every_rl_signal(stage, loss_type, tiny_model_dir, tmp_path,
                                                           weights_before, assert_trained):
    from labkit.dash import RL_PANELS, LiveDashboard

    dash = LiveDashboard(RL_PANELS)
    result = stage.train(cfg(tiny_model_dir, tmp_path, loss_type=loss_type), callbacks=[dash],
                         reward_funcs=[varied])
    m = result.metrics
    assert m["algorithm"] == stage.__name__.rsplit(".", 1)[1] and m["steps"] == 2
    assert math.isfinite(m["train_loss"])
    snap = assert_trained(weights_before, result.model)  # every LoRA tensor moved, every base weight did not
    assert all("lora_" in n for n in snap.trainable)

    steps = [e for e in read_jsonl(result.log_path) if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    for key in ("reward", "reward_std", "rewards/varied/mean", "kl", "entropy", "completions/mean_length",
                "completions/clipped_ratio", "frac_reward_zero_std"):
        assert all(key in e and math.isfinite(e[key]) for e in steps), key
    evals = [e for e in read_jsonl(result.log_path) if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2] and all("heldout/accuracy" in e for e in evals)
    assert [c["step"] for c in m["curve"]] == [0, 1, 2]
    assert m["curve"][-1]["seconds"] <= m["curve"][-1]["wall_seconds"]

    # One rollout record per completion the trainer scored, advantages summing to zero within each group.
    records = [json.loads(line) for line in (result.output_dir / "rollouts.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records} == {1, 2} and len(records) == 2 * 2 * 4
    for step in (1, 2):
        for group in (0, 1):
            rows = [r for r in records if r["step"] == step and r["group"] == group]
            assert len(rows) == 4 and len({r["prompt"] for r in rows}) == 1
            assert sum(r["advantage"] for r in rows) == pytest.approx(0.0, abs=1e-5)
            assert all(r["rewards"]["varied"] == pytest.approx(r["reward"]) for r in rows)
    drawn = {t.name for t in dash.figure().data if t.x}
    assert {"reward", "kl", "entropy"} <= drawn
    assert (result.adapter_dir / "adapter_config.json").exists()
    assert json.loads((result.output_dir / "result.json").read_text())["metrics"]["steps"] == 2
    # Telemetry: generation timed inside the training loop, tokens sampled and trained on, reward statistics.
    t = m["telemetry"]
    assert t["generation_seconds"] > 0 and 0 < t["generation_share"] < 1 and t["scoring_seconds"] > 0
    assert t["tokens_generated"] > 0 and t["tokens_trained"] > t["tokens_generated"]
    assert t["scores"]["reward/varied"]["n"] == 16 and m["run"]["status"] == "done"


def test_preflight_stops_a_run_that_cannot_learn_before_its_first_step(tiny_model_dir, tmp_path):
    # The tiny random model never emits end-of-turn within 8 tokens: every completion is cut off.
    # (tests/rewards/test_preflight.py provokes each check on its own.)
    with pytest.raises(PreflightError) as err:
        grpo.train(cfg(tiny_model_dir, tmp_path, rewards="correctness", preflight=True, probe_prompts=2))
    assert err.value.check == "truncation" and "max_completion_length" in str(err.value)
    assert not (tmp_path / "run" / "adapter").exists()  # stopped before any step, nothing half-written


def test_unknown_reward_name_fails_before_a_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    from labkit.errors import ConfigError
    from labkit.models import adapters

    monkeypatch.setattr(adapters, "load_for_training", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(ConfigError, match="rewards"):
        grpo.train(cfg(tiny_model_dir, tmp_path, rewards="correctness,not_a_reward"))
    with pytest.raises(ConfigError, match="reward_weights"):
        cfg(tiny_model_dir, tmp_path, rewards="correctness", reward_weights="1,0.5")
