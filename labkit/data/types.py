"""Dataset kinds that TRL trainers consume, their required fields, and detection of a row's kind."""

from __future__ import annotations

from enum import Enum
from typing import Any

from labkit.errors import ConfigError, DataError


class Kind(str, Enum):
    """The row formats labkit accepts; extra columns are allowed and kept.

    Which trainer reads which kind:
    - LANGUAGE_MODELING, PROMPT_COMPLETION, CONVERSATIONAL: SFTTrainer
    - PREFERENCE: DPOTrainer (and its loss types), RewardTrainer, ORPO/CPO
    - UNPAIRED_PREFERENCE: KTOTrainer
    - PROMPT_ANSWER: GRPOTrainer / RLOOTrainer with a verifiable reward on `answer`
    """

    LANGUAGE_MODELING = "language_modeling"  # {"text": str}
    PROMPT_COMPLETION = "prompt_completion"  # {"prompt", "completion"}: both str or both message lists
    CONVERSATIONAL = "conversational"  # {"messages": [{"role", "content"}, ...]}
    PREFERENCE = "preference"  # {"prompt", "chosen", "rejected"}: all str or all message lists
    UNPAIRED_PREFERENCE = "unpaired_preference"  # {"prompt", "completion", "label": bool}
    PROMPT_ANSWER = "prompt_answer"  # {"prompt": str | messages, "answer": str}


REQUIRED_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.LANGUAGE_MODELING: ("text",),
    Kind.PROMPT_COMPLETION: ("prompt", "completion"),
    Kind.CONVERSATIONAL: ("messages",),
    Kind.PREFERENCE: ("prompt", "chosen", "rejected"),
    Kind.UNPAIRED_PREFERENCE: ("prompt", "completion", "label"),
    Kind.PROMPT_ANSWER: ("prompt", "answer"),
}

# Fields that may hold either a string (standard form) or a list of messages (conversational form).
TEXT_OR_MESSAGES_FIELDS = frozenset({"prompt", "completion", "chosen", "rejected"})

ROLES = frozenset({"system", "user", "assistant", "tool"})


def as_kind(kind: Kind | str) -> Kind:
    """Turn a kind name into a Kind, or raise ConfigError listing the known names."""
    try:
        return Kind(kind)
    except ValueError:
        known = ", ".join(k.value for k in Kind)
        raise ConfigError("kind", f"unknown dataset kind {kind!r}; known kinds: {known}") from None


def _kind_of(fields: set[str]) -> Kind | None:
    """The most specific kind whose defining fields are all in `fields`, or None."""
    if "messages" in fields:
        return Kind.CONVERSATIONAL
    if {"chosen", "rejected"} <= fields:
        return Kind.PREFERENCE
    if {"completion", "label"} <= fields:
        return Kind.UNPAIRED_PREFERENCE
    if {"prompt", "completion"} <= fields:
        return Kind.PROMPT_COMPLETION
    if {"prompt", "answer"} <= fields:
        return Kind.PROMPT_ANSWER
    if "text" in fields:
        return Kind.LANGUAGE_MODELING
    return None


def detect_kind(row: Any, *, source: str = "row", index: int | None = None, strict: bool = False) -> Kind:
    """Guess a row's kind from the fields it has (the most specific match wins).

    A value of None counts as absent (HF datasets fill a column missing from a row with None). When the
    row's columns, nulls included, would make another kind, the null field is named in a DataError:
    always when no kind matches without it (a null prompt), and with strict=True also when it silently
    changes the kind (a KTO row whose label is null would read as prompt_completion). `source` and
    `index` only feed the error message.
    """
    if not isinstance(row, dict):
        raise DataError(source, index, None, f"expected a dict (JSON object), got {type(row).__name__}")
    kind = _kind_of({k for k, v in row.items() if v is not None})
    by_columns = _kind_of(set(row))
    if by_columns is not None and by_columns is not kind and (strict or kind is None):
        null = next(f for f in REQUIRED_FIELDS[by_columns] if row.get(f) is None)
        reads_as = f"the row would read as kind '{kind.value}'" if kind else "no kind fits the row"
        raise DataError(
            source,
            index,
            null,
            f"null, so {reads_as}; its columns are those of kind '{by_columns.value}' "
            f"(needs: {', '.join(REQUIRED_FIELDS[by_columns])}). Fill it in, or drop the column",
        )
    if kind is None:
        shapes = "; ".join(f"{k.value}: {', '.join(f)}" for k, f in REQUIRED_FIELDS.items())
        raise DataError(
            source,
            index,
            None,
            f"cannot tell the dataset kind from fields {sorted(row)}; expected one of {shapes}",
        )
    return kind


def is_conversational(row: dict[str, Any]) -> bool:
    """True when the row's text lives in message lists rather than plain strings."""
    if isinstance(row.get("messages"), list):
        return True
    return any(isinstance(row.get(f), list) for f in TEXT_OR_MESSAGES_FIELDS)
