"""Trainable models for the stages: full weights, LoRA (PEFT) or QLoRA (bitsandbytes 4-bit), via Unsloth on
GPU, or on CPU when asked for (backend='unsloth') and the installed Unsloth has its CPU backend (2026.10.9+).

One function, `load_for_training`, decides the backend and says which it chose and why in a log line; with
kernels=True it also swaps the model's hot spots for labkit.kernels (`labkit.kernels.patch`).

Unsloth patches transformers and TRL when imported (on CPU: every TrainingArguments turns padding-free and
packing off); those patches last for the process, so run an Unsloth job in a process of its own.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any

import torch

from labkit.errors import ConfigError, MissingExtraError
from labkit.models.capabilities import unsloth_cpu_backend
from labkit.models.device import resolve_device, resolve_dtype
from labkit.models.loading import load_tokenizer, resolve_model_path
from labkit.quiet import quiet_progress

log = logging.getLogger(__name__)

LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def target_modules(spec: str) -> str | list[str]:
    """'all-linear' (PEFT's own keyword) or a comma-separated list of module names."""
    if spec == "all-linear":
        return spec
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ConfigError("target_modules", "empty; use 'all-linear' or names like 'q_proj,v_proj'")
    return names


def lora_config(r: int, alpha: int, dropout: float, targets: str, *, seed_init: bool = True):
    """A PEFT LoraConfig for a causal LM; `targets` as in `target_modules`. ConfigError when r ≤ 0.

    seed_init=True is PEFT's usual init (B = 0: the adapter starts as a no-op); False initialises B
    randomly too, so tests can see an adapter change the model before any training.
    """
    from peft import LoraConfig

    if r <= 0:
        raise ConfigError("lora_r", f"must be positive, got {r}")
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules(targets),
                      bias="none", task_type="CAUSAL_LM", init_lora_weights=seed_init)


def choose_backend(requested: str, method: str, device: torch.device) -> tuple[str, str]:
    """('unsloth' | 'peft', reason). auto: Unsloth on CUDA when installed, else PEFT. 'unsloth' also runs on
    CPU when the installed Unsloth has its CPU backend; it is never picked there unasked (it patches
    transformers and TRL for the whole process)."""
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "peft":
        return "peft", "backend='peft' asked for"
    if requested == "unsloth":
        if not has_unsloth:
            raise MissingExtraError("unsloth", "gpu", "fast single-GPU (Q)LoRA" if device.type == "cuda" else
                                    "on a CPU, `bash scripts/setup_unsloth.sh` instead: a plain install "
                                    "replaces torch")
        if device.type == "cuda":
            return "unsloth", "backend='unsloth' asked for"
        if device.type == "cpu" and unsloth_cpu_backend():
            return "unsloth", "backend='unsloth' asked for: Unsloth's CPU backend"
        if device.type == "cpu":
            raise ConfigError("backend", "the installed Unsloth has no CPU backend (2026.10.9 and later have "
                              "one); upgrade it, or use backend='auto' or 'peft' here")
        raise ConfigError("backend", f"Unsloth runs on CUDA or CPU, not {device.type}; use backend='auto' or "
                          "'peft' here")
    if device.type != "cuda":
        return "peft", (f"no CUDA device ({device.type}): PEFT (Unsloth's CPU backend is opt-in: "
                        "backend='unsloth')")
    if not has_unsloth:
        return "peft", "Unsloth is not installed: pip install 'labkit[gpu]' for faster QLoRA"
    return "unsloth", "CUDA and Unsloth present"


