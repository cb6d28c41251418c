"""Swap a Llama/Qwen-style transformers model's hot spots for labkit.kernels, and back.

`patch(model)` replaces, on each module instance (never on the class, so other models are untouched):
- RMSNorm forwards with `rms_norm`;
- the attention forward with one that rotates q and k with `apply_rope` (otherwise as transformers' own
  forward for Llama, Mistral, Qwen2 and Qwen3);
- the gated MLP's silu(gate) * up with `swiglu`;
- the causal-LM forward, when called with labels, with one that computes the loss by `linear_cross_entropy`
  from the last hidden states: the full logits are never built, so `outputs.logits` is None then (calls
  without labels, generation included, keep the model's own forward);
- PEFT LoRA linear layers (one active plain adapter, no dropout while training) with `lora_linear`.
Modules it cannot handle exactly are left alone and named in the report. `unpatch(model)` restores every
forward it replaced. On a machine where Triton does not run, the patched forwards take each op's torch path
(LoRA layers: PEFT's own forward), so a patched model is always correct, only faster or leaner where the
kernels run.

TRL's SFTTrainer installs its own chunked LM head; patch such a model with lm_head=False.
"""

import sys
import types

import torch
from torch import nn

from labkit.kernels.cross_entropy import IGNORE_INDEX, linear_cross_entropy
from labkit.kernels.lora import lora_linear
from labkit.kernels.rmsnorm import rms_norm
from labkit.kernels.rope import apply_rope
from labkit.kernels.runtime import use_triton
from labkit.kernels.swiglu import swiglu

# Attention classes whose forward `_attention_forward` reproduces (checked against transformers 5.23).
_ATTENTION = {"LlamaAttention", "MistralAttention", "Qwen2Attention", "Qwen3Attention"}
_MARK = "_labkit_kernel"          # on a patched module: which kind of patch it got


def _rmsnorm_forward(self, hidden_states):
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x):
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def _attention_forward(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                       **kwargs):
    # transformers' Llama/Qwen attention with apply_rotary_pos_emb swapped for apply_rope.
    module = sys.modules[type(self).__module__]
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    query = self.q_proj(hidden_states).view(hidden_shape)
    key = self.k_proj(hidden_states).view(hidden_shape)
    if hasattr(self, "q_norm"):                      # Qwen3 normalises each head before the rotation
        query, key = self.q_norm(query), self.k_norm(key)
    query, key = query.transpose(1, 2), key.transpose(1, 2)
    value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
    cos, sin = position_embeddings
    query, key = apply_rope(query, key, cos, sin)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)
    attention = module.ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                             module.eager_attention_forward)
    if type(self).__name__ != "LlamaAttention":     # Mistral and Qwen pass their sliding window
        kwargs["sliding_window"] = getattr(self, "sliding_window",
                                           getattr(self.config, "sliding_window", None))
    dropout = self.attention_dropout if self.training else 0.0
    out, weights = attention(self, query, key, value, attention_mask, dropout=dropout, scaling=self.scaling,
                             **kwargs)
    return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


def causal_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                   num_items_in_batch=None, shift_labels: torch.Tensor | None = None,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """transformers' causal-LM loss (next-token shift; mean over the non-ignored labels, or a sum divided by
    num_items_in_batch under gradient accumulation), by `linear_cross_entropy` from hidden [B, T, H]."""
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    shift_labels = shift_labels.to(hidden.device)
    if num_items_in_batch is None:
        return linear_cross_entropy(hidden, weight, shift_labels, ignore_index=ignore_index)
    loss = linear_cross_entropy(hidden, weight, shift_labels, ignore_index=ignore_index, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def _causal_lm_forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                       inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):
    if labels is None:
        return type(self).forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids, past_key_values=past_key_values,
                                  inputs_embeds=inputs_embeds, use_cache=use_cache,
                                  logits_to_keep=logits_to_keep, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return_dict = kwargs.pop("return_dict", None)
    outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                         **kwargs)
    loss = causal_lm_loss(outputs.last_hidden_state, self.lm_head.weight, labels,
                          num_items_in_batch=kwargs.get("num_items_in_batch"),
                          shift_labels=kwargs.get("shift_labels"),
                          ignore_index=kwargs.get("ignore_index", IGNORE_INDEX))
    out = CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=outputs.past_key_values,
                                 hidden_states=outputs.hidden_states, attentions=outputs.attentions)
    return out.to_tuple() if return_dict is False else out


