"""Preference stage smoke tests on the tiny model: every method trains its adapter through TRL, bad rows fail
first."""

from __future__ import annotations

import json
import math

import pytest
import torch

import labkit.stages.preference as pref
from labkit.config import PreferenceConfig
from labkit.errors import ConfigError, DataError
from labkit.runs.callbacks import read_jsonl

pytestmark = pytest.mark.smoke


def cfg(tiny_model_dir, tmp_path, **kw) -> PreferenceConfig:
    # No warmup: with any, transformers' linear warmup runs the first of the two steps at lr 0, so LoRA B is
    # still zero at step 2, no lora_A tensor gets a gradient, and half the adapter never trains
    # (assert_trained sees it).
    base = dict(model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, n_eval=8,
                dtype="float32", learning_rate=5e-3, warmup_ratio=0.0, eval_every=1, kl_prompts=2,
                kl_samples=1, kl_max_new_tokens=4)
    return PreferenceConfig.from_preset("cpu-smoke", **{**base, **kw})


@pytest.mark.parametrize("method", pref.METHODS)
def test_every_method_trains_the_adapter_and_reports_heldout_metrics(method, tiny_model_dir, tmp_path,
                                                                     weights_before, assert_trained):
    from labkit.dash import PREFERENCE_PANELS, LiveDashboard

    dash = LiveDashboard(PREFERENCE_PANELS, title=method)
    result = pref.train(cfg(tiny_model_dir, tmp_path, method=method), callbacks=[dash])
    # The dashboard got every panel's training series and the held-out evals (KTO logs no training accuracy).
    drawn = {t.name for t in dash.figure().data if t.x}
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "eval heldout/preference_accuracy", "eval heldout/kl"} <= drawn
    assert ("rewards/accuracies" in drawn) == (method != "kto") and ("kl" in drawn) == (method == "kto")
    m = result.metrics
    assert m["method"] == method and m["steps"] == 2 and math.isfinite(m["train_loss"])
    # Before training the policy is its own reference: KL is zero and every score is the reference's.
    assert m["before"]["kl"] == 0.0 and 0.0 <= m["before"]["preference_accuracy"] <= 1.0
    assert {"preference_accuracy", "preference_accuracy_avg", "implicit_reward_accuracy",
            "kl"} <= set(m["after"])
    assert {k for k in m["after"] if k.startswith("accuracy/")} == {"accuracy/guess", "accuracy/padded",
                                                                     "accuracy/slip"}
    snap = assert_trained(weights_before, result.model)  # every LoRA tensor moved, every base weight did not
    assert all("lora_" in n for n in snap.trainable)
    assert (result.adapter_dir / "adapter_config.json").exists()
    events = read_jsonl(result.log_path)
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2]
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 1, 2] and all("heldout/kl" in e for e in evals[1:])
    assert json.loads((result.output_dir / "result.json").read_text())["metrics"]["method"] == method


def test_the_trained_policy_moves_away_from_its_reference(tiny_model_dir, tmp_path, weights_before,
                                                          assert_trained):
    result = pref.train(cfg(tiny_model_dir, tmp_path, method="dpo", learning_rate=5e-2, max_steps=3))
    assert_trained(weights_before, result.model)
    margins = [(p["margin_before"], p["margin_after"]) for p in result.samples]
    assert margins and any(abs(a - b) > 1e-4 for a, b in margins)
    # Disabling the adapter gives back the reference exactly: its margins are the "before" ones.
    from labkit.metrics.preference import pair_logps
    from labkit.models.loading import load_tokenizer

    rows = [r for r in _heldout()][: len(margins)]
    with result.model.disable_adapter():
        ref = pair_logps(result.model, load_tokenizer(tiny_model_dir), rows)
    for (before, _), r in zip(margins, ref):
        assert r["chosen"] - r["rejected"] == pytest.approx(before, abs=1e-4)


def _heldout():
    from labkit.data.samples import load_sample

    return load_sample("preference_pairs", split="heldout")


