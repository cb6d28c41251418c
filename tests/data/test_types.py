"""Kind detection from a row's fields, and kind names."""

from __future__ import annotations

import pytest

from labkit.data import Kind, detect_kind, is_conversational
from labkit.data.types import as_kind
from labkit.errors import ConfigError, DataError

MSG = [{"role": "user", "content": "q"}]


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        ({"text": "t"}, Kind.LANGUAGE_MODELING),
        ({"prompt": "p", "completion": "c"}, Kind.PROMPT_COMPLETION),
        ({"prompt": MSG, "completion": MSG}, Kind.PROMPT_COMPLETION),
        ({"messages": MSG, "text": "also here"}, Kind.CONVERSATIONAL),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, Kind.PREFERENCE),
        ({"prompt": "p", "completion": "c", "label": False}, Kind.UNPAIRED_PREFERENCE),
        ({"prompt": "p", "answer": "4", "split": "train"}, Kind.PROMPT_ANSWER),
        ({"prompt": "p", "completion": "c", "answer": "4"}, Kind.PROMPT_COMPLETION),
        ({"text": "t", "messages": None}, Kind.LANGUAGE_MODELING),  # None = absent, as HF datasets fill it
    ],
)
def test_detect_kind(row, kind):
    assert detect_kind(row) is kind


def test_undetectable_row_lists_fields_and_kinds(assert_names):
    with pytest.raises(DataError) as info:
        detect_kind({"question": "q"}, source="f.jsonl", index=4)
    assert_names(info.value, "f.jsonl", 4, None)
    assert "['question']" in str(info.value) and "prompt_answer: prompt, answer" in str(info.value)
    with pytest.raises(DataError, match="expected a dict"):
        detect_kind(["text"])


def test_kind_names_and_conversational_form():
    assert as_kind("preference") is Kind.PREFERENCE and as_kind(Kind.CONVERSATIONAL) is Kind.CONVERSATIONAL
    with pytest.raises(ConfigError, match="known kinds: language_modeling"):
        as_kind("dpo")
    assert is_conversational({"prompt": MSG, "answer": "4"})
    assert not is_conversational({"prompt": "p", "answer": "4"})


def test_a_null_field_that_decides_the_kind_is_named(assert_names):
    # No kind fits without the null prompt: the null field is named, not "cannot tell the kind".
    with pytest.raises(DataError) as info:
        detect_kind({"prompt": None, "completion": "c"}, source="f.jsonl", index=3)
    assert_names(info.value, "f.jsonl", 3, "prompt")
    # A null label turns a KTO row into a prompt_completion one: lenient by default, named when strict.
    kto = {"prompt": "p", "completion": "c", "label": None}
    assert detect_kind(kto) is Kind.PROMPT_COMPLETION
    with pytest.raises(DataError) as info:
        detect_kind(kto, source="f.jsonl", index=0, strict=True)
    assert_names(info.value, "f.jsonl", 0, "label")
    assert "'unpaired_preference'" in str(info.value) and "'prompt_completion'" in str(info.value)
    assert (
        detect_kind({"prompt": "p", "completion": "c", "label": False}, strict=True)
        is Kind.UNPAIRED_PREFERENCE
    )
