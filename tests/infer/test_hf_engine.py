"""The hf engine: trainer-exact log-probs, static = continuous batching, multi-LoRA = merged, refit."""

from __future__ import annotations

import pytest
import torch

from labkit.errors import ConfigError
from labkit.infer import Completion, Engine, EngineError, HFEngine, SamplingParams
from labkit.models.generate import generate as plain_generate
from labkit.models.logprobs import masked_token_logps

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):", "Once upon a time there was a tiny"]


def greedy_ids(model, tok, prompts, n):
    out = plain_generate(model, tok, prompts, max_new_tokens=n, chat=False)
    return [g.token_ids for g in out]


def test_engine_follows_the_protocol(tiny):
    assert isinstance(HFEngine(*tiny), Engine)


def test_greedy_matches_plain_generate_and_returns_in_prompt_order(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok, batch_size=3)   # 4 prompts: two batches, sorted by length inside
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10))
    assert [c.prompt_index for c in out] == [0, 1, 2, 3]
    assert [c.token_ids for c in out] == greedy_ids(model, tok, PROMPTS, 10)
    assert all(c.finish_reason in ("stop", "length") and c.logprobs is None for c in out)


def test_logprobs_match_the_trainer_forward_pass(tiny):
    """Per-token log-probs of generated tokens equal labkit.models.logprobs on prompt + completion (fp32)."""
    model, tok = tiny
    engine = HFEngine(model, tok)
    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, logprobs=True))
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    seqs = [p + c.token_ids for p, c in zip(prompts, out)]
    masks = [[0] * len(p) + [1] * len(c.token_ids) for p, c in zip(prompts, out)]
    trainer = masked_token_logps(model, seqs, masks, pad_id=tok.pad_token_id)
    for c, ref in zip(out, trainer):
        got = torch.tensor(c.logprobs)
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() < 1e-4


def test_sampled_logprobs_are_raw_model_logprobs(tiny):
    """With temperature 0.7 the log-probs are still those of the unscaled model (what GRPO's ratio needs)."""
    model, tok = tiny
    out = HFEngine(model, tok).generate(PROMPTS[:2], SamplingParams(temperature=0.7, top_k=50,
                                                                    max_new_tokens=6, logprobs=True, seed=3))
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[:2]]
    ref = masked_token_logps(model, [p + c.token_ids for p, c in zip(prompts, out)],
                             [[0] * len(p) + [1] * len(c.token_ids) for p, c in zip(prompts, out)],
                             pad_id=tok.pad_token_id)
    for c, r in zip(out, ref):
        assert (torch.tensor(c.logprobs) - r).abs().max().item() < 1e-4


def test_continuous_batching_equals_static(tiny):
    model, tok = tiny
    sampling = SamplingParams(max_new_tokens=8, logprobs=True)
    static = HFEngine(model, tok).generate(PROMPTS, sampling)
    cont = HFEngine(model, tok, batching="continuous").generate(PROMPTS, sampling)
    assert [c.token_ids for c in cont] == [c.token_ids for c in static]
    for a, b in zip(cont, static):
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4


def test_n_samples_and_seed(tiny):
    model, tok = tiny
    engine = HFEngine(model, tok)
    sampling = SamplingParams(temperature=1.0, max_new_tokens=5, n=3, seed=7)
    a, b = engine.generate(PROMPTS[:2], sampling), engine.generate(PROMPTS[:2], sampling)
    assert [c.prompt_index for c in a] == [0, 0, 0, 1, 1, 1]
    assert [c.token_ids for c in a] == [c.token_ids for c in b]


def test_token_id_prompts_and_ignore_eos(tiny):
    model, tok = tiny
    ids = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    engine = HFEngine(model, tok)
    by_text = engine.generate([PROMPTS[0]], SamplingParams(max_new_tokens=6))[0]
    by_ids = engine.generate([ids], SamplingParams(max_new_tokens=6, ignore_eos=True))[0]
    assert isinstance(by_ids, Completion) and by_ids.num_tokens == 6 and by_ids.finish_reason == "length"
    assert by_ids.token_ids[:by_text.num_tokens] == by_text.token_ids


