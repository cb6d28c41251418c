"""Memory planner: shapes from configs, the arithmetic's invariants, the plan against measured CPU peaks."""

from __future__ import annotations

import pytest

from labkit.errors import ConfigError
from labkit.rlsys.planner import (
    BUILTIN,
    GB,
    ModelShape,
    Workload,
    measure_peak,
    model_shape,
    plan,
    plan_table,
)


def test_tiny_shape_counts_the_real_tiny_models_parameters(tiny):
    model, _ = tiny
    from_config = model_shape(model.config)
    assert from_config.params() == sum(p.numel() for p in model.parameters())
    assert dataclass_numbers(from_config) == dataclass_numbers(BUILTIN["tiny"])


def dataclass_numbers(shape: ModelShape) -> tuple:
    return (shape.vocab, shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate,
            shape.head_dim, shape.tied, shape.qkv_bias)


@pytest.mark.parametrize("name, published", [("qwen2.5-0.5b", 0.49e9), ("qwen2.5-1.5b", 1.54e9),
                                             ("qwen2.5-7b", 7.61e9), ("smollm2-135m-instruct", 0.135e9)])
def test_builtin_parameter_counts_match_the_model_cards(name, published):
    assert BUILTIN[name].params() == pytest.approx(published, rel=0.01)


def test_local_model_dir_is_read_from_its_config(tiny_model_dir):
    assert model_shape(tiny_model_dir).params() == BUILTIN["tiny"].params()


def test_bad_inputs_name_the_field():
    with pytest.raises(ConfigError, match="model"):
        plan("gpt-17")
    with pytest.raises(ConfigError, match="method"):
        Workload(method="dora")
    with pytest.raises(ConfigError, match="seq_len"):
        Workload(seq_len=0)
    with pytest.raises(ConfigError, match="gpu"):
        plan("tiny", gpu="abacus")
    with pytest.raises(ConfigError, match="intermediate_size"):
        model_shape({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})


def test_parts_move_the_way_the_methods_say():
    full, lora, qlora = (plan("qwen2.5-1.5b", method=m, seq_len=512, batch=2)
                         for m in ("full", "lora", "qlora"))
    assert qlora.parts["weights"] < lora.parts["weights"] / 2
    assert lora.parts["gradients"] < full.parts["gradients"] / 20
    assert lora.parts["optimizer"] < full.parts["optimizer"] / 20   # adapters are a few % of the model
    ckpt = plan("qwen2.5-1.5b", method="lora", seq_len=512, batch=2, checkpointing=True)
    assert ckpt.parts["activations"] < lora.parts["activations"] / 5
    longer = plan("qwen2.5-1.5b", method="lora", seq_len=1024, batch=2)
    assert longer.parts["activations"] == pytest.approx(2 * lora.parts["activations"])
    grpo = plan("qwen2.5-1.5b", method="lora", objective="grpo", batch=2, k=8, seq_len=256, prompt_len=128)
    assert grpo.tokens_per_step == 2 * 8 * (256 + 128) and grpo.parts["rollout_kv"] > 0
    dpo_full = plan("qwen2.5-0.5b", method="full", objective="dpo")
    dpo_lora = plan("qwen2.5-0.5b", method="lora", objective="dpo")
    assert dpo_full.parts["reference"] > 0 and dpo_lora.parts["reference"] == 0   # LoRA disables the adapter
    small = plan("qwen2.5-0.5b", method="qlora", seq_len=512, batch=1)
    assert small.fits() == {8: True, 12: True, 16: True, 24: True}
    assert plan("qwen2.5-7b", method="full", precision="mixed").fits()[24] is False


def test_throughput_estimates_follow_the_card():
    slow = plan("qwen2.5-1.5b", method="qlora", gpu="t4")
    fast = plan("qwen2.5-1.5b", method="qlora", gpu="h100-sxm")
    assert fast.train_tokens_per_s > slow.train_tokens_per_s > 0
    assert fast.decode_tokens_per_s > slow.decode_tokens_per_s > 0
    assert plan("tiny").train_tokens_per_s is None


def test_qlora_table_has_a_row_per_model():
    rows = plan_table(method="qlora", seq_len=512, batch=1)
    assert [r["model"] for r in rows] == ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"]
    assert rows[0]["total"] < rows[1]["total"] < rows[2]["total"] < 24


# Peak training memory on the CPU: parameter bytes + RSS high-water mark growth over two steps, measured in
# a fresh process (labkit.rlsys.planner.measure_peak says how and why). The plan must be within 25%.
@pytest.mark.parametrize("model, batch", [("tiny", 4), ("smollm2-135m-instruct", 2)],
                         ids=["tiny", "embedded"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_plan_is_within_25_percent_of_measured_peak(model, batch, method):
    w = Workload(method=method, objective="sft", seq_len=128, batch=batch, precision="bf16")
    measured = measure_peak(model, w)
    planned = plan(model, w).total
    assert measured["growth"] > 50 * 2 ** 20   # the measurement saw the training happen
    assert planned == pytest.approx(measured["peak"], rel=0.25), (planned / GB, measured)
