"""Fixtures for the engine tests: random LoRA adapters saved to disk and the models they merge into."""

from __future__ import annotations

import copy

import pytest
import torch


def save_random_adapter(base, path, *, seed: int, r: int = 8, scale: float = 4.0):
    """Give `base` a random rank-r LoRA on q/v (both factors non-zero, times `scale`), save it, return the
    merged model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():  # large enough to change greedy outputs of a tiny random model
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(scale)
    peft_model.save_pretrained(str(path))
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged


@pytest.fixture(scope="session")
def make_adapter():
    """save_random_adapter(base, path, seed=..., r=8, scale=4.0) -> merged model."""
    return save_random_adapter


@pytest.fixture
def adapters(tiny, tmp_path):
    """Two random adapters for the `tiny` model: {name: (dir, merged model)}."""
    model, _ = tiny
    out = {}
    for seed, name in enumerate(("sft", "dpo"), start=1):
        path = tmp_path / name
        out[name] = (str(path), save_random_adapter(model, path, seed=seed))
    return out
