"""Shared fixtures: the embedded tokenizer, tiny random models, and an offline guard for every test."""

from __future__ import annotations

import os

import pytest
import torch

# No test may reach a model hub: the whole suite must pass on an offline machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Without a GPU, labkit.kernels' Triton kernels run under Triton's interpreter (numpy on the CPU), so
# tests/kernels checks them there. It must be set before labkit.kernels is first imported, which any test
# module may do: hence here, the first file pytest loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


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


@pytest.fixture(scope="session")
def vllm_engine(tmp_path_factory):
    """One vLLM server for the whole session: the embedded model in fp32 (greedy tokens comparable with the
    hf engine), four LoRA slots up to rank 16, small KV cache. Skips when there is no vLLM environment
    (`make vllm-env`; CI builds it). Tests that change its base weights put them back."""
    from labkit.infer import VLLMEngine, vllm_available

    if not vllm_available():
        msg = "no vLLM environment: run `make vllm-env` (make test builds it)"
        if os.environ.get("CI"):
            pytest.fail(msg)   # CI must run the vLLM tests, not skip them
        pytest.skip(msg)
    engine = VLLMEngine(dtype="float32", max_model_len=1024, max_loras=4, max_lora_rank=16, max_num_seqs=32,
                        kv_cache_gb=1, run_dir=tmp_path_factory.mktemp("vllm"))
    yield engine
    engine.close()
