"""Serving adapters side by side: a stacked adapter chain equals the chain's merged model, per-request
adapters, refits, engine choice, and the tour's serving stage on a tiny model with the hf engine."""

from __future__ import annotations

import json

import pytest
import torch

from labkit.errors import ConfigError, MissingExtraError
from labkit.infer import HFEngine, SamplingParams
from labkit.infer.engine import EngineError
from labkit.infer.serving import (
    adapter_rank,
    choose_engine,
    first_divergence,
    refit_timings,
    side_by_side,
    stack_adapters,
)

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):"]


@pytest.fixture
def chain(tiny, tmp_path, make_adapter):
    """A two-link chain on the tiny model: adapter 1 on the base, adapter 2 on the model 1 merges into.
    Returns (base model, tokenizer, [adapter dirs], the model the whole chain merges into)."""
    base, tok = tiny
    first = make_adapter(base, tmp_path / "a1", seed=1)
    last = make_adapter(first, tmp_path / "a2", seed=2, r=4)
    return base, tok, [tmp_path / "a1", tmp_path / "a2"], last


def greedy(engine, prompts, adapter=None, n=12):
    return [c.token_ids for c in engine.generate(prompts, SamplingParams(max_new_tokens=n), adapter=adapter)]


def test_stacked_chain_is_the_chain_merged(chain, tmp_path):
    base, tok, paths, merged = chain
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    out = stack_adapters(base_dir, paths, tmp_path / "stacked")
    assert adapter_rank(out) == 8 + 4          # cat: the ranks add up
    engine = HFEngine(base, tok)
    engine.load_adapter("chain", out)
    engine.load_adapter("first", paths[0])
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad(), engine._adapter("chain"):
        got = engine.model(input_ids=ids).logits
    want = merged(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # Per request: base, first link and the whole chain in one call, each as its own model decodes.
    mixed = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12), adapter=[None, "first", "chain"])
    alone = HFEngine(merged, tok).generate([PROMPTS[2]], SamplingParams(max_new_tokens=12))[0]
    assert mixed[2].token_ids == alone.token_ids
    assert [c.adapter for c in mixed] == [None, "first", "chain"]
    assert stack_adapters(base_dir, paths, out) == out   # done once: reused


def test_stack_needs_saved_adapters(tmp_path):
    with pytest.raises(ConfigError, match="at least one"):
        stack_adapters("x", [], tmp_path / "out")
    with pytest.raises(EngineError, match="no adapter_config.json"):
        stack_adapters("x", [tmp_path], tmp_path / "out")


def test_side_by_side_rows_per_adapter_and_question(chain):
    base, tok, paths, _ = chain
    engine = HFEngine(base, tok)
    engine.load_adapter("a1", paths[0])
    rows = side_by_side(engine, ["What is 2 + 3?", "Name a colour."], [None, "a1"], max_new_tokens=6)
    assert [(r["adapter"], r["question"]) for r in rows] == [
        ("base", "What is 2 + 3?"), ("base", "Name a colour."),
        ("a1", "What is 2 + 3?"), ("a1", "Name a colour.")]
    assert all(r["tokens_per_s"] > 0 and 1 <= r["tokens"] <= 6 for r in rows)


def test_refit_moves_the_adapter_and_puts_it_back(chain):
    base, tok, paths, _ = chain
    engine = HFEngine(base, tok)
    engine.load_adapter("a1", paths[0])
    before = greedy(engine, PROMPTS, "a1")
    state = {k: v.clone() for k, v in engine.model.get_base_model().state_dict().items() if "lora_" not in k}
    plain = {k.replace(".base_layer.", "."): v for k, v in state.items()}
    rows = refit_timings(engine, PROMPTS, adapter="a1", base_state=plain, max_new_tokens=12, scale=0.0)
    assert [r["refit"].split(",")[0] for r in rows] == ["adapter 'a1'", "adapter 'a1' restored",
                                                        "base weights (same values)"]
    assert rows[0]["greedy_changed"] and not rows[1]["greedy_changed"] and not rows[2]["greedy_changed"]
    assert greedy(engine, PROMPTS, "a1") == before
    with pytest.raises(EngineError, match="loaded from a saved directory"):
        refit_timings(engine, PROMPTS, adapter="nope")


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def test_choose_engine_falls_back_or_refuses(monkeypatch):
    monkeypatch.setenv("LABKIT_VLLM_PYTHON", "/nonexistent/python")
    kind, why = choose_engine("auto")
    assert kind == "hf" and "make vllm-env" in why
    assert choose_engine("off")[0] == "hf"
    with pytest.raises(MissingExtraError, match="make vllm-env"):
        choose_engine("on")
    with pytest.raises(ConfigError):
        choose_engine("sometimes")


def test_tour_serving_stage_on_a_tiny_chain(chain, tmp_path, monkeypatch):
    """The tour's stage finds the chain's adapters from the merge markers and serves base, SFT and the
    stacked DPO link side by side (hf engine here: the vLLM variant runs in the smoke tour)."""
    from labkit.config import TourConfig
    from labkit.runs.report import Report
    from labkit.tour import TourContext, stage_inference

    monkeypatch.setenv("LABKIT_VLLM_PYTHON", "/nonexistent/python")
    base, tok, paths, _ = chain
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    sft_merged, dpo_merged = tmp_path / "sft" / "merged", tmp_path / "dpo" / "merged"
    for merged, parent, adapter in ((sft_merged, base_dir, paths[0]), (dpo_merged, sft_merged, paths[1])):
        merged.mkdir(parents=True)
        (merged / "labkit_merge.json").write_text(json.dumps({"base": str(parent), "adapter": str(adapter),
                                                              "scale": 1.0}))
    ctx = TourContext(TourConfig(preset="cpu-smoke", model=str(base_dir), out_dir=str(tmp_path)), tmp_path,
                      chain={"sft": sft_merged, "dpo": dpo_merged})
    report = Report("test")
    metrics = stage_inference(ctx, report)
    assert metrics["serve_engine"] == "hf"
    assert {k for k in metrics if k.endswith("_tokens_per_s")} == {
        "serve_base_tokens_per_s", "serve_sft_tokens_per_s", "serve_dpo_tokens_per_s"}
    assert adapter_rank(tmp_path / "serve" / "dpo-stacked") == 12
    html = report.save(tmp_path / "report.html").read_text()
    assert ">Serving: the adapters side by side<" in html and "DPO (stacked)" in html


def test_background_start_fails_on_first_request(monkeypatch, tiny_model_dir, tmp_path):
    """wait=False returns at once; a server that dies while loading is reported by the first request."""
    import sys

    from labkit.infer import VLLMEngine

    monkeypatch.setenv("LABKIT_VLLM_PYTHON", sys.executable)   # labkit's venv has no vllm module
    if "vllm" in sys.modules:
        pytest.skip("this interpreter imports vllm")
    engine = VLLMEngine(tiny_model_dir, run_dir=tmp_path, start_timeout=120, wait=False)
    assert engine.start_seconds is None
    with pytest.raises(EngineError, match="exited with code"):
        engine.generate(["hi"], SamplingParams(max_new_tokens=2))
    engine.close()
