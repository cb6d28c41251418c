"""labkit.kernels.patch: a patched tiny model trains like the unpatched one, for Llama, Qwen2, Qwen3 and a
PEFT LoRA model; unpatch restores the model's own forwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labkit.kernels import HAVE_TRITON, patch, unpatch

pytestmark = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")


def _batch(vocab: int, seed: int, batch: int = 2, seq: int = 8):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    labels = ids.clone()
    labels[0, :3] = -100                                   # a masked prompt, as in completion-only SFT
    return ids, labels


def _train(model, vocab: int, steps: int) -> list[float]:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(steps):
        ids, labels = _batch(vocab, step % 2)               # two batches in turn: loss must fall
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_twenty_steps_patched_match_unpatched(tokenizer):
    from labkit.models import tiny_model

    plain, _ = tiny_model(tokenizer)
    fused, _ = tiny_model(tokenizer)                      # same seed: the same weights
    report = patch(fused)
    assert set(report) == {"rmsnorm", "rope", "swiglu", "lm_head"}
    assert len(report["rmsnorm"]) == 5 and len(report["rope"]) == 2 and len(report["swiglu"]) == 2
    vocab = plain.config.vocab_size
    want, got = _train(plain, vocab, 20), _train(fused, vocab, 20)
    # fp32 kernels differ from eager torch by rounding only; over 20 Adam steps that stays far below 1e-3
    assert got == pytest.approx(want, abs=1e-4)
    assert got[-1] < got[0] - 0.5                         # and both learned


def test_without_labels_the_logits_are_the_models(tiny):
    model, _ = tiny
    ids, _ = _batch(model.config.vocab_size, 0)
    with torch.no_grad():
        want = model(input_ids=ids).logits
        patch(model)
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_loss_under_gradient_accumulation_matches_transformers(tiny):
    # The trainer passes num_items_in_batch: a sum over tokens divided by the count over all micro-batches.
    model, _ = tiny
    ids, labels = _batch(model.config.vocab_size, 0)
    n = torch.tensor(23)
    with torch.no_grad():
        want = model(input_ids=ids, labels=labels, num_items_in_batch=n).loss
        patch(model)
        out = model(input_ids=ids, labels=labels, num_items_in_batch=n)
    torch.testing.assert_close(out.loss, want, atol=1e-5, rtol=1e-4)
    assert out.logits is None                             # the full logits were never built


def test_unpatch_restores_the_class_forwards(tiny):
    model, _ = tiny
    report = patch(model)
    assert patch(model) == {}                             # patching again changes nothing
    assert unpatch(model) == report
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert unpatch(model) == {}


def test_only_what_was_asked_and_what_fits(tiny):
    model, _ = tiny
    model.lm_head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    report = patch(model, rope=False, swiglu=False)
    assert set(report) == {"rmsnorm", "skipped"}
    assert report["skipped"] == ["LlamaForCausalLM: lm_head has a bias"]


def _tiny(config_cls, model_cls, **extra):
    config = config_cls(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **extra)
    torch.manual_seed(0)
    return model_cls(config)


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_qwen_models(family):
    if family == "qwen2":                                # q/k/v biases; a sliding-window attribute
        from transformers import Qwen2Config as Config
        from transformers import Qwen2ForCausalLM as Model
    else:                                                # per-head q/k RMSNorm before the rotation
        from transformers import Qwen3Config as Config
        from transformers import Qwen3ForCausalLM as Model
    plain, fused = _tiny(Config, Model), _tiny(Config, Model)
    report = patch(fused)
    assert len(report["rope"]) == 2 and "lm_head" in report
    if family == "qwen3":
        assert len(report["rmsnorm"]) == 5 + 4           # the q_norm and k_norm of each layer too
    assert _train(fused, 256, 3) == pytest.approx(_train(plain, 256, 3), abs=1e-4)


def test_peft_lora_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    def lora_model():
        # task_type as labkit's adapters set it: the wrapper is then a PeftModelForCausalLM
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                            target_modules=["q_proj", "v_proj", "down_proj"])
        return get_peft_model(_tiny(LlamaConfig, LlamaForCausalLM), config)

    plain, fused = lora_model(), lora_model()
    # LoRA B starts at zero; give both the same nonzero B so the adapter path is really exercised.
    torch.manual_seed(1)
    for (name, p1), p2 in zip(plain.named_parameters(), fused.parameters()):
        if "lora_B" in name:
            p1.data.normal_(std=0.1)
            p2.data.copy_(p1.data)
    report = patch(fused)
    assert len(report["lora"]) == 6 and report["lm_head"] == ["base_model.model"]   # not the PEFT wrapper
    assert _train(fused, 256, 3) == pytest.approx(_train(plain, 256, 3), abs=1e-4)
