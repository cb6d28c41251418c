"""Tests for the LoRA lab widgets (labkit.dash.lora), built and driven headless."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ipywidgets")

from labkit.dash import lora as D  # noqa: E402
from labkit.models import lora as L  # noqa: E402


def test_lora_math_default_model_is_smollm2_135m():
    v = D.lora_math(8, 16)
    assert v["total"] == 134_515_008
    # q: 576→576, v: 576→192, 30 layers
    assert v["trainable"] == 30 * 8 * ((576 + 576) + (576 + 192))
    assert v["W_shape"] == (576, 576) and v["A_shape"] == (8, 576) and v["B_shape"] == (576, 8)
    assert v["scale"] == 2.0
    mem = v["memory"]
    assert mem["qlora"]["total"] < mem["lora"]["total"] < mem["full"]["total"]


def test_lora_math_widget_updates_when_sliders_move():
    w = D.lora_math_widget()
    before = dict(w.values)
    assert f"{before['trainable']:,}" in w.static_html()
    w.r.value = 16
    assert w.values["trainable"] == 2 * before["trainable"]
    assert w.values["scale"] == 1.0
    assert f"{w.values['trainable']:,}" in w.static_html()
    assert w.values["B_shape"] == (576, 16)
    w.alpha.value = 64
    assert w.values["scale"] == 4.0 and "= 4" in w.static_html()
    w.targets.value = "all-linear"
    assert w.values["trainable"] > 2 * before["trainable"]
    assert w.values["memory"]["lora"]["optimizer"] == 8 * w.values["trainable"]


def test_scale_slider_regenerates_on_change(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    torch.manual_seed(1)
    pm = get_peft_model(model,
                        LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    s = D.scale_slider(pm, tok, "Hello", max_new_tokens=6)
    assert s.slider.value == 1.0 and 1.0 in s.history
    adapter_reply = s.reply
    s.slider.value = 0.0
    assert L.adapter_scale(pm) == 0.0
    with pm.disable_adapter():
        from labkit.models import generate

        base_reply = generate(pm, tok, ["Hello"], max_new_tokens=6)[0].text
    assert s.reply == base_reply and s.history[0.0] == base_reply
    assert base_reply != adapter_reply  # a strong random adapter changes the greedy reply
    assert "× 0" in s.out.value
    s.slider.value = 0.5
    s.slider.value = 0.5  # no change event; scale stays 0.5, not 0.25
    assert L.adapter_scale(pm) == pytest.approx(0.5)
    assert "scale 0.5:" in s.table()
    s.reset()
    assert L.adapter_scale(pm) == 1.0
