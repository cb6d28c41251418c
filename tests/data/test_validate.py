"""Each validator case: a small bad dataset raises DataError naming the source, the row and the field."""

from __future__ import annotations

import pytest

from labkit.data import Kind, row_lengths, validate_rows
from labkit.errors import ConfigError, DataError


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


GOOD = {
    "language_modeling": {"text": "Once upon a time."},
    "prompt_completion": {"prompt": "2 + 2 =", "completion": " 4"},
    "conversational": {"messages": chat(("user", "Hi"), ("assistant", "Hello!"))},
    "preference": {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"},
    "unpaired_preference": {"prompt": "2 + 2 =", "completion": " 4", "label": True},
    "prompt_answer": {"prompt": "What is 2 + 2?", "answer": "4"},
}


def with_bad_row(kind: str, bad: dict, at: int = 2, n: int = 4) -> list[dict]:
    """n good rows of the kind with `bad` at index `at`."""
    return [bad if i == at else dict(GOOD[kind]) for i in range(n)]


def test_good_rows_of_every_kind_pass(tokenizer):
    for kind, row in GOOD.items():
        assert validate_rows([row, row], kind, source="t", tokenizer=tokenizer, max_length=64) is Kind(kind)


def test_extra_columns_are_allowed():
    assert validate_rows([{**GOOD["prompt_answer"], "split": "train", "id": 3}], "prompt_answer", source="t")


# (kind, bad row, field the error must name)
CASES = {
    "missing field": ("preference", {"prompt": "p", "chosen": "a"}, "rejected"),
    "missing messages content": ("conversational", {"messages": [{"role": "user"}]}, "messages[0].content"),
    "label not bool": ("unpaired_preference", {"prompt": "p", "completion": "c", "label": 1}, "label"),
    "content not str": (
        "conversational",
        {"messages": [{"role": "user", "content": 5}]},
        "messages[0].content",
    ),
    "messages not a list": ("conversational", {"messages": "hello"}, "messages"),
    "message not a dict": ("conversational", {"messages": ["hello"]}, "messages[0]"),
    "empty messages": ("conversational", {"messages": []}, "messages"),
    "text not str": ("language_modeling", {"text": ["a"]}, "text"),
    "empty text": ("language_modeling", {"text": "   \n"}, "text"),
    "empty prompt": ("prompt_completion", {"prompt": " ", "completion": "c"}, "prompt"),
    "empty completion": ("prompt_completion", {"prompt": "p", "completion": ""}, "completion"),
    "empty chosen": ("preference", {"prompt": "p", "chosen": "\t", "rejected": "r"}, "chosen"),
    "empty rejected": ("preference", {"prompt": "p", "chosen": "c", "rejected": "  "}, "rejected"),
    "empty content": (
        "conversational",
        {"messages": chat(("user", "hi"), ("assistant", " "))},
        "messages[1].content",
    ),
    "empty answer": ("prompt_answer", {"prompt": "p", "answer": ""}, "answer"),
    "chosen equals rejected": ("preference", {"prompt": "p", "chosen": " 4 ", "rejected": "4"}, "rejected"),
    "unknown role": (
        "conversational",
        {"messages": chat(("human", "hi"), ("assistant", "yo"))},
        "messages[0].role",
    ),
    "assistant not last": (
        "conversational",
        {"messages": chat(("user", "hi"), ("assistant", "yo"), ("user", "?"))},
        "messages[2].role",
    ),
    "form differs from row 0": (
        "prompt_completion",
        {"prompt": chat(("user", "p")), "completion": "c"},
        "prompt",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_row_names_source_row_and_field(case, assert_names):
    kind, bad, field = CASES[case]
    with pytest.raises(DataError) as info:
        validate_rows(with_bad_row(kind, bad), kind, source="bad.jsonl")
    assert_names(info.value, "bad.jsonl", 2, field)


def test_first_bad_row_in_order_is_reported(assert_names):
    rows = [GOOD["language_modeling"], {"text": ""}, {"text": 3}, {}]
    with pytest.raises(DataError) as info:
        validate_rows(rows, "language_modeling", source="s")
    assert_names(info.value, "s", 1, "text")


def test_conversational_chosen_equals_rejected(assert_names):
    row = {
        "prompt": chat(("user", "q")),
        "chosen": chat(("assistant", "same ")),
        "rejected": chat(("assistant", "same")),
    }
    with pytest.raises(DataError) as info:
        validate_rows([row], "preference", source="s")
    assert_names(info.value, "s", 0, "rejected")


def test_assistant_last_applies_to_conversational_completions(assert_names):
    row = {"prompt": chat(("user", "q")), "completion": chat(("assistant", "a"), ("user", "more?"))}
    with pytest.raises(DataError) as info:
        validate_rows([row], "prompt_completion", source="s")
    assert_names(info.value, "s", 0, "completion[1].role")
    assert validate_rows([row], "prompt_completion", source="s", require_assistant_last=False)


def test_prompt_only_conversations_pass_when_assistant_last_not_required():
    rows = [{"messages": chat(("system", "be brief"), ("user", "hi"))}]
    assert (
        validate_rows(rows, "conversational", source="s", require_assistant_last=False) is Kind.CONVERSATIONAL
    )


def test_over_length_names_token_count_and_limit(tokenizer, assert_names):
    long_reply = " ".join(["word"] * 80)
    rows = with_bad_row("conversational", {"messages": chat(("user", "hi"), ("assistant", long_reply))}, at=1)
    n = row_lengths(tokenizer, rows[1], "conversational")["messages"]
    assert n > 80
    with pytest.raises(DataError) as info:
        validate_rows(rows, "conversational", source="s", tokenizer=tokenizer, max_length=64)
    assert_names(info.value, "s", 1, "messages")
    assert f"{n} tokens" in str(info.value) and "max_length 64" in str(info.value)


def test_over_length_preference_names_the_longer_side(tokenizer, assert_names):
    row = {"prompt": "q", "chosen": "short", "rejected": " ".join(["pad"] * 100)}
    with pytest.raises(DataError) as info:
        validate_rows([GOOD["preference"], row], "preference", source="s", tokenizer=tokenizer, max_length=50)
    assert_names(info.value, "s", 1, "rejected")


def test_length_counts_the_templated_text(tokenizer):
    row = {"prompt": chat(("user", "hi")), "completion": chat(("assistant", "yo"))}
    templated = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    expected = len(tokenizer(templated, add_special_tokens=False)["input_ids"])
    assert row_lengths(tokenizer, row, "prompt_completion") == {"completion": expected}
    # standard text gets the eos a trainer appends; a prompt-only row does not
    assert (
        row_lengths(tokenizer, {"text": "hi"}, "language_modeling")["text"]
        == len(tokenizer("hi")["input_ids"]) + 1
    )
    assert row_lengths(tokenizer, {"prompt": "hi", "answer": "x"}, "prompt_answer")["prompt"] == 1


def test_missing_chat_template_is_raised_before_any_row(no_template_tokenizer, assert_names):
    # Row 0 is broken too, but the tokenizer problem comes first: nothing is processed without a template.
    rows = [{"messages": "not a list"}, GOOD["conversational"]]
    with pytest.raises(DataError) as info:
        validate_rows(rows, "conversational", source="s", tokenizer=no_template_tokenizer)
    assert_names(info.value, "s", None, "chat_template")
    assert no_template_tokenizer.name_or_path in str(info.value)


def test_standard_rows_do_not_need_a_chat_template(no_template_tokenizer):
    assert validate_rows(
        [GOOD["prompt_completion"]], None, source="s", tokenizer=no_template_tokenizer, max_length=64
    )


def test_template_failure_is_a_data_error(tokenizer, monkeypatch, assert_names):
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% "
        "endif %}{{ m['content'] }}{% endfor %}"
    )
    monkeypatch.setattr(tokenizer, "chat_template", strict)
    rows = [GOOD["conversational"], {"messages": chat(("system", "s"), ("user", "u"), ("assistant", "a"))}]
    with pytest.raises(DataError) as info:
        validate_rows(rows, "conversational", source="s", tokenizer=tokenizer)
    assert_names(info.value, "s", 1, "messages")
    assert "no system role" in str(info.value)


def test_detected_kind_must_match_row_0(assert_names):
    with pytest.raises(DataError) as info:
        validate_rows([GOOD["conversational"], GOOD["conversational"], GOOD["preference"]], None, source="s")
    assert_names(info.value, "s", 2, "messages")
    assert "preference" in str(info.value) and "conversational" in str(info.value)


def test_no_rows_unknown_kind_and_length_without_tokenizer(assert_names):
    with pytest.raises(DataError) as info:
        validate_rows([], "conversational", source="s")
    assert_names(info.value, "s", None, None)
    with pytest.raises(ConfigError, match="unknown dataset kind 'sft'"):
        validate_rows([GOOD["conversational"]], "sft", source="s")
    with pytest.raises(ConfigError, match="max_length"):
        validate_rows([GOOD["conversational"]], "conversational", source="s", max_length=10)
