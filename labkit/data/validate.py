"""Row validators: every malformed row raises DataError naming the source, the 0-based row and the field.

Messages read "<source>, row <n>, field '<field>': <what is wrong>", with rows numbered from 0 in
the order they were given (for JSONL files: the n-th non-blank line, which the parse errors also
give as a 1-based "line N"). Fields inside message lists are named like `messages[2].content`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import TemplateError

from labkit.data.chat import encode, render, require_chat_template
from labkit.data.types import (
    REQUIRED_FIELDS,
    ROLES,
    TEXT_OR_MESSAGES_FIELDS,
    Kind,
    as_kind,
    detect_kind,
    is_conversational,
)
from labkit.errors import ConfigError, DataError


def validate_rows(
    rows: Iterable[Mapping[str, Any]],
    kind: Kind | str | None,
    *,
    source: str,
    tokenizer: Any = None,
    max_length: int | None = None,
    require_assistant_last: bool = True,
) -> Kind:
    """Check every row before any work starts; raise DataError on the first bad row, in order.

    kind=None detects the kind from row 0 and requires every other row to have the same kind.
    With a tokenizer, conversational rows are rendered through its chat template (which must exist:
    checked before any row); with max_length too, a row longer than that many tokens is an error.
    require_assistant_last: message lists holding replies (messages, completion, chosen, rejected)
    must end with an assistant turn, as SFT and preference data do. Returns the kind.
    """
    rows = list(rows)
    if not rows:
        raise DataError(source, None, None, "no rows")
    if max_length is not None and tokenizer is None:
        raise ConfigError("max_length", "checking lengths needs a tokenizer; pass tokenizer= too")
    detecting = kind is None
    kind = detect_kind(rows[0], source=source, index=0) if detecting else as_kind(kind)
    conversational = isinstance(rows[0], Mapping) and is_conversational(rows[0])
    if tokenizer is not None and (conversational or kind is Kind.CONVERSATIONAL):
        require_chat_template(tokenizer, source)

    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(source, i, None, f"expected a dict (JSON object), got {type(row).__name__}")
        if detecting and (found := detect_kind(row, source=source, index=i)) is not kind:
            raise DataError(
                source, i, None, f"row looks like kind '{found.value}' but row 0 is '{kind.value}'"
            )
        _check_fields(row, kind, conversational, source, i, require_assistant_last)
        if tokenizer is not None:
            _check_length(row, kind, tokenizer, max_length, source, i)
    return kind


def row_lengths(tokenizer: Any, row: Mapping[str, Any], kind: Kind | str) -> dict[str, int]:
    """Token count of each sequence a trainer builds from the row, keyed by the field that ends it.

    Conversational parts go through the chat template; standard text gets the eos token the SFT and
    preference trainers append (prompt-only rows do not: the model writes the rest).
    """
    kind = as_kind(kind)
    eos = tokenizer.eos_token or ""

    def standard(text: str, add_eos: bool = True) -> int:
        if add_eos and eos and not text.endswith(eos):
            text += eos
        return len(encode(tokenizer, text))

    def length(prompt: Any, reply: Any) -> int:
        if isinstance(prompt, list):
            return len(encode(tokenizer, render(tokenizer, prompt + reply)))
        return standard(prompt + reply)

    if kind is Kind.LANGUAGE_MODELING:
        return {"text": standard(row["text"])}
    if kind is Kind.CONVERSATIONAL:
        return {"messages": len(encode(tokenizer, render(tokenizer, row["messages"])))}
    if kind is Kind.PREFERENCE:
        return {f: length(row["prompt"], row[f]) for f in ("chosen", "rejected")}
    if kind is Kind.PROMPT_ANSWER:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            return {"prompt": len(encode(tokenizer, render(tokenizer, prompt, add_generation_prompt=True)))}
        return {"prompt": standard(prompt, add_eos=False)}
    return {"completion": length(row["prompt"], row["completion"])}  # prompt_completion, unpaired_preference


def _check_fields(
    row: Mapping[str, Any], kind: Kind, conversational: bool, source: str, i: int, assistant_last: bool
) -> None:
    for field in REQUIRED_FIELDS[kind]:
        value = row.get(field)
        if value is None:  # HF datasets fill a column missing from some rows with None
            need = ", ".join(REQUIRED_FIELDS[kind])
            raise DataError(source, i, field, f"missing (kind '{kind.value}' needs: {need})")
        if field == "label":
            if not isinstance(value, bool):
                raise DataError(
                    source, i, field, f"expected true or false, got {type(value).__name__} {value!r}"
                )
        elif field == "messages":
            _check_messages(value, field, source, i, assistant_last)
        elif field in TEXT_OR_MESSAGES_FIELDS:
            if conversational:
                if not isinstance(value, list):
                    raise DataError(
                        source,
                        i,
                        field,
                        f"expected a list of messages like the rest of the "
                        f"dataset (row 0 is conversational), got {type(value).__name__}",
                    )
                _check_messages(value, field, source, i, assistant_last and field != "prompt")
            else:
                if not isinstance(value, str):
                    raise DataError(
                        source,
                        i,
                        field,
                        f"expected a string like the rest of the dataset "
                        f"(row 0 is in standard form), got {type(value).__name__}",
                    )
                _check_text(value, field, source, i)
        else:  # text, answer
            _check_text(value, field, source, i)
    if kind is Kind.PREFERENCE and _normalised(row["chosen"]) == _normalised(row["rejected"]):
        raise DataError(source, i, "rejected", "identical to 'chosen', so the pair teaches nothing")


def _check_text(value: Any, field: str, source: str, i: int) -> None:
    if not isinstance(value, str):
        raise DataError(source, i, field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(source, i, field, "empty or whitespace-only text")


def _check_messages(value: Any, field: str, source: str, i: int, assistant_last: bool) -> None:
    if not isinstance(value, list):
        raise DataError(
            source, i, field, f"expected a list of {{'role', 'content'}} dicts, got {type(value).__name__}"
        )
    if not value:
        raise DataError(source, i, field, "empty list of messages")
    for j, message in enumerate(value):
        where = f"{field}[{j}]"
        if not isinstance(message, Mapping):
            raise DataError(
                source, i, where, f"expected a dict with 'role' and 'content', got {type(message).__name__}"
            )
        role = message.get("role")
        if role is None:
            raise DataError(source, i, f"{where}.role", "missing")
        if role not in ROLES:
            raise DataError(
                source, i, f"{where}.role", f"unknown role {role!r}; allowed: {', '.join(sorted(ROLES))}"
            )
        if message.get("content") is None:
            raise DataError(source, i, f"{where}.content", "missing")
        _check_text(message["content"], f"{where}.content", source, i)
    last = value[-1]["role"]
    if assistant_last and last != "assistant":
        raise DataError(
            source,
            i,
            f"{field}[{len(value) - 1}].role",
            f"the last turn is from '{last}', but this data must end with an assistant reply "
            "(pass require_assistant_last=False for prompt-only data)",
        )


def _check_length(
    row: Mapping[str, Any], kind: Kind, tokenizer: Any, max_length: int | None, source: str, i: int
) -> None:
    try:
        lengths = row_lengths(tokenizer, row, kind)
    except (
        TemplateError
    ) as exc:  # a template may reject a conversation shape, e.g. roles that do not alternate
        raise DataError(
            source, i, REQUIRED_FIELDS[kind][0], f"the tokenizer could not template this row: {exc}"
        ) from exc
    if max_length is None:
        return
    field, n = max(lengths.items(), key=lambda kv: kv[1])
    if n > max_length:
        raise DataError(source, i, field, f"{n} tokens after templating, over max_length {max_length}")


def _normalised(value: str | list[Mapping[str, Any]]) -> Any:
    if isinstance(value, str):
        return value.strip()
    return [(m["role"], m["content"].strip()) for m in value]
