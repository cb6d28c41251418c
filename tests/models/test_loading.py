"""load_model: the embedded default offline, its safetensors cache, parity with the GGUF file, errors."""

from __future__ import annotations

import os

import pytest
import torch

from labkit.models import EMBEDDED, ModelLoadError, generate, load_model, loading, tiny_model

PROMPTS = ["What is 12 + 7?", "Name three colours.", "Write a haiku about the sea."]


def test_default_loads_embedded_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model, tok = load_model(dtype="float32")
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30
    assert getattr(model.config, "quantization_config", None) is None
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert model.dtype == torch.float32 and not model.training


def test_second_load_reads_the_cache_not_the_gguf(monkeypatch):
    load_model()  # makes sure the cache exists

    def no_gguf(*a, **k):
        raise AssertionError("the GGUF file was parsed again although the cache exists")

    monkeypatch.setattr(loading, "load_from_gguf", no_gguf)
    model, _ = load_model(dtype="float32")
    assert model.config.vocab_size == 49152


def test_greedy_tokens_match_the_gguf_model():
    cached, tok = load_model(dtype="float32")
    direct, direct_tok = loading.load_from_gguf()
    direct.eval()
    a = generate(cached, tok, PROMPTS, max_new_tokens=24)
    b = generate(direct, direct_tok, PROMPTS, max_new_tokens=24)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert all(len(g.token_ids) > 3 for g in a)


def test_bf16_dtype_and_explicit_cpu():
    model, _ = load_model(EMBEDDED, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"


def test_interrupted_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    from transformers import PreTrainedModel

    def crash(self, *a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        loading.ensure_embedded_cache()
    assert list((tmp_path / "models").iterdir()) == []  # neither a partial target nor a temp dir


def test_local_dir_round_trip(tmp_path, tokenizer):
    model, _ = tiny_model(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_model(str(tmp_path), dtype="float32")
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert tok.chat_template == tokenizer.chat_template


def test_bad_names_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="without config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="not in the HF cache"):
        load_model("nobody/no-such-model-anywhere")
    with pytest.raises(ModelLoadError, match="load_from_gguf"):
        load_model("weights.gguf")


def test_tiny_model_is_small_and_uses_the_same_tokenizer(tokenizer):
    model, tok = tiny_model(tokenizer, seed=1)
    assert tok is tokenizer
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.config.vocab_size == len(tokenizer)
    again, _ = tiny_model(tokenizer, seed=1)
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