@pytest.mark.parametrize("bad, field", [
    ({"chosen": None}, "chosen"),
    ({"prompt": [{"role": "user", "content": "   "}]}, "prompt[0].content"),
    ("identical", "rejected"),
])
def test_bad_preference_rows_fail_before_a_model_loads(bad, field, tiny_model_dir, tmp_path, monkeypatch):
    from labkit.data.io import write_jsonl
    from labkit.models import adapters

    rows = [dict(r) for r in _heldout()[:6]]
    if bad == "identical":
        rows[3]["rejected"] = rows[3]["chosen"]
    else:
        rows[3].update(bad)
        rows[3] = {k: v for k, v in rows[3].items() if v is not None}
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    monkeypatch.setattr(adapters, "load_for_training",
                        lambda *a, **k: pytest.fail("model loaded before data check"))
    with pytest.raises(DataError) as err:
        pref.train(cfg(tiny_model_dir, tmp_path, data=str(path)))
    assert err.value.row == 3 and err.value.field == field and "pairs.jsonl" in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="method"):
        PreferenceConfig(method="ppo")
    with pytest.raises(ConfigError, match="beta"):
        PreferenceConfig(beta=0.0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        PreferenceConfig(method="robust", label_smoothing=0.5)
    assert PreferenceConfig(method="simpo").method_beta == 2.0 and PreferenceConfig().method_beta == 0.1


def test_unknown_kind_filter_names_what_the_file_has(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="slip"):
        pref.train(cfg(tiny_model_dir, tmp_path, kinds="slipz"))


def test_trainer_config_maps_each_method_to_its_trl_loss(tmp_path):
    info = {"compute_dtype": "float32", "device": "cpu"}
    for method, loss in [("dpo", ["sigmoid"]), ("ipo", ["ipo"]), ("hinge", ["hinge"]),
                         ("robust", ["robust"])]:
        args = pref.trainer_config(PreferenceConfig(method=method), info, tmp_path, quiet=True, n_train=100)
        assert args.loss_type == loss and args.beta == 0.1
    robust = pref.trainer_config(PreferenceConfig(method="robust", label_smoothing=0.2), info, tmp_path,
                                 quiet=True, n_train=100)
    assert robust.label_smoothing == 0.2
    simpo = pref.trainer_config(PreferenceConfig(method="simpo", simpo_gamma=0.8), info, tmp_path,
                                quiet=True, n_train=100)
    assert (simpo.loss_type, simpo.cpo_alpha, simpo.simpo_gamma, simpo.beta) == ("simpo", 0.0, 0.8, 2.0)
    assert type(pref.trainer_config(PreferenceConfig(method="orpo"), info, tmp_path, quiet=True,
                                    n_train=100)).__name__ == "ORPOConfig"
    assert type(pref.trainer_config(PreferenceConfig(method="kto"), info, tmp_path, quiet=True,
                                    n_train=100)).__name__ == "KTOConfig"


def test_reference_is_scored_up_front_only_when_the_run_sees_more_pairs_than_the_set(tmp_path):
    info = {"compute_dtype": "float32", "device": "cpu"}
    short = PreferenceConfig(max_steps=16, batch_size=8)  # sees 128 pairs
    assert pref.trainer_config(short, info, tmp_path, quiet=True,
                               n_train=240).precompute_ref_log_probs is False
    assert pref.trainer_config(short, info, tmp_path, quiet=True,
                               n_train=100).precompute_ref_log_probs is True
    kto = short.replace(method="kto", precompute_ref=False)
    assert pref.trainer_config(kto, info, tmp_path, quiet=True, n_train=100).precompute_ref_log_probs is False


def test_kl_is_zero_for_the_reference_and_positive_after_a_change(tiny):
    from peft import get_peft_model

    from labkit.metrics.kl import sampled_kl
    from labkit.models.adapters import lora_config

    model, tok = tiny
    model = get_peft_model(model, lora_config(4, 8, 0.0, "all-linear"))
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}]] * 2
    assert sampled_kl(model, tok, prompts, n_samples=2, max_new_tokens=6)["kl"] == 0.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    est = sampled_kl(model, tok, prompts, n_samples=4, max_new_tokens=6)
    assert est["kl"] > 0 and est["samples"] == 8


def test_kto_batches_mix_desirable_and_undesirable_examples(tiny_model_dir, tmp_path):
    """KTOTrainer samples sequentially; unshuffled unpaired data would give all-desirable first batches."""
    from labkit.models import adapters
    from labkit.runs.callbacks import Callbacks

    c = cfg(tiny_model_dir, tmp_path, method="kto")
    model, tok, info = adapters.load_for_training(tiny_model_dir, method="lora", dtype="float32")
    trainer = pref.build_trainer(c, model, tok, info, [dict(r) for r in _heldout()], Callbacks([]),
                                 tmp_path / "k")
    labels = [bool(x) for x in trainer.train_dataset["label"]]
    first = labels[: 4 * c.batch_size]
    assert trainer.args.train_sampling_strategy == "sequential" and 0 < sum(first) < len(first)
