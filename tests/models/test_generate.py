"""Batched generation: left padding must not change greedy outputs."""

import pytest

from labkit.errors import DataError
from labkit.models import generate


def test_batched_equals_one_by_one(tiny):
    model, tok = tiny
    prompts = ["hi", "a much longer prompt with many more tokens in it", [{"role": "user", "content": "x"}]]
    batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert all(g.prompt.startswith("<|im_start|>") for g in batched)
    assert tok.padding_side == "right" or tok.padding_side == "left"


def test_sampling_is_seeded(tiny):
    model, tok = tiny
    a = generate(model, tok, ["hello"], max_new_tokens=8, do_sample=True, seed=3)
    b = generate(model, tok, ["hello"], max_new_tokens=8, do_sample=True, seed=3)
    assert a[0].token_ids == b[0].token_ids


def test_missing_chat_template_is_a_clear_error(tiny):
    model, tok = tiny
    saved = tok.chat_template
    tok.chat_template = None
    try:
        with pytest.raises(DataError, match="chat_template"):
            generate(model, tok, ["hello"], max_new_tokens=4)
        assert generate(model, tok, ["hello"], max_new_tokens=4, chat=False)[0].prompt == "hello"
    finally:
        tok.chat_template = saved
