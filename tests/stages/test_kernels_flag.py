"""The `kernels` config field: the stages' model gets labkit.kernels' forwards (LM head left to TRL), and SFT
trains to the same loss curve as without them.

Under the test session's TRITON_INTERPRET=1 the patched forwards run the Triton kernels in the interpreter, so
this is the kernels inside a real TRL training loop, not only their torch path.
"""

from __future__ import annotations

import pytest

import labkit.stages.sft as sft_stage
from labkit.config import PreferenceConfig, RLConfig, SFTConfig
from labkit.kernels import HAVE_TRITON, backend_name
from labkit.models import adapters
from labkit.runs.callbacks import read_jsonl

pytestmark = pytest.mark.smoke


def test_every_training_config_has_the_flag():
    for cls in (SFTConfig, PreferenceConfig, RLConfig):
        assert cls().kernels is False and cls(kernels=True).kernels is True
        assert "labkit.kernels" in cls.help()


def test_load_for_training_patches_all_but_the_lm_head(tiny_model_dir):
    model, _, info = adapters.load_for_training(tiny_model_dir, method="lora", dtype="float32", device="cpu",
                                                kernels=True)
    # the tiny Llama: 2 layers, each 2 RMSNorms, attention (RoPE), an MLP and 7 LoRA linears; a final norm
    assert info["kernels"] == {"rmsnorm": 5, "rope": 2, "swiglu": 2, "lora": 14}
    marks = {getattr(m, "_labkit_kernel", None) for m in model.modules()}
    assert "lm_head" not in marks and {"rmsnorm", "rope", "swiglu", "lora"} <= marks
    _, _, plain = adapters.load_for_training(tiny_model_dir, method="lora", dtype="float32", device="cpu")
    assert "kernels" not in plain


@pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed: the flag would test only torch paths")
def test_sft_with_kernels_gives_the_same_loss_curve(tiny_model_dir, tmp_path, weights_before,
                                                    assert_trained, monkeypatch):
    assert backend_name() == "triton-interpreter"
    # The interpreter's cost is per kernel launch: the forgetting probe before and after training would take
    # most of the test's time, so it scores two of its prompts here.
    from labkit.data.samples import load_sample
    from labkit.metrics import probes

    real_probe, two = probes.forgetting_probe, load_sample("general_prompts")[:2]
    monkeypatch.setattr(probes, "forgetting_probe", lambda model, tok, rows=None: real_probe(model, tok, two))

    def run(kernels: bool):
        cfg = SFTConfig.from_preset(
            "cpu-smoke", model=tiny_model_dir, output_dir=str(tmp_path / str(kernels)), max_steps=4,
            batch_size=4, n_eval=0, eval_split="", dtype="float32", learning_rate=1e-2, kernels=kernels)
        result = sft_stage.train(cfg)
        steps = [e for e in read_jsonl(result.log_path) if e["event"] == "step"]
        return result, [e["loss"] for e in steps], [e["grad_norm"] for e in steps]

    patched, loss, grad = run(True)
    assert_trained(weights_before, patched.model)
    assert patched.metrics["kernels"]["lora"] == 14
    _, loss_plain, grad_plain = run(False)
    # The fp32 kernels do the reference's arithmetic in another order (tests/kernels allow 1e-4 relative per
    # op). Measured here: losses equal to float32's last digit, grad norms within 2e-7 relative (so the
    # kernels did run). 1e-4 leaves room for other CPUs and stays far below the curve's own 1-2% per step.
    assert len(loss) == len(loss_plain) == 4
    assert loss == pytest.approx(loss_plain, rel=1e-4), f"{loss} vs {loss_plain}"
    assert grad == pytest.approx(grad_plain, rel=1e-4), f"{grad} vs {grad_plain}"
