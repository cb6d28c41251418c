"""SFT stage smoke tests on the tiny model: what trains, what stays frozen, resuming, QLoRA gradients,
bad data."""

from __future__ import annotations

import json
import math

import pytest
import torch

import labkit.stages.sft as sft_stage
from labkit.config import SFTConfig
from labkit.errors import DataError
from labkit.runs.callbacks import read_jsonl

pytestmark = pytest.mark.smoke


def cfg(tiny_model_dir, tmp_path, **kw) -> SFTConfig:
    base = dict(model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=3, batch_size=4, n_eval=4,
                eval_max_new_tokens=8, dtype="float32", learning_rate=1e-2)
    return SFTConfig.from_preset("cpu-smoke", **{**base, **kw})


def test_lora_trains_only_adapter_weights(tiny_model_dir, tmp_path, weights_before, assert_trained):
    result = sft_stage.train(cfg(tiny_model_dir, tmp_path, method="lora"))
    snap = assert_trained(weights_before, result.model)  # every LoRA tensor moved, every base weight did not
    assert all("lora_" in n for n in snap.trainable)
    assert (result.adapter_dir / "adapter_config.json").exists()
    m = result.metrics
    assert m["steps"] == 3 and math.isfinite(m["train_loss"])
    assert {"probe_loss", "format_accuracy"} <= set(m["before"]) and "eval_loss" in m["after"]
    steps = [e for e in read_jsonl(result.log_path) if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3] and all(math.isfinite(e["loss"]) and e["loss"] > 0
                                                           for e in steps)
    assert json.loads((result.output_dir / "result.json").read_text())["metrics"]["steps"] == 3


def test_full_sft_changes_base_weights(tiny_model_dir, tmp_path, weights_before, assert_trained):
    result = sft_stage.train(cfg(tiny_model_dir, tmp_path, method="full"))
    # Every weight is trainable under full fine-tuning, and every one moves.
    snap = assert_trained(weights_before, result.model, frozen=False)
    assert not snap.frozen and "model.layers.0.self_attn.q_proj.weight" in snap.trainable
    assert (result.output_dir / "model" / "model.safetensors").exists()


class Kill:
    """Simulates a crash: raises once the trainer logs step `at` (after checkpoint `at - 1` was saved)."""

    def __init__(self, at: int):
        self.at = at

    def on_step(self, step, metrics):
        if step == self.at:
            raise KeyboardInterrupt(f"killed at step {step}")


def test_resume_gives_the_same_loss_curve(tiny_model_dir, tmp_path, weights_before, assert_trained):
    straight = sft_stage.train(cfg(tiny_model_dir, tmp_path / "a", max_steps=6, save_every=3))
    assert_trained(weights_before, straight.model)
    ref = {e["step"]: e["loss"] for e in read_jsonl(straight.log_path) if e["event"] == "step"}

    c = cfg(tiny_model_dir, tmp_path / "b", max_steps=6, save_every=3)
    with pytest.raises(KeyboardInterrupt):
        sft_stage.train(c, callbacks=[Kill(at=5)])
    resumed = sft_stage.train(c.replace(resume=True))
    # Snapshotted as loaded, before the checkpoint's adapter is restored: the base stays, the adapter moved.
    assert_trained(weights_before, resumed.model)
    got = {e["step"]: e["loss"] for e in read_jsonl(resumed.log_path) if e["event"] == "step"}  # last wins
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert got[step] == pytest.approx(ref[step], rel=1e-5), f"step {step}"


def test_resume_without_checkpoint_is_a_config_error(tiny_model_dir, tmp_path):
    with pytest.raises(Exception, match="resume.*no checkpoint"):
        sft_stage.train(cfg(tiny_model_dir, tmp_path, resume=True))


