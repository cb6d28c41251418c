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


@pytest.mark.parametrize("sync", ["adapter", "merged"])
def test_grpo_rolls_out_through_an_engine_and_refits_it_every_step(tiny_model_dir, tmp_path, tokenizer, sync):
    import torch

    from labkit.models import load_model

    base, tok = load_model(tiny_model_dir, dtype="float32")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    spy = Spy(HFEngine(base, tok))
    seen: list = []
    cfg = RLConfig.from_preset(
        "cpu-smoke", model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=2, prompts_per_step=2,
        num_generations=4, max_completion_length=8, eval_split="", dtype="float32", learning_rate=5e-2,
        beta=0.05, preflight=False, reward_weights="", use_vllm=True, vllm_mode="engine", vllm_sync=sync)
    result = grpo.train(cfg, reward_funcs=[varied_scorer(seen)], engine=spy)
    # the gap check (1e-4) is what shows each step's policy reached the engine, either way
    check_run(result, spy, seen, steps=2, batch=8, gap=1e-4)
    assert result.metrics["rollouts"]["sync"] == sync
    if sync == "adapter":
        # The engine now serves the trained adapter's weights of the last rollout (after step 1's update).
        assert list(spy.engine.adapters) == ["policy"]
    else:
        # merged: no adapter served, and the caller's engine has its own base weights back after the run
        assert not spy.engine.adapters
        after = spy.engine.model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items())


def test_merged_weights_are_the_adapter_applied(tiny_model_dir):
    """W + ΔW under plain names: a plain model loaded with them computes what the PEFT policy computes."""
    import torch
    from peft import LoraConfig, get_peft_model

    from labkit.models import load_model
    from labkit.models.lora import merged_weights

    policy = get_peft_model(load_model(tiny_model_dir, dtype="float32")[0],
                            LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, p in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    plain = load_model(tiny_model_dir, dtype="float32")[0]
    weights = merged_weights(policy)
    assert set(weights) <= set(plain.state_dict()) and len(weights) > 0
    base = merged_weights(policy, with_delta=False)
    assert all(torch.equal(base[k], plain.state_dict()[k]) for k in base)
    plain.load_state_dict(weights, strict=False)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, policy(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    # the policy itself is untouched: nothing merged in place, its base weights are still the plain model's
    from peft.tuners.lora import LoraLayer

    layers = [m for m in policy.modules() if isinstance(m, LoraLayer)]
    assert layers and not any(m.merged for m in layers)
    assert all(torch.equal(m.get_base_layer().weight, base[n.removeprefix("base_model.model.") + ".weight"])
               for n, m in policy.named_modules() if isinstance(m, LoraLayer))


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


@pytest.mark.parametrize("sync", ["merged", "adapter"])
def test_grpo_with_vllm_rollouts_on_the_embedded_model(vllm_engine, tmp_path, sync):
    """Two GRPO steps, pre-flight included, with rollouts from the shared vLLM server (fp32), the policy
    pushed as merged weights or as its adapter; merged leaves the server's base weights as they were."""
    from labkit.infer import SamplingParams

    probe = [[1, 28, 4]]
    greedy = SamplingParams(max_new_tokens=8, logprobs=True)
    before = vllm_engine.generate(probe, greedy)[0]
    spy = Spy(vllm_engine)
    seen: list = []
    correctness_and_ids = varied_scorer(seen)
    cfg = RLConfig.from_preset(
        "cpu-smoke", output_dir=str(tmp_path / "run"), max_steps=2, prompts_per_step=2, num_generations=4,
        max_completion_length=24, eval_split="", dtype="float32", lora_r=8, lora_alpha=16, learning_rate=1e-3,
        preflight=True, probe_prompts=2, reward_weights="", use_vllm=True, vllm_mode="engine", vllm_sync=sync)
    result = grpo.train(cfg, reward_funcs=[correctness_and_ids], engine=spy)
    assert result.metrics["rollouts"]["sync"] == sync
    after = vllm_engine.generate(probe, greedy)[0]
    assert after.token_ids == before.token_ids and after.logprobs == pytest.approx(before.logprobs, abs=1e-4)
    assert result.metrics["preflight"] is not None      # the probe batch came from the engine too
    assert len(spy.calls) == 3
    check_run(result, spy, seen, steps=2, batch=8, gap=2e-3)
    print("vllm rollouts:", result.metrics["rollouts"])
