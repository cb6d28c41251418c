"""Datasets for post-training: kinds, validation with clear errors, loading, chat templates and loss masks."""

from labkit.data.chat import assistant_mask, mask_spans, render, require_chat_template
from labkit.data.io import load_rows, read_jsonl, read_rows, write_jsonl
from labkit.data.types import REQUIRED_FIELDS, ROLES, Kind, detect_kind, is_conversational
from labkit.data.validate import row_lengths, split_implicit_prompt, validate_rows

__all__ = [
    "REQUIRED_FIELDS",
    "ROLES",
    "Kind",
    "assistant_mask",
    "detect_kind",
    "is_conversational",
    "load_rows",
    "mask_spans",
    "read_jsonl",
    "read_rows",
    "render",
    "require_chat_template",
    "row_lengths",
    "split_implicit_prompt",
    "validate_rows",
    "write_jsonl",
]