def test_bad_row_fails_before_any_model_is_loaded(tiny_model_dir, tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 3
    rows.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]})
    bad.write_text("\n".join(json.dumps(r) for r in rows))
    from labkit.models import adapters

    monkeypatch.setattr(adapters, "load_for_training", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(DataError, match=r"bad.jsonl, row 3, field 'messages\[1\].content'"):
        sft_stage.train(cfg(tiny_model_dir, tmp_path, data=str(bad)))
    assert not (tmp_path / "run").exists()  # nothing half-written


def _lora_grads(model, tok) -> dict[str, bool]:
    """Which LoRA tensors get a non-zero gradient on the second of two SGD steps (on the first, every
    lora_A's gradient is zero by construction: lora_B starts at zero)."""
    batch = tok(["a short training example"], return_tensors="pt")
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(**batch, labels=batch["input_ids"]).loss.backward()
        grads = {n: p.grad is not None and bool(p.grad.abs().sum() > 0)
                 for n, p in model.named_parameters() if "lora_" in n}
        opt.step()
    return grads


def test_qlora_every_lora_tensor_gets_a_gradient_even_after_generate(tiny_model_dir):
    from labkit.models import generate
    from labkit.models.adapters import load_for_training

    model, tok, info = load_for_training(tiny_model_dir, method="qlora", lora_r=4, dtype="bfloat16")
    assert info["backend"] == "peft"
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    model.eval()
    generate(model, tok, ["hello"], max_new_tokens=4)  # the pitfall: an eval forward before training
    grads = _lora_grads(model, tok)
    assert grads and all(grads.values()), [n for n, ok in grads.items() if not ok]


def test_without_the_fix_the_pitfall_is_real(tiny_model_dir, monkeypatch):
    """Control for the test above: on a CPU with AVX512-BF16, skipping keep_4bit_trainable_on_cpu loses
    gradients after a generate(), so the test above would catch a regression."""
    from labkit.models import adapters, cpu_has_native_bf16, generate

    if not cpu_has_native_bf16():
        pytest.skip("bitsandbytes repacks 4-bit weights only on CPUs with AVX512-BF16")
    monkeypatch.setattr(adapters, "keep_4bit_trainable_on_cpu", lambda model: 0)
    model, tok, _ = adapters.load_for_training(tiny_model_dir, method="qlora", lora_r=4, dtype="bfloat16")
    model.eval()
    generate(model, tok, ["hello"], max_new_tokens=4)
    assert not all(_lora_grads(model, tok).values())


def test_compact_loss_equals_trl_loss_and_gradients(tiny, tmp_path):
    """labkit's trainer scores only labelled positions; loss and every gradient must equal TRL's."""
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from labkit.data.samples import load_sample
    from labkit.data.tokenize import sft_dataset
    from labkit.models.adapters import lora_config
    from labkit.stages.sft import _compact_loss_trainer

    model, tok = tiny
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(4, 8, 0.0, "all-linear", seed_init=False))
    ds = sft_dataset(tok, load_sample("sft_format")[:6])
    args = TRLSFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=3, report_to="none",
                        use_cpu=True, bf16=False, padding_free=True, max_length=None,
                        completion_only_loss=False)
    grads = {}
    for name, cls in (("trl", SFTTrainer), ("labkit", _compact_loss_trainer(SFTTrainer))):
        trainer = cls(model=model, args=args, train_dataset=ds, processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        model.train()
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=None)
        loss.backward()
        grads[name] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                       if p.requires_grad})
        assert (trainer._metrics["train"]["mean_token_accuracy"]
                and trainer._metrics["train"]["num_tokens"][0] > 0)
    torch.testing.assert_close(grads["labkit"][0], grads["trl"][0], rtol=1e-5, atol=1e-6)
    for n, g in grads["trl"][1].items():
        torch.testing.assert_close(grads["labkit"][1][n], g, rtol=1e-4, atol=1e-6)


def test_packing_trains(tiny_model_dir, tmp_path, weights_before, assert_trained):
    result = sft_stage.train(cfg(tiny_model_dir, tmp_path, packing=True, max_length=128, n_eval=0))
    steps = [e for e in read_jsonl(result.log_path) if e["event"] == "step"]
    assert len(steps) == 3 and all(math.isfinite(e["loss"]) and e["loss"] > 0 for e in steps)
    assert_trained(weights_before, result.model)
