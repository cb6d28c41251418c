"""Rejection-sampling fine-tuning: round schedule, keep policy, and the loop on a tiny model (with and
without SFT)."""

from __future__ import annotations

import json

import pytest
import torch

from labkit.config import ReasoningConfig
from labkit.data import read_jsonl
from labkit.errors import ConfigError
from labkit.reasoning.rejection import keep_verified, round_prompts
from labkit.stages.rejection import train as rejection_sampling


def test_rounds_see_different_prompts_until_every_prompt_was_seen():
    rows = [{"prompt": str(i), "answer": str(i)} for i in range(10)]
    rounds = [round_prompts(rows, r, 3, seed=0) for r in (1, 2, 3, 4)]
    assert [len(r) for r in rounds] == [3, 3, 3, 3]
    first_nine = [x["prompt_index"] for r in rounds[:3] for x in r]
    assert len(set(first_nine)) == 9  # one shuffled pass: no repeat within it
    assert round_prompts(rows, 2, 3, seed=0) == rounds[1]  # seeded
    assert [x["prompt_index"] for x in round_prompts(rows, 1, 3, seed=1)] != first_nine[:3]
    assert all(rows[x["prompt_index"]]["prompt"] == x["prompt"] for r in rounds for x in r)


def sample(i, text, verified=True, finished=True):
    return {"prompt": [{"role": "user", "content": f"q{i}"}],
            "completion": [{"role": "assistant", "content": text}],
            "answer": "1", "prompt_index": i, "verified": verified, "finished": finished}


def test_keep_verified_dedupes_per_prompt_and_skips_cut_off_replies():
    samples = [sample(0, "1"), sample(0, "1"), sample(1, "1"), sample(0, "the answer is 1"),
               sample(0, "2", verified=False), sample(2, "1 and then", finished=False), sample(3, "   ")]
    kept = keep_verified(samples)
    assert [(s["prompt_index"], s["completion"][0]["content"]) for s in kept] == [(0, "1"), (1, "1"),
                                                                                (0, "the answer is 1")]
    assert len(keep_verified(samples, keep_unfinished=True)) == 4


@pytest.mark.parametrize(("change", "field"), [({"k": 0}, "k"), ({"temperature": 0.0}, "temperature"),
                                               ({"rounds": -1}, "rounds")])
def test_bad_settings_fail_before_any_model_loads(tmp_path, change, field):
    cfg = ReasoningConfig(model=str(tmp_path / "no-model"), output_dir=str(tmp_path / "out"), **change)
    with pytest.raises(ConfigError, match=field):
        rejection_sampling(cfg)
    with pytest.raises(ConfigError, match="warm_start"):
        rejection_sampling(ReasoningConfig(output_dir=str(tmp_path / "out")), warm_start="magic")


class Recorder:
    def __init__(self):
        self.events = []

    def on_start(self, info):
        self.events.append(("start", info.get("global_step")))

    def on_step(self, step, metrics):
        self.events.append(("step", step, metrics["round"]))

    def on_eval(self, step, metrics):
        self.events.append(("eval", step, metrics))

    def on_end(self, summary):
        self.events.append(("end", summary["global_step"]))


def tiny_cfg(model_dir, out, **changes):
    return ReasoningConfig(model=model_dir, rounds=2, prompts_per_round=4, k=2, max_new_tokens=8, sft_steps=2,
                           batch_size=4, n_eval=4, output_dir=str(out), **changes)


@pytest.mark.smoke
def test_two_rounds_with_nothing_verified_skip_sft_and_still_report(tiny_model_dir, tmp_path):
    rec = Recorder()
    result = rejection_sampling(tiny_cfg(tiny_model_dir, tmp_path / "run"), callbacks=[rec])
    rounds = result.metrics["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:  # a random tiny model never writes the right number
        assert r["sampled"] == 8 and r["verified"] == r["kept"] == 0 and r["verified_rate"] == 0.0
        assert r["sft_steps"] == 0 and "SFT skipped" in r["note"] and r["heldout_accuracy"] == 0.0
    assert result.metrics["before"] == result.metrics["after"] == {"heldout_accuracy": 0.0}
    out = tmp_path / "run"
    assert read_jsonl(out / "round_1.jsonl") == [] and read_jsonl(out / "round_2.jsonl") == []
    assert (out / "adapter" / "adapter_config.json").is_file()
    saved = json.loads((out / "result.json").read_text())
    assert saved["stage"] == "rejection_sampling" and len(saved["metrics"]["rounds"]) == 2
    logged = [e for e in read_jsonl(out / "metrics.jsonl") if e["event"] == "eval"]
    assert [e["step"] for e in logged] == [0, 1, 2] and "SFT skipped" in logged[1]["note"]
    assert [e[1] for e in rec.events if e[0] == "eval"] == [0, 1, 2]
    assert rec.events[0] == ("start", 0) and rec.events[-1] == ("end", 0)
    assert not [e for e in rec.events if e[0] == "step"]


@pytest.mark.smoke
def test_verified_samples_are_trained_on_round_after_round(tiny_model_dir, tmp_path, weights_before,
                                                          assert_trained):
    """With a verifier that accepts everything, each round keeps its samples and SFT changes only LoRA
    weights."""
    from labkit.models.loading import load_model

    accept_all = lambda prompts, completions, **kw: [1.0] * len(completions)  # noqa: E731
    rec = Recorder()
    result = rejection_sampling(tiny_cfg(tiny_model_dir, tmp_path / "run"), callbacks=[rec],
                                reward=accept_all, keep_unfinished=True, warm_start="cot")
    rounds = result.metrics["rounds"]
    for r in rounds:
        assert r["verified"] == r["sampled"] == 8 and r["verified_rate"] == 1.0
        assert 1 <= r["kept"] <= 8 and r["sft_steps"] == 2 and r["train_loss"] > 0 and "note" not in r
        kept = read_jsonl(tmp_path / "run" / f"round_{r['round']}.jsonl")
        assert len(kept) == r["kept"] and all(k["round"] == r["round"] and k["verified"] for k in kept)
        assert all(k["completion"][0]["role"] == "assistant" for k in kept)
    warm = result.metrics["warm_start"]
    assert warm["rows"] == 200 and warm["sft_steps"] == 2
    assert result.metrics["sft_steps_total"] == 6
    # SFT steps reach callbacks numbered across the warm start (round 0) and both rounds.
    assert [e[1:] for e in rec.events if e[0] == "step"] == [(1, 0.0), (2, 0.0), (3, 1.0), (4, 1.0), (5, 2.0),
                                                               (6, 2.0)]
    assert rec.events[-1] == ("end", 6)
    # Each LoRA tensor moved (A and B), every base weight is bit-identical, and the base is the saved model.
    assert_trained(weights_before.of(result.model), result.model)
    base, _ = load_model(tiny_model_dir, dtype="float32")
    frozen = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
              for n, p in result.model.named_parameters() if "lora_" not in n}
    assert frozen.keys() == dict(base.named_parameters()).keys()
    for name, p in base.named_parameters():
        assert torch.equal(frozen[name], p.to(frozen[name].dtype)), name
