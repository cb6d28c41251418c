"""GRPO with rollouts from a labkit engine (RLConfig(use_vllm=True), vllm_mode "engine"): TRL trains on
exactly the token ids the engine sampled, the policy's adapter reaches the engine every step, and the
engine's log-probs of the sampled tokens agree with the policy's.

The first test drives the rollout path with an in-process hf engine on the tiny model (no vLLM needed); the
second runs two steps on the embedded model with rollouts from the shared vLLM server (tests/conftest.py's
`vllm_engine`, skipped when there is no .venv-vllm).
"""

from __future__ import annotations

import math

import pytest

import labkit.stages.grpo as grpo
from labkit.config import RLConfig
from labkit.errors import ConfigError
from labkit.infer import HFEngine

pytestmark = pytest.mark.smoke


class Spy:
    """An engine that records every generate call's completions (and passes everything else through)."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[list] = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, prompts, sampling=None, *, adapter=None):
        out = self.engine.generate(prompts, sampling, adapter=adapter)
        self.calls.append(out)
        return out


def varied_scorer(seen: list):
    """A reward a random model can earn (distinct characters), that also keeps the ids TRL scored."""

    def varied(prompts, completions, completion_ids, **kwargs):
        seen.append([list(ids) for ids in completion_ids])
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [len(set(t)) / max(len(t), 1) for t in texts]

    return varied


def check_run(result, spy: Spy, seen: list, *, steps: int, batch: int, gap: float):
    m = result.metrics
    assert m["steps"] == steps and math.isfinite(m["train_loss"])
    # The pre-flight probe, if any, came first; then one generate call per step, n = group size per prompt.
    rollout_calls = spy.calls[-steps:]
    assert [sum(1 for _ in call) for call in rollout_calls] == [batch] * steps
    for call, scored in zip(rollout_calls, seen[-steps:]):
        assert [list(c.token_ids) for c in call] == scored, "TRL scored other tokens than the engine sampled"
    r = m["rollouts"]
    assert r["batches"] == steps and r["tokens"] == sum(len(ids) for s in seen[-steps:] for ids in s)
    assert r["refit_seconds"] > 0 and r["generate_seconds"] > 0
    assert r["logprob_gap"] is not None and r["logprob_gap"] < gap, r


def test_grpo_rolls_out_through_an_engine_and_refits_it_every_step(tiny_model_dir, tmp_path, tokenizer):
    from labkit.models import load_model

    base, tok = load_model(tiny_model_dir, dtype="float32")
    spy = Spy(HFEngine(base, tok))
    seen: list = []
    cfg = RLConfig.from_preset(
        "cpu-smoke", model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=2, prompts_per_step=2,
        num_generations=4, max_completion_length=8, eval_split="", dtype="float32", learning_rate=5e-2,
        beta=0.05, preflight=False, reward_weights="", use_vllm=True, vllm_mode="engine")
    result = grpo.train(cfg, reward_funcs=[varied_scorer(seen)], engine=spy)
    check_run(result, spy, seen, steps=2, batch=8, gap=1e-4)
    # The engine now serves the trained adapter's weights of the last rollout (after step 1's update).
    assert list(spy.engine.adapters) == ["policy"]


def test_groups_go_out_once_with_n_samples_in_prompt_order(tmp_path):
    from labkit.infer import Completion
    from labkit.stages.engine_rollouts import EngineRollouts

    class Echo:
        """Completes prompt p's k-th sample with [p[0], k]; records each call's prompts and settings."""

        def __init__(self):
            self.calls = []

        def generate(self, prompts, sampling, *, adapter=None):
            self.calls.append((prompts, sampling))
            return [Completion(i, [p[0], k], "", "length") for i, p in enumerate(prompts)
                    for k in range(sampling.n)]

    engine = Echo()
    rollouts = EngineRollouts(engine, None, max_completion_length=4, temperature=1.0, work_dir=tmp_path)
    # Two groups of the same prompt side by side, then another group: each group goes out once with n=2.
    got = rollouts.sample([[7], [7], [7], [7], [8], [8]])
    assert [c.token_ids for c in got] == [[7, 0], [7, 1], [7, 0], [7, 1], [8, 0], [8, 1]]
    assert engine.calls[0][0] == [[7], [7], [8]] and engine.calls[0][1].n == 2
    assert engine.calls[0][1].seed is not None
    rollouts.sample([[7], [7], [8], [8]])
    assert engine.calls[1][1].seed != engine.calls[0][1].seed    # every call samples afresh
    # Uneven runs: one request per prompt, unseeded, so equal prompts are not sampled identically.
    rollouts.sample([[7], [7], [8]])
    assert engine.calls[2][0] == [[7], [7], [8]] and engine.calls[2][1].n == 1
    assert engine.calls[2][1].seed is None


def test_engine_rollouts_are_grpo_only(tiny_model_dir, tmp_path):
    import labkit.stages.rloo as rloo

    cfg = RLConfig.from_preset("cpu-smoke", model=tiny_model_dir, output_dir=str(tmp_path / "run"),
                               use_vllm=True)
    with pytest.raises(ConfigError, match="rollout_func"):
        rloo.train(cfg)


def test_grpo_with_vllm_rollouts_on_the_embedded_model(vllm_engine, tmp_path):
    """Two GRPO steps, pre-flight included, with rollouts from the shared vLLM server (fp32)."""
    spy = Spy(vllm_engine)
    seen: list = []
    correctness_and_ids = varied_scorer(seen)
    cfg = RLConfig.from_preset(
        "cpu-smoke", output_dir=str(tmp_path / "run"), max_steps=2, prompts_per_step=2, num_generations=4,
        max_completion_length=24, eval_split="", dtype="float32", lora_r=8, lora_alpha=16, learning_rate=1e-3,
        preflight=True, probe_prompts=2, reward_weights="", use_vllm=True, vllm_mode="engine")
    result = grpo.train(cfg, reward_funcs=[correctness_and_ids], engine=spy)
    assert result.metrics["preflight"] is not None      # the probe batch came from the engine too
    assert len(spy.calls) == 3
    check_run(result, spy, seen, steps=2, batch=8, gap=2e-3)
    print("vllm rollouts:", result.metrics["rollouts"])
