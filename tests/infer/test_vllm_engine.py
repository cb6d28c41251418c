"""The vllm engine against the hf engine: same greedy tokens and log-probs (fp32), multi-LoRA, refit, errors.

The server tests run when a vLLM interpreter exists (`make vllm-env` builds .venv-vllm; see
labkit.infer.vllm_python) and skip otherwise. One server on a tiny random model serves the whole module.
"""

from __future__ import annotations

import sys

import pytest
import torch

from labkit.errors import MissingExtraError
from labkit.infer import EngineError, HFEngine, SamplingParams, VLLMEngine, vllm_available

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):", "Once upon a time there was a tiny"]
needs_vllm = pytest.mark.skipif(not vllm_available(), reason="no vLLM environment: run `make vllm-env`")


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (or of the shorter one's end), None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def assert_same_tokens(got, want, what: str):
    where = {i: first_divergence(g, w) for i, (g, w) in enumerate(zip(got, want))}
    bad = {i: pos for i, pos in where.items() if pos is not None}
    assert not bad, f"{what}: first divergence position per prompt {bad}"


def test_missing_vllm_names_the_install_command(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("LABKIT_VLLM_PYTHON", "/nonexistent/python")
    with pytest.raises(MissingExtraError, match="make vllm-env"):
        VLLMEngine(tiny_model_dir)


def test_failed_start_reports_the_log(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setenv("LABKIT_VLLM_PYTHON", sys.executable)   # labkit's venv has no vllm module
    if vllm_available() and "vllm" in sys.modules:
        pytest.skip("this interpreter imports vllm")
    with pytest.raises(EngineError, match="exited with code") as err:
        VLLMEngine(tiny_model_dir, run_dir=tmp_path, start_timeout=120)
    assert "vllm.log" in str(err.value) and (tmp_path / "vllm.log").exists()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tokenizer, make_adapter):
    """(engine, hf model, {adapter: (dir, merged model)}): one server on a tiny random Llama whose head
    size is 32, the smallest that vLLM's CPU attention takes."""
    from labkit.models import tiny_model

    root = tmp_path_factory.mktemp("vllm-tiny")
    model, _ = tiny_model(tokenizer, hidden=128, seed=11)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    adapters = {name: (str(root / name), make_adapter(model, root / name, seed=seed))
                for seed, name in enumerate(("sft", "dpo"), start=1)}
    engine = VLLMEngine(root / "model", dtype="float32", max_model_len=256, max_loras=2, max_lora_rank=8,
                        max_num_seqs=16, kv_cache_gb=1, run_dir=root / "run")
    yield engine, model, adapters
    engine.close()


def hf_greedy(model, tokenizer, n=16, **kw):
    return HFEngine(model, tokenizer).generate(PROMPTS, SamplingParams(max_new_tokens=n, **kw))


@needs_vllm
def test_server_started_on_loopback_and_logs_to_the_run_dir(served):
    engine, _, _ = served
    assert engine.url.startswith("http://127.0.0.1:") and engine.start_seconds > 0
    assert engine.log_path.exists() and engine.log_path.stat().st_size > 0


@needs_vllm
def test_greedy_tokens_and_logprobs_match_the_hf_engine_fp32(served, tokenizer):
    engine, model, _ = served
    want = hf_greedy(model, tokenizer, logprobs=True)
    got = engine.generate(PROMPTS, SamplingParams(max_new_tokens=16, logprobs=True))
    assert_same_tokens([c.token_ids for c in got], [c.token_ids for c in want], "vllm vs hf greedy")
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    worst = max((torch.tensor(g.logprobs) - torch.tensor(w.logprobs)).abs().max().item()
                for g, w in zip(got, want))
    assert worst < 1e-3, f"max |log-prob difference| vllm vs hf: {worst:.2e}"


@needs_vllm
def test_multi_lora_each_adapter_equals_its_merged_model(served, tokenizer):
    engine, model, adapters = served
    for name, (path, _) in adapters.items():
        engine.load_adapter(name, path)
    for name, (_, merged) in adapters.items():
        got = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12), adapter=name)
        want = hf_greedy(merged, tokenizer, n=12)
        assert_same_tokens([c.token_ids for c in got], [c.token_ids for c in want], f"adapter {name}")
    mixed = engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=12), adapter=["dpo", None, "sft"])
    assert [c.adapter for c in mixed] == ["dpo", None, "sft"]
    assert mixed[0].token_ids == hf_greedy(adapters["dpo"][1], tokenizer, n=12)[0].token_ids
    assert mixed[1].token_ids == hf_greedy(model, tokenizer, n=12)[1].token_ids
    assert mixed[2].token_ids == hf_greedy(adapters["sft"][1], tokenizer, n=12)[2].token_ids


@needs_vllm
def test_adapter_hot_reload_without_restart(served, tokenizer):
    engine, _, adapters = served
    engine.update_weights(adapter="swap", path=adapters["sft"][0])
    engine.update_weights(adapter="swap", path=adapters["dpo"][0])   # same name, new weights
    got = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12), adapter="swap")
    want = hf_greedy(adapters["dpo"][1], tokenizer, n=12)
    assert_same_tokens([c.token_ids for c in got], [c.token_ids for c in want], "reloaded adapter")


@needs_vllm
def test_full_weight_refit_in_place(served, tokenizer):
    from labkit.models import tiny_model

    engine, model, _ = served
    other, _ = tiny_model(tokenizer, hidden=128, seed=12)
    try:
        engine.update_weights(other.state_dict())
        got = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12))
        want = hf_greedy(other, tokenizer, n=12)
        assert_same_tokens([c.token_ids for c in got], [c.token_ids for c in want], "refit weights")
    finally:
        engine.update_weights(model.state_dict())
