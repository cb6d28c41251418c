"""Speculative decoding: truncated drafts share the target's weights, acceptance is counted exactly, and
greedy output equals plain greedy decoding for prompt lookup and draft models alike."""

from __future__ import annotations

import pytest
import torch

from labkit.errors import ConfigError
from labkit.infer.speculative import compare_speculative, speculative_run, truncated_draft

PROMPTS = ["1, 2, 3, 1, 2, 3, 1, 2, 3,", "The capital of France is",
           "def add(a, b):\n    return a + b\n\ndef"]


def test_truncated_draft_shares_weights_and_keeps_the_target(tiny):
    model, tok = tiny
    draft = truncated_draft(model, 1)
    assert draft.config.num_hidden_layers == 1 and len(draft.model.layers) == 1
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert draft.model.layers[0].self_attn.q_proj.weight is model.model.layers[0].self_attn.q_proj.weight
    assert draft.model.embed_tokens.weight is model.model.embed_tokens.weight
    assert draft.lm_head.weight is draft.model.embed_tokens.weight          # still tied
    assert draft.generation_config is not model.generation_config
    ids = torch.tensor([tok("hello there", add_special_tokens=False)["input_ids"]])
    assert torch.isfinite(draft(input_ids=ids).logits).all()
    with pytest.raises(ConfigError, match="draft_layers"):
        truncated_draft(model, 3)


@pytest.mark.parametrize("method", ["prompt_lookup", "draft"])
def test_acceptance_counts_add_up_to_the_generated_tokens(tiny, method):
    """Each verification step emits its accepted proposals plus one token of the target's own."""
    model, tok = tiny
    res = speculative_run(model, tok, PROMPTS, method=method, max_new_tokens=20, lookup_tokens=4,
                          draft_layers=1, draft_tokens=4)
    acc = res["acceptance"]
    assert acc.steps > 0 and 0 <= acc.accepted <= acc.proposed
    assert acc.accepted + acc.steps == res["tokens"]
    assert "_get_candidate_generator" not in vars(model)   # the counting wrapper is gone again


def test_a_draft_equal_to_the_target_is_almost_always_accepted(tiny):
    model, tok = tiny
    res = speculative_run(model, tok, PROMPTS, method="draft", max_new_tokens=20,
                          draft=truncated_draft(model, 2), draft_tokens=4)
    assert res["acceptance"].proposed > 10
    assert res["acceptance"].rate >= 0.95


def test_compare_rows_are_identical_to_greedy_on_the_tiny_model(tiny):
    model, tok = tiny
    rows = compare_speculative(model, tok, PROMPTS, max_new_tokens=16, lookup_tokens=3, draft_layers=(1,),
                               draft_tokens=3)
    assert [r["method"] for r in rows] == ["greedy", "prompt_lookup", "draft (1 layers)"]
    assert all(r["same_as_greedy"] for r in rows)
    assert rows[0]["speedup"] == 1.0 and rows[0]["acceptance"] is None
    assert all(r["tokens"] == rows[0]["tokens"] and r["tokens_per_s"] > 0 for r in rows)
    from labkit.infer.speculative import speedup_figure

    assert len(speedup_figure(rows).data) == 1


@pytest.mark.slow
def test_greedy_identical_on_the_embedded_model():
    """fp32 SmolLM2: prompt lookup and a 4-layer truncated draft give plain greedy's tokens (~25 s)."""
    from labkit.models import load_model

    model, tok = load_model(dtype="float32", device="cpu")
    asks = ("Repeat exactly: the quick brown fox jumps over the lazy dog.", "Name three colours.")
    prompts = [tok.apply_chat_template([{"role": "user", "content": m}], add_generation_prompt=True,
                                       tokenize=False) for m in asks]
    greedy = speculative_run(model, tok, prompts, method="greedy", max_new_tokens=16)["token_ids"]
    for kw in ({"method": "prompt_lookup", "lookup_tokens": 5},
               {"method": "draft", "draft_layers": 4, "draft_tokens": 3}):
        assert speculative_run(model, tok, prompts, max_new_tokens=16, **kw)["token_ids"] == greedy, kw
