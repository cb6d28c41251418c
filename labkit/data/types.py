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


def detect_kind(row: Any, *, source: str = "row", index: int | None = None) -> Kind:
    """Guess a row's kind from the fields it has (the most specific match wins).

    `source` and `index` only feed the error message when nothing matches.
    """
    if not isinstance(row, dict):
        raise DataError(source, index, None, f"expected a dict (JSON object), got {type(row).__name__}")
    # A value of None counts as absent: HF datasets fill missing columns with None.
    present = {k for k, v in row.items() if v is not None}
    if "messages" in present:
        return Kind.CONVERSATIONAL
    if {"chosen", "rejected"} <= present:
        return Kind.PREFERENCE
    if {"completion", "label"} <= present:
        return Kind.UNPAIRED_PREFERENCE
    if {"prompt", "completion"} <= present:
        return Kind.PROMPT_COMPLETION
    if {"prompt", "answer"} <= present:
        return Kind.PROMPT_ANSWER
    if "text" in present:
        return Kind.LANGUAGE_MODELING
    shapes = "; ".join(f"{k.value}: {', '.join(f)}" for k, f in REQUIRED_FIELDS.items())
    raise DataError(
        source,
        index,
        None,
        f"cannot tell the dataset kind from fields {sorted(present)}; expected one of {shapes}",
    )


def is_conversational(row: dict[str, Any]) -> bool:
    """True when the row's text lives in message lists rather than plain strings."""
    if isinstance(row.get("messages"), list):
        return True
    return any(isinstance(row.get(f), list) for f in TEXT_OR_MESSAGES_FIELDS)
