"""Notebook 09's serving views: completion rows, the sampling panel driven through its sliders, the rollout
timing figure."""

from __future__ import annotations

import html
import math

import pytest

from labkit.dash.serving import SamplingPanel, completion_rows, rollout_figure
from labkit.infer import Completion, HFEngine, SamplingParams


def test_completion_rows_keep_every_field_and_skip_a_put_back_eos():
    rows = completion_rows([Completion(0, [5, 6, 2], "hi", "stop", [-1.0, -2.0, math.nan], "sft"),
                            Completion(1, list(range(20)), "long", "length")], tokens_shown=4)
    assert rows[0] == {"prompt": 0, "adapter": "sft", "finish": "stop", "tokens": 3, "token_ids": [5, 6, 2],
                       "mean_logprob": -1.5, "text": "hi"}
    assert rows[1]["adapter"] == "base" and rows[1]["token_ids"] == [0, 1, 2, 3]
    assert rows[1]["mean_logprob"] is None


def test_sampling_panel_regenerates_when_a_slider_moves(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    panel = SamplingPanel(engine, "What is 2 + 3?", max_new_tokens=6)
    greedy = panel.generate()
    prompt = panel.prompt
    want = engine.generate([prompt], SamplingParams(max_new_tokens=6))[0].text
    assert greedy == want
    ui = panel.widget
    sliders = {c.description: c for c in ui.children[:-1]}
    sliders["max tokens"].value = 2                      # a slider change regenerates through the engine
    assert panel.settings["max_new_tokens"] == 2
    assert panel.text == engine.generate([prompt], SamplingParams(max_new_tokens=2))[0].text
    assert html.escape(panel.text) in ui.children[-1].value     # the answer shown is the new one
    sliders["temperature"].value = 1.0
    sampled = panel.generate(seed=3)
    assert panel.generate(seed=3) == sampled                 # a seed makes a sample repeatable
    with pytest.raises(TypeError, match="unknown settings"):
        panel.generate(temprature=0.5)


def test_rollout_figure_stacks_the_three_costs():
    fig = rollout_figure([{"step": 0, "refit_seconds": 0.1, "generate_seconds": 2.0, "check_seconds": 0.5},
                          {"step": 1, "refit_seconds": 0.2, "generate_seconds": 1.5}])
    assert [t.name for t in fig.data] == ["refit (policy pushed)", "generate", "log-prob check"]
    assert list(fig.data[2].y) == [0.5, 0.0]
