"""Tests for the LoRA merging lab (labkit.models.lora) on tiny random Llamas, fp32 and 4-bit NF4."""

from __future__ import annotations

import math

import pytest
import torch

from labkit.errors import ConfigError
from labkit.models import lora as L

QV = ["q_proj", "v_proj"]


def _peft(model, name: str = "cats", seed: int = 1, r: int = 4, targets=QV):
    """Wrap `model` with a LoRA whose B is random (not PEFT's zero init),
    so the adapter changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False)
    return get_peft_model(model, cfg, adapter_name=name)


def _add(peft_model, name: str, seed: int, r: int = 4, targets=QV):
    from peft import LoraConfig

    torch.manual_seed(seed)
    peft_model.add_adapter(name,
                           LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, init_lora_weights=False))


def _ids(n: int = 10) -> torch.Tensor:
    return torch.randint(0, 1000, (2, n), generator=torch.Generator().manual_seed(0))


def _base_logits(pm, ids):
    with pm.disable_adapter():
        return L._logits(pm, ids)


# --- LoRA maths ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("targets", [QV, "all-linear"])
def test_param_count_is_sum_of_r_in_plus_out(tiny, targets):
    model, _ = tiny
    c = model.config
    h, inter = c.hidden_size, c.intermediate_size
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    # Llama linears as (in, out), written out from the config rather than read from the modules.
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    chosen = shapes if targets == "all-linear" else {k: shapes[k] for k in targets}
    r = 8
    expected = c.num_hidden_layers * sum(r * (i + o) for i, o in chosen.values())
    got = L.lora_param_count(model, r, targets)
    assert got["trainable"] == expected
    assert got["total"] == sum(p.numel() for p in model.parameters())
    assert got["percent"] == pytest.approx(100 * expected / got["total"])
    # PEFT agrees, and the count is the same on the model once it is wrapped.
    pm = _peft(model, r=r, targets=targets)
    trainable, _ = pm.get_nb_trainable_parameters()
    assert trainable == expected
    assert L.lora_param_count(pm, r, targets)["trainable"] == expected


def test_param_count_rejects_unknown_target(tiny):
    with pytest.raises(ConfigError, match="target_modules"):
        L.lora_param_count(tiny[0], 4, ["nope"])


def test_memory_estimate_arithmetic():
    full = L.memory_estimate(1000, 10, "full", dtype_bytes=2)
    assert full == {"weights": 2000, "grads": 2000, "optimizer": 8000, "total": 12000}
    lora = L.memory_estimate(1000, 10, "lora", dtype_bytes=2)
    assert lora == {"weights": 2000 + 40, "grads": 40, "optimizer": 80, "total": 2160}
    q = L.memory_estimate(1000, 10, "qlora", dtype_bytes=2, quantized_params=800)
    per = 0.5 + 1 / 64 + 4 / (64 * 256)  # NF4 nibble + 8-bit absmax per 64 + fp32 per 256 blocks
    assert q["weights"] == pytest.approx(800 * per + 200 * 2 + 40)
    no_dq = L.memory_estimate(1000, 10, "qlora", dtype_bytes=2, double_quant=False)
    assert no_dq["weights"] == pytest.approx(1000 * (0.5 + 4 / 64) + 40)
    assert L.memory_estimate(1000, 10, "lora", optimizer="adamw_8bit")["optimizer"] == 20
    with pytest.raises(ConfigError, match="mode"):
        L.memory_estimate(1000, 10, "half")


# --- merge --------------------------------------------------------------------------------------------------

def test_merge_check_fp32_including_reload(tiny, tmp_path):
    pm = _peft(tiny[0])
    ids = _ids()
    before = L._logits(pm, ids)
    assert (before - _base_logits(pm, ids)).abs().max() > 1e-2  # the adapter does something
    check = L.merge_safety_check(pm, ids, reload_dir=tmp_path / "merged")
    assert check.passed, str(check)
    assert check.max_logit_diff < 1e-4 and check.reload_diff is not None and check.reload_diff < 1e-4
    assert check.rounding_error is None and not check.quantized
    assert (tmp_path / "merged" / "model.safetensors").exists()
    # The PeftModel was not merged or altered by the check.
    assert torch.equal(L._logits(pm, ids), before)


def test_merge_check_bf16_uses_the_looser_threshold(tokenizer):
    from labkit.models import tiny_model

    model, _ = tiny_model(tokenizer, dtype=torch.bfloat16)
    pm = _peft(model, targets="all-linear")
    check = L.merge_safety_check(pm, _ids())
    # PEFT keeps the adapter in fp32; the threshold follows the base weights' dtype.
    assert check.dtype == "bfloat16" and check.threshold == L.MERGE_TOLERANCE[torch.bfloat16]
    assert check.passed, str(check)
    assert check.max_logit_diff > 0  # storing W + ΔW in bf16 does round


def test_merge_returns_copy_and_merged_context_restores_exactly(tiny):
    from peft import PeftModel

    pm = _peft(tiny[0])
    ids = _ids()
    before = L._logits(pm, ids)
    m = L.merge(pm)
    assert not isinstance(m, PeftModel) and isinstance(pm, PeftModel)
    assert (L._logits(m, ids) - before).abs().max() < 1e-4
    assert torch.equal(L._logits(pm, ids), before)
    w0 = pm.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    with L.merged(pm):
        assert (L._logits(pm, ids) - before).abs().max() < 1e-4
        with pytest.raises(ConfigError, match="merged"):
            L.scale_adapter(pm, 0.5)
    assert torch.equal(pm.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, w0)
    assert torch.equal(L._logits(pm, ids), before)


def test_merged_copy_runs_its_own_weights_when_forward_was_patched(tiny):
    """Trainers (TRL's fused LM head, accelerate's autocast) replace `forward` on the instance with a closure
    over the original model; a deep copy must not keep calling that original, or merge checks compare the
    unmerged model with itself."""
    import types

    pm = _peft(tiny[0])
    inner, calls = pm.get_base_model(), []
    original = inner.forward

    def patched(self, *args, **kwargs):
        calls.append(self)
        return original(*args, **kwargs)

    inner.forward = types.MethodType(patched, inner)
    ids = _ids()
    check = L.merge_safety_check(pm, ids)
    assert check.passed, str(check)
    assert len(calls) == 1  # the unmerged reference only; the merged copy ran its own forward
    calls.clear()
    L._logits(L.merge(pm), ids)
    assert not calls
    assert "forward" in inner.__dict__  # the caller's model keeps its patch


def test_merge_check_threshold_follows_lower_precision_adapters(tiny):
    pm = _peft(tiny[0])
    for m in L._lora_layers(pm):  # fp32 base, bf16 adapters (as PEFT leaves them on a bnb 4-bit base on CPU)
        m.lora_A.to(torch.bfloat16)
        m.lora_B.to(torch.bfloat16)
    check = L.merge_safety_check(pm, _ids())
    assert check.threshold == L.MERGE_TOLERANCE[torch.bfloat16]
    assert check.dtype == "float32, bfloat16 adapters" and check.passed, str(check)
    assert L.merge_safety_check(pm, _ids(), threshold=1e-9).threshold == 1e-9  # an explicit threshold wins


# --- scaling ------------------------------------------------------------------------------------------------

def test_scale_zero_is_base_one_is_adapter_and_idempotent(tiny):
    pm = _peft(tiny[0])
    ids = _ids()
    adapter, base = L._logits(pm, ids), _base_logits(pm, ids)
    assert L.adapter_scale(pm) == 1.0
    L.scale_adapter(pm, 0.0)
    assert torch.equal(L._logits(pm, ids), base)
    L.scale_adapter(pm, 1.0)
    assert torch.equal(L._logits(pm, ids), adapter)
    L.scale_adapter(pm, 0.5)
    half = L._logits(pm, ids)
    L.scale_adapter(pm, 0.5)
    assert L.adapter_scale(pm) == pytest.approx(0.5)
    assert torch.equal(L._logits(pm, ids), half)
    assert not torch.equal(half, adapter) and not torch.equal(half, base)
    with pytest.raises(ConfigError, match="'adapter'"):
        L.scale_adapter(pm, 1.0, adapter="missing")


# --- blending -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["linear", "ties"])
def test_blend_makes_a_new_active_adapter_unlike_its_parents(tiny, method):
    pm = _peft(tiny[0], "cats", seed=1)
    _add(pm, "dogs", seed=2)
    ids = _ids()
    pm.set_adapter("cats")
    la = L._logits(pm, ids)
    pm.set_adapter("dogs")
    lb = L._logits(pm, ids)
    name = L.blend(pm, ["cats", "dogs"], [0.5, 0.5], method=method, density=0.5)
    assert name in pm.peft_config and pm.active_adapter == name
    lm = L._logits(pm, ids)
    assert (lm - la).abs().max() > 1e-4 and (lm - lb).abs().max() > 1e-4
    assert L.adapter_scale(pm, name) == pytest.approx(1.0)


def test_blend_validation_names_the_bad_field(tiny):
    pm = _peft(tiny[0], "cats", seed=1)
    _add(pm, "dogs", seed=2)
    _add(pm, "wide", seed=3, r=8)
    cases = [
        (dict(adapters=["cats", "dogs"], weights=[1, 1], method="average"), "method"),
        (dict(adapters=["cats", "dogs"], weights=[1.0]), "weights"),
        (dict(adapters=["cats", "zz"], weights=[1, 1]), "adapters"),
        (dict(adapters=["cats", "dogs"], weights=[1, 1], method="ties", density=0.0), "density"),
        (dict(adapters=["cats", "wide"], weights=[1, 1], method="linear"), "adapters"),
        (dict(adapters=["cats", "dogs"], weights=[1, 1], name="dogs"), "name"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ConfigError) as e:
            L.blend(pm, **kwargs)
        assert e.value.field == field, (kwargs, str(e.value))
    # Different ranks are fine for svd / cat.
    assert L.blend(pm, ["cats", "wide"], [1, 1], method="cat") == "cat_cats_wide"


# --- side by side -------------------------------------------------------------------------------------------

def test_compare_adapters_one_row_per_prompt_one_column_per_adapter(tiny):
    model, tok = tiny
    pm = _peft(model, "cats", seed=1)
    _add(pm, "dogs", seed=2)
    pm.set_adapter("dogs")
    rows = L.compare_adapters(pm, tok, ["Hi", "What is 2+2?"], [None, "cats", "dogs"], max_new_tokens=4)
    assert len(rows) == 2
    assert all(list(r) == ["prompt", "base", "cats", "dogs"] for r in rows)
    assert [r["prompt"] for r in rows] == ["Hi", "What is 2+2?"]
    assert all(isinstance(r[c], str) for r in rows for c in ("base", "cats", "dogs"))
    assert pm.active_adapter == "dogs"
    with pytest.raises(ConfigError, match="adapters"):
        L.compare_adapters(pm, tok, ["Hi"], ["cats", "cats"], max_new_tokens=2)


# --- export -------------------------------------------------------------------------------------------------

def test_export_merged_reloads_and_refuses_non_empty_dir(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    pm = _peft(model)
    ids = _ids()
    out = L.export_merged(pm, tok, tmp_path / "export")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert (L._logits(reloaded, ids) - L._logits(pm, ids)).abs().max() < 1e-4
    with pytest.raises(ConfigError, match="out_dir"):
        L.export_merged(pm, tok, out)
    L.scale_adapter(pm, 0.0)  # overwrite with what is now the base model
    L.export_merged(pm, tok, out, overwrite=True)
    again = AutoModelForCausalLM.from_pretrained(out)
    assert (L._logits(again, ids) - _base_logits(pm, ids)).abs().max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp dirs left over


def test_export_merged_is_atomic_when_saving_fails(tiny, tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    model, tok = tiny
    pm = _peft(model)

    def half_save(self, save_directory, **kwargs):
        (save_directory / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", half_save)
    with pytest.raises(OSError, match="disk full"):
        L.export_merged(pm, tok, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


# --- 4-bit (QLoRA) base -------------------------------------------------------------------------------------

def test_merge_check_on_4bit_base_reports_rounding_error(tiny, tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model, _ = tiny
    model.save_pretrained(tmp_path / "base")
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    m4 = AutoModelForCausalLM.from_pretrained(tmp_path / "base", quantization_config=q, device_map="cpu")
    assert L.is_quantized(m4)
    ids = _ids()
    with torch.no_grad():  # on AVX-512 BF16 CPUs this repacks the weights, which merging must undo
        m4(ids)
    pm = _peft(m4)
    check = L.merge_safety_check(pm, ids, reload_dir=tmp_path / "merged")
    assert check.quantized
    assert check.passed, str(check)
    assert check.max_logit_diff < 1e-4 and check.reload_diff < 1e-4
    assert math.isfinite(check.rounding_error) and check.rounding_error > 1e-4
    # In-place merge into NF4 also re-quantises; leaving the block restores the 4-bit weights exactly.
    before = L._logits(pm, ids)
    with L.merged(pm):
        assert (L._logits(pm, ids) - before).abs().max() > 1e-4
    assert torch.equal(L._logits(pm, ids), before)


def test_load_adapters_puts_several_on_one_base(tiny, tmp_path):
    from peft import get_peft_model

    from labkit.errors import ConfigError
    from labkit.models import tiny_model
    from labkit.models.adapters import lora_config
    from labkit.models.lora import load_adapters

    model, tok = tiny
    dirs = {}
    for name, seed in (("cats", 1), ("dogs", 2)):
        torch.manual_seed(seed)
        base, _ = tiny_model(tok)
        peft = get_peft_model(base, lora_config(4, 8, 0.0, "q_proj,v_proj", seed_init=False))
        peft.save_pretrained(tmp_path / name)
        dirs[name] = tmp_path / name
    both = load_adapters(model, dirs)
    assert set(both.peft_config) == {"cats", "dogs"} and both.active_adapter == "cats"
    with pytest.raises(ConfigError, match="adapters"):
        load_adapters(model, {})
