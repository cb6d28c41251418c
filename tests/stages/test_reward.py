"""Reward stage: TRL's RewardTrainer on the tiny model, and the accuracy / calibration / length-bias
helpers."""

from __future__ import annotations

import math

import pytest

import labkit.stages.reward as rm
from labkit.config import RewardConfig
from labkit.errors import DataError
from labkit.losses.reward import bradley_terry_loss
from labkit.runs.callbacks import read_jsonl

pytestmark = pytest.mark.smoke


def cfg(tiny_model_dir, tmp_path, **kw) -> RewardConfig:
    base = dict(model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=3, batch_size=4, n_eval=8,
                dtype="float32", learning_rate=1e-2, eval_every=1)
    return RewardConfig.from_preset("cpu-smoke", **{**base, **kw})


def test_reward_model_trains_head_and_adapter_and_scores_pairs(tiny_model_dir, tmp_path, weights_before,
                                                                 assert_trained):
    result = rm.train(cfg(tiny_model_dir, tmp_path))
    # Every LoRA tensor and PEFT's trainable copy of the new `score` head moved; the base, including the
    # head's frozen original (score.original_module), is bit-identical.
    snap = assert_trained(weights_before, result.model)
    head = {n for n in snap.trainable if "score" in n}
    assert head and all(".modules_to_save." in n for n in head)
    assert all("lora_" in n for n in snap.trainable - head) and snap.trainable - head
    assert any("score.original_module" in n for n in snap.frozen)
    m = result.metrics
    assert m["steps"] == 3 and math.isfinite(m["train_loss"]) and 0 <= m["after"]["accuracy"] <= 1
    assert m["calibration"]
    assert {"accuracy/slip", "accuracy/guess", "accuracy/padded"} <= set(m["after"])
    evals = [e for e in read_jsonl(result.log_path) if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2, 3]
    # The stage's scores are what the model gives each templated prompt + reply.
    s = result.samples[0]
    row = next(r for r in rm_rows() if r["prompt"][-1]["content"] == s["prompt"])
    again = rm.score(result.model, result.tokenizer, [row["prompt"]] * 2, [row["chosen"], row["rejected"]])
    assert again == pytest.approx([s["chosen"], s["rejected"]], abs=1e-4)
    assert (result.adapter_dir / "adapter_config.json").exists()


def rm_rows():
    from labkit.data.samples import load_sample

    return load_sample("preference_pairs", split="heldout")


def test_trl_reward_loss_is_labkit_bradley_terry(tiny_model_dir, tmp_path):
    """One batch through RewardTrainer.compute_loss equals bradley_terry_loss on the same model's rewards."""
    import torch

    c = cfg(tiny_model_dir, tmp_path, max_steps=1)
    model, tok, info = rm.load_reward_model(c)
    rows = rm_rows()[:4]
    trainer = rm.build_trainer(c, model, tok, info, rows, rm.Callbacks([]), tmp_path / "t")
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))
        rewards = rm.score(model, tok, [r["prompt"] for r in rows for _ in (0, 1)],
                           [r[k] for r in rows for k in ("chosen", "rejected")])
    ours, _ = bradley_terry_loss(torch.tensor(rewards[0::2]), torch.tensor(rewards[1::2]))
    assert float(trl_loss) == pytest.approx(float(ours), abs=1e-4)


def test_length_biased_flips_only_padded_pairs():
    rows = rm_rows()
    biased = rm.length_biased(rows)
    for r, b in zip(rows, biased):
        flipped = (b["chosen"], b["rejected"]) == (r["rejected"], r["chosen"])
        assert flipped == (r["source_kind"] == "padded")
        if r["source_kind"] == "padded":
            assert len(b["chosen"][0]["content"]) > len(b["rejected"][0]["content"])


def test_pairwise_metrics_and_calibration_by_hand():
    scored = [{"kind": "a", "chosen": 2.0, "rejected": 0.0}, {"kind": "a", "chosen": 0.0, "rejected": 1.0},
              {"kind": "b", "chosen": 3.0, "rejected": 2.9}]
    m = rm.pairwise_metrics(scored)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["accuracy/a"] == 0.5 and m["accuracy/b"] == 1.0
    assert m["margin"] == pytest.approx((2 - 1 + 0.1) / 3)
    table = rm.calibration(scored, bins=2)
    # Both orders of every pair: 3 points above 0.5 and 3 below; the table is symmetric about 0.5.
    assert [row["count"] for row in table] == [3, 3]
    assert table[0]["predicted"] + table[1]["predicted"] == pytest.approx(1.0)
    assert table[0]["observed"] + table[1]["observed"] == pytest.approx(1.0)
    assert table[1]["observed"] == pytest.approx(2 / 3)  # the σ>0.5 side holds 2 chosen-first points of 3
    assert 0 <= rm.expected_calibration_error(table) <= 1
    with pytest.raises(ValueError, match="even"):
        rm.calibration(scored, bins=5)


def test_bad_rows_fail_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    from labkit.data.io import write_jsonl

    rows = [dict(r) for r in rm_rows()[:5]]
    del rows[2]["chosen"]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    monkeypatch.setattr(rm, "load_reward_model",
                        lambda *a, **k: pytest.fail("model loaded before data check"))
    with pytest.raises(DataError) as err:
        rm.train(cfg(tiny_model_dir, tmp_path, data=str(path)))
    assert err.value.row == 2 and err.value.field == "chosen"
    assert not (tmp_path / "run").exists()
