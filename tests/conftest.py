"""Shared fixtures: the embedded tokenizer, tiny random models, and an offline guard for every test."""

from __future__ import annotations

import os

import pytest

# No test may reach a model hub: the whole suite must pass on an offline machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer (from labkit's safetensors cache, converted on first use)."""
    from labkit.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def tiny(tokenizer):
    """A fresh random 2-layer Llama (hidden 64) with the embedded tokenizer: (model, tokenizer)."""
    from labkit.models import tiny_model

    return tiny_model(tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny random model saved as a local model dir, so stages can load it by path like any model."""
    from labkit.models import tiny_model

    path = tmp_path_factory.mktemp("tiny-model")
    model, _ = tiny_model(tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
