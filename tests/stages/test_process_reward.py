"""GRPO with the process reward beside the outcome reward (tiny model): both are logged per rollout, and the
total is their weighted sum."""

from __future__ import annotations

import json

import pytest

from labkit.config import RLConfig
from labkit.reasoning.process import process_reward, step_verdicts
from labkit.rewards import completion_text, correctness

pytestmark = pytest.mark.smoke


def test_grpo_with_outcome_and_process_rewards(tiny_model_dir, tmp_path):
    import labkit.stages.grpo as grpo

    cfg = RLConfig.from_preset("cpu-smoke", model=tiny_model_dir, output_dir=str(tmp_path / "rl"),
                               max_steps=1, prompts_per_step=2, num_generations=4, max_completion_length=8,
                               n_eval=2, eval_max_new_tokens=8, dtype="float32", preflight=False,
                               reward_weights="1,0.5")
    result = grpo.train(cfg, reward_funcs=[correctness, process_reward()])
    records = [json.loads(x) for x in (result.output_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for r in records:
        assert set(r["rewards"]) == {"correctness", "process"}
        verdicts = step_verdicts(completion_text(r["completion"]))
        expected = sum(v["correct"] for v in verdicts) / len(verdicts) if verdicts else 0.0
        assert r["rewards"]["process"] == pytest.approx(expected)
        assert r["reward"] == pytest.approx(r["rewards"]["correctness"] + 0.5 * r["rewards"]["process"])
