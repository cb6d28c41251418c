"""Chat rendering and the assistant-token mask computed by rendering prefixes."""

from __future__ import annotations

import pytest

from labkit.data import assistant_mask, mask_spans, render, require_chat_template
from labkit.errors import DataError

TWO_TURNS = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5\n#### 5"},
]


def test_render_uses_chatml_with_default_system(tokenizer):
    text = render(tokenizer, TWO_TURNS[:1], add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_mask_covers_exactly_assistant_replies_and_end_of_turn(tokenizer):
    ids, mask = assistant_mask(tokenizer, TWO_TURNS)
    assert ids == tokenizer.apply_chat_template(TWO_TURNS, tokenize=True, return_dict=True)["input_ids"]
    assert len(mask) == len(ids) and set(mask) == {0, 1}
    # Split the masked tokens into contiguous runs: one per assistant turn.
    runs, current = [], []
    for t, m in zip(ids, mask, strict=True):
        if m:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    assert current == []  # the trailing "\n" after the last <|im_end|> is not trained on
    assert [tokenizer.decode(r) for r in runs] == [
        "Hello! How can I help?<|im_end|>",
        "2 + 3 = 5\n#### 5<|im_end|>",
    ]


def test_mask_spans_pair_token_text_with_flag(tokenizer):
    spans = mask_spans(tokenizer, TWO_TURNS)
    assert "".join(t for t, _ in spans) == render(tokenizer, TWO_TURNS)
    assert "".join(t for t, a in spans if a) == "Hello! How can I help?<|im_end|>2 + 3 = 5\n#### 5<|im_end|>"


def test_template_that_breaks_prefixes_raises(tokenizer, monkeypatch, assert_names):
    # Like "thinking" templates: the generation prompt holds text that the rendered reply does not.
    odd = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    monkeypatch.setattr(tokenizer, "chat_template", odd)
    with pytest.raises(DataError) as info:
        assistant_mask(tokenizer, TWO_TURNS, source="chat.jsonl", row=7)
    assert_names(info.value, "chat.jsonl", 7, "messages[1]")
    assert "cannot be computed by prefixes" in str(info.value)


def test_conversation_opening_with_assistant_is_refused(tokenizer):
    with pytest.raises(DataError, match="opens with an assistant turn"):
        assistant_mask(tokenizer, TWO_TURNS[1:])


def test_missing_template(no_template_tokenizer, assert_names):
    with pytest.raises(DataError) as info:
        require_chat_template(no_template_tokenizer, "data.jsonl")
    assert_names(info.value, "data.jsonl", None, "chat_template")
    with pytest.raises(DataError, match="has no chat template"):
        render(no_template_tokenizer, TWO_TURNS)