def four_bit_config(compute_dtype: torch.dtype):
    """NF4 with double quantisation: the QLoRA recipe (Dettmers et al. 2023)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def keep_4bit_trainable_on_cpu(model) -> int:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference on the first eval-mode forward.

    bnb 0.50 repacks a Linear4bit's weight into an inference layout the first time it runs in eval
    mode on an AVX512-BF16 CPU (a generate() before training does that); afterwards most LoRA tensors
    silently receive no gradient. Turning the fast path off per layer keeps training correct.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for m in layers:
        m.support_avx512bf16_for_cpu = False
    return len(layers)


def load_for_training(model_name: str, *, method: str, lora_r: int = 16, lora_alpha: int = 32,
                      lora_dropout: float = 0.0, targets: str = "all-linear", dtype: str = "auto",
                      device: str = "auto", backend: str = "auto", max_length: int = 1024,
                      gradient_checkpointing: bool = False, seed: int = 0,
                      kernels: bool = False) -> tuple[Any, Any, dict]:
    """(model, tokenizer, info) ready for a trainer. info: backend, reason, dtypes, parameter counts, and with
    kernels=True what `labkit.kernels.patch` swapped (its LM head left alone: TRL computes the loss)."""
    dev = resolve_device(device)
    compute_dtype = resolve_dtype(dtype, dev)
    if method not in ("full", "lora", "qlora"):
        raise ConfigError("method", f"'{method}' is not one of full, lora, qlora")
    chosen, reason = ("peft", "full fine-tuning needs no adapter library") if method == "full" else \
        choose_backend(backend, method, dev)
    log.info("SFT backend: %s (%s)", chosen, reason)
    torch.manual_seed(seed)
    if chosen == "unsloth":
        model, tok = _load_unsloth(model_name, method, lora_r, lora_alpha, lora_dropout, targets, max_length,
                                   gradient_checkpointing, seed, compute_dtype, dev)
    else:
        model, tok = _load_peft(model_name, method, lora_r, lora_alpha, lora_dropout, targets, compute_dtype,
                                dev, gradient_checkpointing)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = {"backend": chosen, "backend_reason": reason,
            "compute_dtype": str(compute_dtype).replace("torch.", ""),
            "trainable_params": trainable, "total_params": total, "device": str(dev)}
    if kernels:
        info["kernels"] = patch_kernels(model)
    return model, tok, info


def patch_kernels(model) -> dict[str, int]:
    """labkit.kernels.patch on a model about to train: {kind: modules patched}, "skipped" among them.

    The LM head stays: TRL computes the loss (and DPO/GRPO their log-probs) from the logits itself."""
    from labkit.kernels import backend_name, patch

    report = patch(model, lm_head=False)
    for why in report.get("skipped", []):
        log.info("labkit.kernels left alone %s", why)
    counts = {kind: len(names) for kind, names in report.items()}
    log.info("labkit.kernels (%s backend): %s", backend_name(), counts)
    return counts


def _load_peft(name, method, r, alpha, dropout, targets, compute_dtype, dev, gradient_checkpointing):
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    tok = load_tokenizer(name)
    if method == "full":
        # fp32 master weights: bf16 weights lose small AdamW updates. Speed comes from bf16 autocast.
        weights_dtype = torch.float32
    else:
        # Frozen base weights can live in the compute dtype; PEFT keeps the adapters in fp32.
        weights_dtype = compute_dtype
    kwargs: dict[str, Any] = {"dtype": weights_dtype}
    if method == "qlora":
        kwargs["quantization_config"] = four_bit_config(compute_dtype)
        if dev.type == "cuda":
            kwargs["device_map"] = {"": 0}
    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method != "qlora":
        model.to(dev)
    if method == "full":
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model, tok
    if method == "qlora":
        if dev.type == "cpu":
            keep_4bit_trainable_on_cpu(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config(r, alpha, dropout, targets)), tok


def _load_unsloth(name, method, r, alpha, dropout, targets, max_length, gradient_checkpointing, seed,
                  compute_dtype, dev):
    cpu = dev.type == "cpu"
    if cpu and "unsloth" not in sys.modules:
        # Unsloth picks its backend at import: on a machine with an NVIDIA driver it would pick the GPU one.
        os.environ.setdefault("UNSLOTH_FORCE_CPU", "1")
    try:
        import unsloth
        from unsloth import FastLanguageModel
    except ImportError as exc:
        raise MissingExtraError("unsloth", "gpu", "fast single-GPU (Q)LoRA") from exc
    if cpu and unsloth.DEVICE_TYPE != "cpu":
        raise ConfigError("backend", f"Unsloth was imported with its {unsloth.DEVICE_TYPE} backend in this "
                          "process; train on CPU through it in a fresh process (or use backend='peft')")
    # On CPU labkit's dtype holds (Unsloth's own rule is the same, bf16 where native); on GPU Unsloth picks.
    model, tok = FastLanguageModel.from_pretrained(
        model_name=str(resolve_model_path(name)), max_seq_length=max_length,
        dtype=compute_dtype if cpu else None, load_in_4bit=method == "qlora")
    mods = LLAMA_LINEARS if targets == "all-linear" else target_modules(targets)
    model = FastLanguageModel.get_peft_model(
        model, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=mods, bias="none",
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False, random_state=seed)
    return model, tok
