"""Row validators: every malformed row raises DataError naming the source, the 0-based row and the field.

Messages read "<source>, row <n>, field '<field>': <what is wrong>", with rows numbered from 0 in
the order they were given (for JSONL files: the n-th non-blank line; `load_rows` adds the 1-based
"line N"). Fields inside message lists are named like `messages[2].content`.

Conversations are checked per kind in the shape TRL and chat templates expect: optional system turns
first, then user and assistant turns alternating from a user turn (tool results may follow an
assistant turn, and the assistant speaks after them); prompts end on a user (or tool) turn, replies
start with an assistant turn, and SFT data ends on one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import TemplateError

from labkit.data.answers import parse_number
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
    numeric_answer: bool = True,
) -> Kind:
    """Check every row before any work starts; raise DataError on the first bad row, in order.

    kind=None detects the kind from row 0 and requires every other row to have the same kind.
    With a tokenizer, conversational rows are rendered through its chat template (which must exist:
    checked before any row); with max_length too, a row longer than that many tokens is an error.
    require_assistant_last: message lists holding replies (messages, completion, chosen, rejected)
    must end with an assistant turn, as SFT and preference data do. numeric_answer: a prompt_answer
    row's `answer` must be a number (the verifiable rewards compare numbers); pass False for answers
    that another reward, such as exact_match, checks. Returns the kind.

    Preference rows may leave out `prompt` when chosen and rejected are whole conversations that
    share their prompt turns (TRL's implicit-prompt format); `split_implicit_prompt` makes it explicit.
    """
    rows = list(rows)
    if not rows:
        raise DataError(source, None, None, "no rows")
    if max_length is not None and tokenizer is None:
        raise ConfigError("max_length", "checking lengths needs a tokenizer; pass tokenizer= too")
    detecting = kind is None
    kind = detect_kind(rows[0], source=source, index=0, strict=True) if detecting else as_kind(kind)
    conversational = isinstance(rows[0], Mapping) and is_conversational(rows[0])
    if tokenizer is not None and (conversational or kind is Kind.CONVERSATIONAL):
        require_chat_template(tokenizer, source)

    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(source, i, None, f"expected a dict (JSON object), got {type(row).__name__}")
        if detecting:
            _check_same_kind(row, kind, source, i)
        _check_fields(row, kind, conversational, source, i, require_assistant_last, numeric_answer)
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
        if row.get("prompt") is None:  # implicit prompt: chosen and rejected are whole conversations
            return {f: len(encode(tokenizer, render(tokenizer, row[f]))) for f in ("chosen", "rejected")}
        return {f: length(row["prompt"], row[f]) for f in ("chosen", "rejected")}
    if kind is Kind.PROMPT_ANSWER:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            return {"prompt": len(encode(tokenizer, render(tokenizer, prompt, add_generation_prompt=True)))}
        return {"prompt": standard(prompt, add_eos=False)}
    return {"completion": length(row["prompt"], row["completion"])}  # prompt_completion, unpaired_preference


def _check_same_kind(row: Mapping[str, Any], kind: Kind, source: str, i: int) -> None:
    """With a detected kind, every row must have row 0's kind; the error names the field that differs."""
    try:
        found = detect_kind(dict(row), source=source, index=i, strict=True)
    except DataError as exc:
        if exc.field is not None:  # a null field that decides the kind
            raise
        found = None
    if found is kind:
        return
    looks = f"this row looks like kind '{found.value}'" if found else "this row fits no kind"
    need = [f for f in REQUIRED_FIELDS[kind] if row.get(f) is None]
    if need:
        what = "null" if need[0] in row else "missing"
        raise DataError(
            source,
            i,
            need[0],
            f"{what}; row 0 is kind '{kind.value}' (needs: {', '.join(REQUIRED_FIELDS[kind])}) but {looks}",
        )
    extra = next(f for f in REQUIRED_FIELDS[found] if f not in REQUIRED_FIELDS[kind])
    raise DataError(
        source,
        i,
        extra,
        f"makes this row kind '{found.value}' but row 0 is kind '{kind.value}'; the rows of one dataset "
        "share a kind (drop or rename the column, or load the two kinds separately)",
    )


def _check_fields(
    row: Mapping[str, Any],
    kind: Kind,
    conversational: bool,
    source: str,
    i: int,
    assistant_last: bool,
    numeric_answer: bool,
) -> None:
    # TRL's implicit-prompt preference format: no prompt column, whole conversations in chosen/rejected.
    implicit = kind is Kind.PREFERENCE and conversational and row.get("prompt") is None
    for field in REQUIRED_FIELDS[kind]:
        value = row.get(field)
        if value is None and not (implicit and field == "prompt"):
            # HF datasets fill a column missing from some rows with None
            need = ", ".join(REQUIRED_FIELDS[kind])
            what = "null" if field in row else "missing"
            hint = ""
            if kind is Kind.PREFERENCE and field == "prompt":
                hint = (
                    "; only message-list chosen/rejected that hold the whole conversation "
                    "(TRL's implicit-prompt format) may leave it out"
                )
            raise DataError(source, i, field, f"{what} (kind '{kind.value}' needs: {need}){hint}")
        if field == "label":
            if not isinstance(value, bool):
                raise DataError(
                    source, i, field, f"expected true or false, got {type(value).__name__} {value!r:.60}"
                )
        elif field == "messages":
            _check_message_list(value, field, source, i)
        elif field in TEXT_OR_MESSAGES_FIELDS:
            if value is None:
                continue  # the implicit prompt
            if conversational:
                if not isinstance(value, list):
                    raise DataError(
                        source,
                        i,
                        field,
                        f"expected a list of messages like the rest of the "
                        f"dataset (row 0 is conversational), got {type(value).__name__}",
                    )
                _check_message_list(value, field, source, i)
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
        elif field == "answer":
            _check_answer(value, source, i, numeric_answer)
        else:  # text
            _check_text(value, field, source, i)
    if conversational or kind is Kind.CONVERSATIONAL:
        _check_conversation_shape(row, kind, source, i, assistant_last, implicit)
    if kind is Kind.PREFERENCE and _normalised(row["chosen"]) == _normalised(row["rejected"]):
        raise DataError(source, i, "rejected", "identical to 'chosen', so the pair teaches nothing")


def _check_text(value: Any, field: str, source: str, i: int) -> None:
    if not isinstance(value, str):
        raise DataError(source, i, field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(source, i, field, "empty or whitespace-only text")


def is_number(text: Any) -> bool:
    """True when labkit's answer reader (labkit.data.answers.parse_number, which the rewards and evals
    grade with) reads `text` as exactly one number: "72", "-3", "0.5", "1,234", "3/4", "25%", "$4.50";
    False for words ("seventy-two"), units ("72 apples"), "3/0"."""
    return parse_number(text) is not None


def _check_answer(value: Any, source: str, i: int, numeric: bool) -> None:
    # JSON numbers are fine: the rewards read str(answer).
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(
            source, i, "answer", f"expected a string or a number, got {type(value).__name__} {value!r:.60}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(source, i, "answer", f"{value!r} is not a finite number")
    if isinstance(value, str):
        _check_text(value, "answer", source, i)
    if numeric and not is_number(value):
        raise DataError(
            source,
            i,
            "answer",
            f"{value!r:.60} is not a number, and the verifiable rewards grade numbers (labkit.data.answers "
            "reads integers, decimals, negative numbers, 1,234, 3/4, 25% and $4.50); write it in digits, "
            "or pass numeric_answer=False when another reward (such as exact_match) checks it",
        )


def _check_message_list(value: Any, field: str, source: str, i: int) -> None:
    """Each message is a dict with a known role and non-empty text content; order is checked later."""
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
        for key in ("role", "content"):
            if message.get(key) is None:
                raise DataError(source, i, f"{where}.{key}", "null" if key in message else "missing")
        role = message["role"]
        if not isinstance(role, str) or role not in ROLES:
            raise DataError(
                source, i, f"{where}.role", f"unknown role {role!r:.40}; allowed: {', '.join(sorted(ROLES))}"
            )
        _check_text(message["content"], f"{where}.content", source, i)


# Which turn may follow which once the conversation has started (system turns come first, then a user
# turn). A tool result answers an assistant's tool call, and the assistant speaks again after it.
_NEXT = {"user": {"assistant"}, "assistant": {"user", "tool"}, "tool": {"tool", "assistant"}}
_PROMPT_ENDS = ("user", "tool")  # TRL adds the generation prompt after these


def _check_conversation_shape(
    row: Mapping[str, Any], kind: Kind, source: str, i: int, assistant_last: bool, implicit: bool
) -> None:
    end = "assistant" if assistant_last else None
    if kind is Kind.CONVERSATIONAL:
        _check_turns([("messages", row["messages"])], source, i, end=end)
    elif kind is Kind.PROMPT_ANSWER:
        _check_turns([("prompt", row["prompt"])], source, i, end=None)
    elif kind is Kind.PREFERENCE and implicit:
        for field in ("chosen", "rejected"):
            if row[field][0]["role"] == "assistant":
                raise DataError(
                    source,
                    i,
                    "prompt",
                    f"missing, and '{field}' opens with the assistant's reply, so nothing holds the prompt; "
                    "add a 'prompt' column, or put the prompt turns at the start of both chosen and "
                    "rejected (TRL's implicit-prompt format)",
                )
            _check_turns([(field, row[field])], source, i, end=end)
        _check_shared_prompt(row["chosen"], row["rejected"], source, i)
    else:  # prompt + reply: prompt_completion, unpaired_preference, preference with a prompt column
        replies = ("chosen", "rejected") if kind is Kind.PREFERENCE else ("completion",)
        for field in replies:
            _check_turns([("prompt", row["prompt"]), (field, row[field])], source, i, end=end)


def _check_turns(
    parts: list[tuple[str, list[Mapping[str, Any]]]], source: str, i: int, *, end: str | None
) -> None:
    """Role order over the concatenated parts: the first part is the prompt (or the whole conversation)
    and any later part is a reply, which must open with an assistant turn. end="assistant": the last
    turn must be the assistant's."""
    prev: str | None = None  # the role of the turn before, None at the start
    for p, (field, messages) in enumerate(parts):
        for j, message in enumerate(messages):
            role, where = message["role"], f"{field}[{j}].role"
            if p > 0 and j == 0 and role != "assistant":
                hint = (
                    "; a prompt belongs in 'prompt' only (to keep the whole conversation in chosen and "
                    "rejected, drop the 'prompt' column: TRL then takes their shared turns as the prompt)"
                    if field in ("chosen", "rejected")
                    else ""
                )
                raise DataError(
                    source,
                    i,
                    where,
                    f"'{field}' holds the reply to 'prompt', so it must open with an assistant turn, "
                    f"not '{role}'{hint}",
                )
            if role == "system":
                if prev not in (None, "system"):
                    raise DataError(
                        source,
                        i,
                        where,
                        f"a system turn after the conversation started (role '{prev}' came before it); "
                        "system turns may only open the conversation",
                    )
            elif prev in (None, "system"):
                if role != "user":
                    raise DataError(
                        source,
                        i,
                        where,
                        f"the conversation opens with role '{role}'; after any system turns it must open "
                        "with a user turn",
                    )
            elif role not in _NEXT[prev]:
                raise DataError(
                    source,
                    i,
                    where,
                    f"role '{role}' right after role '{prev}'; user and assistant turns alternate "
                    "(tool results follow an assistant turn, and the assistant answers them)",
                )
            prev = role
        last = f"{field}[{len(messages) - 1}].role"
        if prev in (None, "system"):
            raise DataError(source, i, last, "only system turns: a conversation needs a user turn")
        if p == 0 and field == "prompt" and prev not in _PROMPT_ENDS:
            raise DataError(
                source,
                i,
                last,
                f"the prompt ends with role '{prev}'; a prompt must end with a user turn "
                "(or a tool result), since the model writes the next turn",
            )
    if end == "assistant" and prev != "assistant":
        raise DataError(
            source,
            i,
            last,
            f"the last turn is from '{prev}', but this data must end with an assistant reply "
            "(pass require_assistant_last=False for prompt-only data)",
        )


def split_implicit_prompt(row: Mapping[str, Any]) -> dict[str, Any]:
    """A preference row in TRL's implicit-prompt format with its shared turns moved into `prompt`, as
    TRL's `extract_prompt` does (rows that have a prompt come back unchanged, as a dict). Validate first."""
    row = dict(row)
    if row.get("prompt") is not None or not isinstance(row.get("chosen"), list):
        return row
    chosen, rejected = row["chosen"], row["rejected"]
    k = next(
        (j for j, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if dict(a) != dict(b)),
        min(len(chosen), len(rejected)),
    )
    rest = {key: v for key, v in row.items() if key != "prompt"}
    return {"prompt": chosen[:k], **rest, "chosen": chosen[k:], "rejected": rejected[k:]}


def _check_shared_prompt(
    chosen: list[Mapping[str, Any]], rejected: list[Mapping[str, Any]], source: str, i: int
) -> None:
    """Implicit prompt: TRL takes the longest common prefix of chosen and rejected as the prompt, so the
    two must agree up to an assistant turn and differ from there on; a prompt that differs would
    silently become a shorter (or empty) prompt."""
    k = next(
        (j for j, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if dict(a) != dict(b)),
        min(len(chosen), len(rejected)),
    )
    for field, side in (("chosen", chosen), ("rejected", rejected)):
        if k == len(side):
            raise DataError(
                source,
                i,
                field,
                f"all {len(side)} of its turns also open '{'rejected' if field == 'chosen' else 'chosen'}', "
                "so it has no reply of its own after the shared prompt",
            )
    if chosen[k]["role"] != "assistant" or rejected[k]["role"] != "assistant":
        part = "role" if chosen[k]["role"] != rejected[k]["role"] else "content"
        raise DataError(
            source,
            i,
            f"rejected[{k}].{part}",
            f"differs from chosen[{k}].{part} in a '{rejected[k]['role']}' turn: chosen and rejected must "
            "carry the same prompt and differ only from an assistant turn on (TRL takes their shared "
            "turns as the prompt)",
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