def test_multi_lora_each_adapter_equals_its_merged_model(tiny, adapters):
    model, tok = tiny
    base_ids = greedy_ids(model, tok, PROMPTS, 10)
    engine = HFEngine(model, tok)
    for name, (path, _) in adapters.items():
        engine.load_adapter(name, path)
    for name, (_, merged) in adapters.items():
        got = [c.token_ids for c in engine.generate(PROMPTS, SamplingParams(max_new_tokens=10), adapter=name)]
        assert got == greedy_ids(merged, tok, PROMPTS, 10), name
        assert got != base_ids, f"adapter {name} did not change the outputs: the test would prove nothing"
    # adapter=None is the base model, with the adapters still loaded
    assert [c.token_ids for c in engine.generate(PROMPTS, SamplingParams(max_new_tokens=10))] == base_ids
    # one call, a different adapter per prompt
    mixed = engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=10), adapter=["dpo", None, "sft"])
    assert [c.adapter for c in mixed] == ["dpo", None, "sft"]
    assert mixed[0].token_ids == greedy_ids(adapters["dpo"][1], tok, PROMPTS[:1], 10)[0]
    assert mixed[1].token_ids == base_ids[1]


def test_unknown_adapter_is_a_clear_error(tiny):
    with pytest.raises(EngineError, match="not loaded"):
        HFEngine(*tiny).generate(PROMPTS[:1], adapter="nope")


def test_update_weights_refits_in_place(tiny, tokenizer):
    from labkit.models import tiny_model

    model, tok = tiny
    other, _ = tiny_model(tokenizer, seed=5)
    engine = HFEngine(model, tok)
    seconds = engine.update_weights(other.state_dict())
    assert seconds >= 0
    got = [c.token_ids for c in engine.generate(PROMPTS, SamplingParams(max_new_tokens=8))]
    assert got == greedy_ids(other, tok, PROMPTS, 8)
    with pytest.raises(EngineError, match="not weights"):
        engine.update_weights({"no.such.weight": torch.zeros(1)})


def test_update_weights_under_adapters_reaches_the_base_layer(tiny, adapters, tokenizer):
    from labkit.models import tiny_model

    model, tok = tiny
    engine = HFEngine(model, tok)
    engine.load_adapter("sft", adapters["sft"][0])
    other, _ = tiny_model(tokenizer, seed=5)
    engine.update_weights(other.state_dict())
    got = [c.token_ids for c in engine.generate(PROMPTS, SamplingParams(max_new_tokens=8))]
    assert got == greedy_ids(other, tok, PROMPTS, 8)


@pytest.mark.parametrize("field, value", [("temperature", -1.0), ("top_p", 0.0), ("n", 0),
                                          ("max_new_tokens", 0), ("top_k", -1)])
def test_sampling_params_are_checked(field, value):
    with pytest.raises(ConfigError, match=field):
        SamplingParams(**{field: value})


def test_speculative_decoding_equals_plain_greedy(tiny, tokenizer):
    """Prompt-lookup and draft-model assisted decoding accept only tokens greedy would pick."""
    from labkit.models import tiny_model

    model, tok = tiny
    plain = HFEngine(model, tok).generate(PROMPTS, SamplingParams(max_new_tokens=12))
    lookup = HFEngine(model, tok, batch_size=1, generate_kwargs={"prompt_lookup_num_tokens": 3})
    draft, _ = tiny_model(tokenizer, layers=1, seed=9)
    assisted = HFEngine(model, tok, batch_size=1, generate_kwargs={"assistant_model": draft})
    for engine in (lookup, assisted):
        got = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12))
        assert [c.token_ids for c in got] == [c.token_ids for c in plain]
