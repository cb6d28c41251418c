"""The vllm engine against the hf engine: same greedy tokens and log-probs (fp32), multi-LoRA, refit, errors.

The server tests run when a vLLM interpreter exists (`make vllm-env` builds .venv-vllm; see
labkit.infer.vllm_python) and skip otherwise. They share the session's one server on the embedded model
(tests/conftest.py's `vllm_engine`) and compare it with the hf engine on the same weights in fp32; a
mismatch names the first diverging token position of each prompt.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from labkit.errors import MissingExtraError
from labkit.infer import EngineError, HFEngine, SamplingParams, VLLMEngine, vllm_available

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):", "Once upon a time there was a tiny"]
# Under CI the `vllm_engine` fixture fails instead: there the vLLM tests must run.
needs_vllm = pytest.mark.skipif(not vllm_available() and not os.environ.get("CI"),
                                reason="no vLLM environment: run `make vllm-env`")


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
def served(vllm_engine, tmp_path_factory, make_adapter):
    """(engine, hf model, {adapter: (dir, merged model)}): the shared server, the embedded model in fp32 as
    the hf engine runs it, and two random q/v adapters with the models they merge into."""
    from labkit.models import load_model

    root = tmp_path_factory.mktemp("adapters")
    model, _ = load_model(dtype="float32")
    model.eval()
    adapters = {name: (str(root / name), make_adapter(model, root / name, seed=seed, scale=2.0))
                for seed, name in enumerate(("sft", "dpo"), start=1)}
    return vllm_engine, model, adapters


def hf_greedy(model, tokenizer, n=16, **kw):
    return HFEngine(model, tokenizer).generate(PROMPTS, SamplingParams(max_new_tokens=n, **kw))


def greedy_ids(engine, n=12, **kw) -> list[list[int]]:
    return [c.token_ids for c in engine.generate(PROMPTS, SamplingParams(max_new_tokens=n), **kw)]


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
    worst = max((torch.tensor(g.logprobs) - torch.tensor(w.logprobs)).abs().nan_to_num().max().item()
                for g, w in zip(got, want))
    assert worst < 1e-3, f"max |log-prob difference| vllm vs hf: {worst:.2e}"


@pytest.fixture(scope="module")
def base_greedy(served, tokenizer) -> list[list[int]]:
    """The hf engine's 12 greedy tokens per prompt on the base model (computed once)."""
    return [c.token_ids for c in hf_greedy(served[1], tokenizer, n=12)]


@needs_vllm
def test_multi_lora_each_adapter_equals_its_merged_model(served, tokenizer, base_greedy):
    engine, _, adapters = served
    for name, (path, _) in adapters.items():
        engine.load_adapter(name, path)
    want = {name: [c.token_ids for c in hf_greedy(merged, tokenizer, n=12)]
            for name, (_, merged) in adapters.items()}
    for name in adapters:
        got = greedy_ids(engine, adapter=name)
        assert_same_tokens(got, want[name], f"adapter {name}")
        assert got != base_greedy, f"adapter {name} did not change the greedy output: the test proves nothing"
    # One call, three adapters (the base model included): each prompt answered by its own.
    mixed = engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=12), adapter=["dpo", None, "sft"])
    assert [c.adapter for c in mixed] == ["dpo", None, "sft"]
    assert_same_tokens([c.token_ids for c in mixed], [want["dpo"][0], base_greedy[1], want["sft"][2]],
                       "adapters mixed in one call")


@needs_vllm
def test_adapter_hot_reload_without_restart(served, tokenizer):
    engine, _, adapters = served
    engine.update_weights(adapter="swap", path=adapters["sft"][0])
    engine.update_weights(adapter="swap", path=adapters["dpo"][0])   # same name, new weights
    got = greedy_ids(engine, adapter="swap")
    want = hf_greedy(adapters["dpo"][1], tokenizer, n=12)
    assert_same_tokens(got, [c.token_ids for c in want], "reloaded adapter")
    engine.unload_adapter("swap")
    with pytest.raises(EngineError, match="not loaded"):
        engine.generate(PROMPTS[:1], adapter="swap")


@needs_vllm
def test_refit_pushes_a_training_step_adapter_and_matches_the_hf_engine(served, tokenizer, tmp_path):
    """A PEFT policy takes an optimizer step; its adapter state dict goes into the running engine (timed, no
    restart); greedy outputs then equal the hf engine's on that policy, and differ from those before."""
    import copy

    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    engine, model, _ = served
    torch.manual_seed(0)
    policy = get_peft_model(copy.deepcopy(model), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                            init_lora_weights=False))
    policy.eval()
    hf = HFEngine(policy, tokenizer)      # the trained PEFT model itself, its adapter active
    policy.save_pretrained(str(tmp_path / "step0"))
    engine.load_adapter("policy", tmp_path / "step0")
    before = greedy_ids(engine, adapter="policy")      # also fills the prefix cache under the old weights
    assert_same_tokens(before, greedy_ids(hf), "adapter at step 0")

    # One SGD step that makes the policy prefer a fixed reply.
    batch = tokenizer([p + " banana banana banana" for p in PROMPTS], return_tensors="pt", padding=True)
    loss = policy(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    policy.zero_grad()

    seconds = engine.update_weights(get_peft_model_state_dict(policy), adapter="policy")
    assert 0 < seconds < 60
    after = greedy_ids(engine, adapter="policy")
    assert_same_tokens(after, greedy_ids(hf), "adapter after a refit")
    assert after != before, "the step did not change the greedy output: the test proves nothing"

    # The same adapter saved over the directory it was first loaded from, reloaded by path twice.
    policy.save_pretrained(str(tmp_path / "step0"))
    engine.update_weights(adapter="policy", path=tmp_path / "step0")
    engine.update_weights(adapter="policy", path=tmp_path / "step0")
    assert_same_tokens(greedy_ids(engine, adapter="policy"), after, "adapter reloaded from the same path")
    engine.unload_adapter("policy")


@needs_vllm
def test_base_weight_refit_in_place(served, tokenizer, base_greedy):
    engine, model, _ = served
    names = ["model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.o_proj.weight"]
    weights = model.state_dict()
    original = {k: weights[k].detach().clone() for k in names}
    try:
        with torch.no_grad():
            for k in names:
                weights[k].mul_(-3.0)
        seconds = engine.update_weights({k: weights[k] for k in names})   # a subset of the weights is enough
        assert seconds > 0
        got = greedy_ids(engine)
        assert_same_tokens(got, [c.token_ids for c in hf_greedy(model, tokenizer, n=12)], "refit weights")
        assert got != base_greedy, "the refit changed nothing: the test proves nothing"
    finally:
        with torch.no_grad():
            for k in names:
                weights[k].copy_(original[k])
        engine.update_weights(original)
    assert_same_tokens(greedy_ids(engine), base_greedy, "weights put back")