def _lora_forward(self, x, *args, **kwargs):
    adapters = [a for a in self.active_adapters if a in self.lora_A]
    if args or kwargs or self.disable_adapters or self.merged or len(adapters) != 1:
        return type(self).forward(self, x, *args, **kwargs)          # PEFT's own path for the other cases
    name = adapters[0]
    dropout = self.lora_dropout[name]
    if name in getattr(self, "lora_variant", {}) or (self.training and isinstance(dropout, nn.Dropout)
                                                      and dropout.p > 0):
        return type(self).forward(self, x, *args, **kwargs)          # DoRA etc., or adapter-input dropout
    base = self.base_layer
    if not use_triton(x, self.lora_A[name].weight):
        # PEFT's own path then: lora_linear's torch path would keep a dequantized copy of a 4-bit base
        # weight alive for backward (measured: 3x a QLoRA step's memory on Qwen2.5-0.5B's shapes on CPU).
        return type(self).forward(self, x)
    return lora_linear(x, base.weight, self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name],
                       base.bias)


def _kind(module: nn.Module) -> str | None:
    """Which patch fits this module, or None."""
    name = type(module).__name__
    if name.endswith("RMSNorm") and hasattr(module, "variance_epsilon") and hasattr(module, "weight"):
        return "rmsnorm"
    if name in _ATTENTION:
        return "rope"
    if all(hasattr(module, p) for p in ("gate_proj", "up_proj", "down_proj")) and \
            type(getattr(module, "act_fn", None)).__name__ in ("SiLU", "SiLUActivation"):
        return "swiglu"
    # Own children only: PEFT's PeftModelForCausalLM also ends in ForCausalLM and forwards lm_head and model
    # to the model it wraps, which gets this patch itself.
    if name.endswith("ForCausalLM") and isinstance(module._modules.get("lm_head"), nn.Linear) \
            and "model" in module._modules:
        return "lm_head"
    if hasattr(module, "lora_A") and isinstance(getattr(module, "base_layer", None), nn.Linear):
        return "lora"
    return None


_FORWARDS = {"rmsnorm": _rmsnorm_forward, "rope": _attention_forward, "swiglu": _mlp_forward,
             "lm_head": _causal_lm_forward, "lora": _lora_forward}


def _problem(kind: str, module: nn.Module) -> str | None:
    """Why a module of this kind cannot be patched exactly, or None."""
    if "forward" in module.__dict__:
        return "has an instance forward already (an accelerate hook?)"
    if kind == "lm_head":
        if module.lm_head.bias is not None:
            return "lm_head has a bias"
        if getattr(getattr(module, "config", None), "final_logit_softcapping", None):
            return "logit soft-capping"
        if type(module.lm_head).__name__ != "Linear":
            return "lm_head is wrapped (an adapter or a quantised layer)"
    if kind == "lora":
        weight = module.base_layer.weight
        if not weight.is_floating_point() and getattr(weight, "quant_state", None) is None:
            return "base weight is neither floating point nor bitsandbytes 4-bit"
    return None


def patch(model: nn.Module, *, rmsnorm: bool = True, rope: bool = True, swiglu: bool = True,
          lm_head: bool = True, lora: bool = True) -> dict[str, list[str]]:
    """Swap the forwards of `model`'s supported modules for labkit.kernels (a PeftModel works too).

    Returns {kind: [module names]} for each kind patched, plus "skipped": ["name: why"] for modules that
    looked eligible but were left alone. Patching twice is a no-op for modules already patched.
    """
    wanted = {"rmsnorm": rmsnorm, "rope": rope, "swiglu": swiglu, "lm_head": lm_head, "lora": lora}
    report: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = _kind(module)
        if kind is None or not wanted[kind] or hasattr(module, _MARK):
            continue
        why = _problem(kind, module)
        if why:
            report.setdefault("skipped", []).append(f"{name or type(module).__name__}: {why}")
            continue
        setattr(module, _MARK, kind)
        module.forward = types.MethodType(_FORWARDS[kind], module)
        report.setdefault(kind, []).append(name or type(module).__name__)
    return report


def unpatch(model: nn.Module) -> dict[str, list[str]]:
    """Restore every forward `patch` replaced; returns {kind: [module names]} restored."""
    report: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = module.__dict__.get(_MARK)
        if kind is None:
            continue
        del module.forward                            # the class forward shows through again
        delattr(module, _MARK)
        report.setdefault(kind, []).append(name or type(module).__name__)
    return report
