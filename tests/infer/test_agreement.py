"""Train–serve agreement: sampled engine log-probs equal the trainer's forward pass in fp32 under either
padding, the statistics mean what they say, and batch composition does not move fp32 greedy decoding.

(tests/infer/test_hf_engine.py checks greedy and sampled hf-engine log-probs against
labkit.models.logprobs directly; these go through labkit.infer.agreement.)"""

from __future__ import annotations

import math

import pytest
import torch

from labkit.infer import HFEngine, SamplingParams
from labkit.infer import agreement as ag

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):", "Once upon a time there was a tiny",
           "Water boils at"]


@pytest.mark.parametrize("padding", ["right", "left"])
def test_hf_engine_agrees_with_the_trainer_within_1e4_in_fp32(tiny, padding):
    model, tok = tiny
    sampling = SamplingParams(temperature=1.0, max_new_tokens=12, seed=1)
    res = ag.engine_vs_trainer(HFEngine(model, tok), model, tok, PROMPTS, sampling, padding_side=padding)
    assert res["tokens"] == sum(len(seq) for seq in res["per_token"]) > 0
    assert res["max_abs"] < 1e-4 and res["ratio_max_dev"] < 1e-4
    assert res["clipped"] == 0.0 and abs(res["kl_k1"]) < 1e-4
    assert len(ag.ratio_figure(res).data) == 1


def test_stats_on_known_numbers():
    engine = [[-1.0, -2.0], [-0.5]]
    trainer = [torch.tensor([-1.0, -2.0 + math.log(1.5)]), torch.tensor([-0.5 - math.log(2.0)])]
    s = ag.agreement_stats(engine, trainer, eps=0.2)
    assert s["tokens"] == 3
    assert s["max_abs"] == pytest.approx(math.log(2.0))
    assert s["ratio_max_dev"] == pytest.approx(0.5)            # ratios 1, 1.5, 0.5
    assert s["ratio_mean_dev"] == pytest.approx(1 / 3)
    assert s["clipped"] == pytest.approx(2 / 3)
    assert s["kl_k1"] == pytest.approx((0 - math.log(1.5) + math.log(2.0)) / 3)
    assert s["kl_k3"] > 0
    with pytest.raises(Exception, match="log-probs"):
        ag.agreement_stats([[-1.0]], [torch.tensor([-1.0, -2.0])])


def test_fp32_greedy_is_batch_invariant(tiny):
    model, tok = tiny
    rows = ag.batch_invariance(model, tok, PROMPTS[0], PROMPTS[1:], sizes=(1, 2, 8), max_new_tokens=10)
    assert [r["batch_size"] for r in rows] == [1, 2, 8]
    assert all(r["same_tokens"] and r["max_abs"] < 1e-4 for r in rows)
    assert rows[0]["max_abs"] == 0.0
    assert len(ag.batch_invariance_figure(rows).data) == 1


def test_sweep_fp32_agrees_and_bf16_does_not(tiny):
    model, tok = tiny
    settings = [{"dtype": "float32", "attn": "eager", "padding": "right"},
                {"dtype": "bfloat16", "attn": "sdpa", "padding": "right", "trainer_dtype": "float32"}]
    rows = ag.agreement_sweep(model, tok, PROMPTS, settings,
                              sampling=SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))
    assert [(r["engine_dtype"], r["trainer_dtype"], r["attn"]) for r in rows] == \
        [("float32", "float32", "eager"), ("bfloat16", "float32", "sdpa")]
    assert rows[0]["max_abs"] < 1e-4
    assert rows[1]["max_abs"] > 100 * max(rows[0]["max_abs"], 1e-7)
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa"   # untouched
    assert len(ag.agreement_figure(rows).data) == 2
