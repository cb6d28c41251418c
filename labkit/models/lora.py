"""The LoRA merging lab: LoRA maths, merge/unmerge, adapter scaling, blending, side-by-side generation,
merge checks.

Everything here wraps PEFT (`PeftModel`, `LoraLayer`, `add_weighted_adapter`, `merge_and_unload`) and, for
QLoRA bases, bitsandbytes `Linear4bit`. Three behaviours of those libraries shape the code:

- `merge_and_unload` works in place on the wrapped model, so `merge` deep-copies first: the caller's
  PeftModel keeps working.
- On a 4-bit base, PEFT merges by dequantising NF4, adding ΔW and *re-quantising* to NF4; unmerge does
  the same in reverse, so merge→unmerge does not give the original weights back. `merged()` therefore
  restores the saved weight objects instead of trusting `unmerge_adapter` alone.
- On CPUs with AVX-512 BF16, a no-grad forward on a bnb 4-bit layer repacks its weight into a CPU
  layout that `dequantize_4bit` (which PEFT's merge uses) does not understand; merging after such a
  forward silently builds wrong weights. `_unpack_4bit` turns the repacking off and undoes it first.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labkit.errors import ConfigError

BLEND_METHODS = ("linear", "ties", "dare_linear", "dare_ties", "svd", "cat")
# Methods that average A and B matrices directly, so PEFT needs every parent at the same rank.
_SAME_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties")
_DENSITY_METHODS = ("ties", "dare_linear", "dare_ties")

# Max |logit| difference a merge may introduce, by the dtype the merged weights are stored in.
# fp32: W + ΔW is exact to ~1e-7 relative, so 1e-4 on logits leaves room for reordered sums only.
# bf16 keeps 8 mantissa bits: storing W + ΔW rounds each weight by up to 2^-9 relative, which moves
# logits of a small model by ~1e-2; fp16 (11 bits) by ~1e-3.
MERGE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ------------------------------------------------------------------------------------------------------------
# LoRA maths
# ------------------------------------------------------------------------------------------------------------

def lora_params_for_shapes(shapes: Sequence[tuple[int, int]], r: int) -> int:
    """Trainable parameters of rank-r LoRA on linears of (in_features, out_features): Σ r·(in + out).

    Each adapted W [out, in] gains A [r, in] and B [out, r]; ΔW = (alpha/r)·B·A has W's shape but only
    r·(in + out) free numbers.
    """
    if r <= 0:
        raise ConfigError("r", f"LoRA rank must be a positive integer, got {r}")
    return sum(r * (i + o) for i, o in shapes)


def load_adapters(base_model: nn.Module, adapters: dict[str, str | os.PathLike]):
    """Put several saved adapters on one base model (a PeftModel); the first one named is active."""
    from peft import PeftModel

    if not adapters:
        raise ConfigError("adapters", "name at least one adapter directory")
    (first, first_dir), *rest = adapters.items()
    model = PeftModel.from_pretrained(base_model, str(first_dir), adapter_name=first)
    for name, path in rest:
        model.load_adapter(str(path), adapter_name=name)
    model.set_adapter(first)
    return model


def _is_4bit(module: nn.Module) -> bool:
    return type(module).__name__ in ("Linear4bit", "LinearNF4", "LinearFP4") and hasattr(module,
                                                                                         "quant_state")


def _targeted_linears(model: nn.Module, target_modules: str | Sequence[str]) -> list[tuple[str, nn.Module]]:
    """(name, layer) of the plain or 4-bit linears a LoRA with these target_modules would adapt.

    Works on a plain model and on one already wrapped by PEFT (whose adapted linears are LoraLayers
    holding the original as `base_layer`; the adapter's own lora_A/lora_B linears are skipped).
    """
    from peft.tuners.lora import LoraLayer

    names = None if target_modules == "all-linear" else (
        [target_modules] if isinstance(target_modules, str) else list(target_modules))
    out = []
    for name, mod in model.named_modules():
        parts = name.split(".")
        if any(p.startswith("lora_") or p == "base_layer" for p in parts):
            continue
        if isinstance(mod, LoraLayer):
            mod = mod.get_base_layer()
        elif not isinstance(mod, nn.Linear):  # bnb Linear4bit subclasses nn.Linear
            continue
        # PEFT's "all-linear" skips the output head (lm_head), as here.
        if (parts[-1] != "lm_head") if names is None else (parts[-1] in names):
            out.append((name, mod))
    return out


def _n_params(model: nn.Module) -> int:
    """Logical parameter count without any LoRA adapter: a 4-bit weight counts in·out,
    not its packed storage."""
    total, seen = 0, set()
    for mname, mod in model.named_modules():
        if any(p.startswith("lora_") for p in mname.split(".")):
            continue
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:  # tied input/output embeddings count once
                continue
            seen.add(id(p))
            total += mod.in_features * mod.out_features if pname == "weight" and _is_4bit(mod) else p.numel()
    return total


def lora_param_count(model: nn.Module, r: int, target_modules: str | Sequence[str] = ("q_proj", "v_proj")
                     ) -> dict[str, Any]:
    """What rank-r LoRA on `target_modules` adds to `model`: {'trainable', 'total', 'percent', 'modules'}.

    `total` is the model's own parameter count (without the adapter); `percent` = 100·trainable/total.
    `target_modules` is a list of leaf names (q_proj, v_proj, ...) or "all-linear" (every linear but lm_head).
    """
    linears = _targeted_linears(model, target_modules)
    if not linears:
        raise ConfigError("target_modules", f"no linear layer in the model matches {target_modules!r}")
    trainable = lora_params_for_shapes([(m.in_features, m.out_features) for _, m in linears], r)
    total = _n_params(model)
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total,
            "modules": len(linears)}


_OPTIMIZER_BYTES = {"adamw": 8.0, "adamw_8bit": 2.0, "sgd": 0.0}


def memory_estimate(n_params: int, trainable: int, mode: str = "full", dtype_bytes: float = 2,
                    optimizer: str = "adamw", quantized_params: int | None = None,
                    double_quant: bool = True) -> dict[str, float]:
    """Training memory in bytes for weights, gradients and optimizer states: {'weights', 'grads', 'optimizer',
    'total'}.

    Assumptions (activations, KV caches and framework overhead are left out — they depend on batch × length):
    - full: every one of `n_params` weights is trained, stored and differentiated in `dtype_bytes`
      (2 = bf16/fp16, 4 = fp32); `trainable` is ignored (= n_params).
    - lora: the frozen base sits in `dtype_bytes`; the `trainable` adapter weights and their gradients
      are fp32 (PEFT upcasts adapters to fp32 by default), 4 bytes each.
    - qlora: as lora, but `quantized_params` base weights (default: all of `n_params`; pass the count in
      linear layers, since embeddings and norms stay in `dtype_bytes`) are 4-bit NF4 = 0.5 byte/param plus
      quantisation constants: one fp32 absmax per 64-weight block (0.0625 byte/param), or with double
      quantisation an 8-bit absmax per block plus one fp32 constant per 256 blocks (≈0.0159 byte/param).
    - optimizer: "adamw" keeps 2 fp32 states (m, v) per trainable param = 8 bytes; "adamw_8bit" 2 bytes;
      "sgd" (no momentum) 0.
    """
    if mode not in ("full", "lora", "qlora"):
        raise ConfigError("mode", f"must be 'full', 'lora' or 'qlora', got {mode!r}")
    if optimizer not in _OPTIMIZER_BYTES:
        raise ConfigError("optimizer", f"must be one of {sorted(_OPTIMIZER_BYTES)}, got {optimizer!r}")
    if mode == "full":
        trainable = n_params
        weights = n_params * dtype_bytes
        grads = n_params * dtype_bytes
    else:
        if mode == "lora":
            base = n_params * dtype_bytes
        else:
            q = n_params if quantized_params is None else quantized_params
            consts = (1 / 64 + 4 / (64 * 256)) if double_quant else 4 / 64
            base = q * (0.5 + consts) + (n_params - q) * dtype_bytes
        weights = base + trainable * 4
        grads = trainable * 4
    opt = trainable * _OPTIMIZER_BYTES[optimizer]
    return {"weights": float(weights), "grads": float(grads), "optimizer": float(opt),
            "total": float(weights + grads + opt)}


# ------------------------------------------------------------------------------------------------------------
# PEFT helpers
# ------------------------------------------------------------------------------------------------------------

def _lora_layers(peft_model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in peft_model.modules() if isinstance(m, LoraLayer)]


def _require_peft(peft_model: Any) -> None:
    from peft import PeftModel

    if not isinstance(peft_model, PeftModel):
        raise ConfigError("peft_model", f"expected a peft.PeftModel, got {type(peft_model).__name__}")


def _check_adapter(peft_model: Any, adapter: str, field: str = "adapter") -> None:
    known = list(peft_model.peft_config)
    if adapter not in known:
        raise ConfigError(field, f"unknown adapter {adapter!r}; the model has {known}")


def _unpack_4bit(model: nn.Module) -> None:
    """Stop bnb from repacking 4-bit weights for its CPU kernel and undo any repacking already done.

    The repacked layout is only understood by bnb's own CPU matmul; `dequantize_4bit` (PEFT merge) and
    training (gradients to LoRA tensors) both need the standard layout.
    """
    for mod in model.modules():
        if not _is_4bit(mod):
            continue
        mod.support_avx512bf16_for_cpu = False
        w = mod.weight
        if getattr(w.quant_state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            w.data, w.quant_state = _convert_weight_packed_for_cpu_inverse(w.data, w.quant_state)
            mod.quant_state = w.quant_state


def is_quantized(model: nn.Module) -> bool:
    """True when the model holds bitsandbytes 4-bit linears."""
    return any(_is_4bit(m) for m in model.modules())


def _compute_dtype(peft_model: nn.Module) -> torch.dtype:
    """The dtype the base model computes in: its weights' dtype, or bnb's compute dtype on a 4-bit base.

    Not the adapters' dtype: PEFT upcasts LoRA weights to fp32 on a bf16/fp16 base (autocast_adapter_dtype).
    """
    for layer in _lora_layers(peft_model):
        base = layer.get_base_layer()
        if _is_4bit(base):
            return base.compute_dtype or torch.float32
        return base.weight.dtype
    return next(p.dtype for p in peft_model.parameters() if p.is_floating_point())


def _adapter_dtype(peft_model: nn.Module) -> torch.dtype | None:
    """The dtype the LoRA A/B weights are stored (and computed) in; None without a LoRA layer."""
    for layer in _lora_layers(peft_model):
        for a in layer.active_adapters:
            if a in layer.lora_A:
                return layer.lora_A[a].weight.dtype
    return None


# ------------------------------------------------------------------------------------------------------------
# merge / unmerge
# ------------------------------------------------------------------------------------------------------------

def _copy(model: nn.Module) -> nn.Module:
    """A deep copy that computes with its own weights.

    Trainers patch `forward` on the instance (TRL's SFTTrainer wraps it to add a fused LM head; accelerate
    wraps it for autocast) with closures over the *original* bound forward. deepcopy does not copy
    closures, so the copy would still run the original model: a merge check would compare the unmerged
    model with itself and report 0. The copy gets each module's class `forward` back instead.
    """
    with warnings.catch_warnings():  # deepcopy touches deprecated transformers properties
        warnings.simplefilter("ignore", FutureWarning)
        work = copy.deepcopy(model)
    for mod in work.modules():
        mod.__dict__.pop("forward", None)
    return work


def _dequantized_merge(peft_model: nn.Module) -> nn.Module:
    """A plain (no bnb, no PEFT) copy of a 4-bit PeftModel whose linears hold dequant(W)
    + Σ ΔW in full precision.

    This is the merge done right for QLoRA: nothing is re-quantised,
    so it matches base+adapter up to float error.
    """
    from bitsandbytes.functional import dequantize_4bit

    dtype = _compute_dtype(peft_model)
    work = _copy(peft_model)
    _unpack_4bit(work)
    inner = work.get_base_model()

    def plain(base: nn.Module, extra: torch.Tensor | None) -> nn.Linear:
        w = dequantize_4bit(base.weight.data, base.weight.quant_state).to(dtype) if _is_4bit(base) \
            else base.weight.data.to(dtype)
        if extra is not None:
            w = w + extra.to(dtype)
        lin = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, dtype=dtype)
        lin.weight.data.copy_(w)
        if base.bias is not None:
            lin.bias.data.copy_(base.bias.data.to(dtype))
        return lin

    from peft.tuners.lora import LoraLayer

    for name, mod in list(inner.named_modules()):
        if isinstance(mod, LoraLayer):
            base = mod.get_base_layer()
            delta = None
            if not mod.disable_adapters and not mod.merged:
                for a in mod.active_adapters:
                    if a in mod.lora_A:
                        d = mod.get_delta_weight(a)
                        delta = d if delta is None else delta + d
            new = plain(base, delta)
        elif _is_4bit(mod) and "base_layer" not in name:
            new = plain(mod, None)
        else:
            continue
        parent_name, _, leaf = name.rpartition(".")
        setattr(inner.get_submodule(parent_name) if parent_name else inner, leaf, new)
    _strip_quantization(inner)
    return inner


def _strip_quantization(model: nn.Module) -> None:
    """Forget a bnb quantizer so save_pretrained writes plain weights and from_pretrained loads them as
    such."""
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    for attr in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit"):
        if getattr(model, attr, False):
            with contextlib.suppress(AttributeError):
                setattr(model, attr, False)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def merge(peft_model: Any, *, dequantize: bool = False) -> nn.Module:
    """A merged copy of `peft_model`: a plain transformers model with W ← W + (alpha/r)·B·A for the active
    adapter.

    The input is deep-copied first, so it stays a working PeftModel (adapters still switchable, scalable,
    trainable). On a 4-bit base, PEFT's merge re-quantises W + ΔW to NF4 (a lossy step, see
    `merge_safety_check`); `dequantize=True` instead returns full-precision dequant(W) + ΔW with no
    quantizer attached — what you want for export.

    To merge in place and undo it, use `with merged(peft_model): ...` (PEFT's merge_adapter /
    unmerge_adapter underneath).
    """
    _require_peft(peft_model)
    if dequantize and is_quantized(peft_model):
        return _dequantized_merge(peft_model)
    work = _copy(peft_model)
    _unpack_4bit(work)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*4-bit linear may get different generations.*")
        return work.merge_and_unload()


@contextlib.contextmanager
def merged(peft_model: Any) -> Iterator[Any]:
    """Merge the active adapter into the base weights in place for the block, then unmerge.

    Inside the block the adapter costs nothing at inference (no extra matmuls) but must not be trained,
    scaled or switched. On exit PEFT's unmerge_adapter subtracts ΔW again, which would leave float
    rounding in fp32 (W + ΔW − ΔW ≠ W bit for bit) and real NF4 re-quantisation error on a 4-bit base;
    so the base weights saved on entry are put back exactly.
    """
    _require_peft(peft_model)
    _unpack_4bit(peft_model)
    saved = []
    for layer in _lora_layers(peft_model):
        base = layer.get_base_layer()
        # 4-bit merge swaps in a new Params4bit object, so keeping the old object is enough; plain
        # weights are updated in place and need a copy.
        saved.append((base, base.weight if _is_4bit(base) else base.weight.data.clone()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*4-bit linear may get different generations.*")
        try:
            peft_model.merge_adapter()
            yield peft_model
        finally:
            peft_model.unmerge_adapter()
            for base, w in saved:
                if _is_4bit(base):
                    base.weight = w
                    base.quant_state = w.quant_state
                else:
                    base.weight.data.copy_(w)


@torch.no_grad()
def merged_weights(peft_model: Any, adapter: str | None = None, *, with_delta: bool = True
                   ) -> dict[str, torch.Tensor]:
    """{plain transformers name: W + ΔW} for every linear the adapter wraps, computed apart from the model
    (which is left untouched, adapter active, trainable): what an engine serving base weights needs to
    sample exactly the policy. `with_delta=False` gives the base weights W (to put the engine back).

    Names are those of the unwrapped model (`model.layers.0.self_attn.q_proj.weight`), as a model's own
    state_dict and vLLM's weight loader know them. A 4-bit base is refused: its W + ΔW is not a 4-bit weight.
    """
    _require_peft(peft_model)
    adapter = adapter or active_adapter(peft_model)
    _check_adapter(peft_model, adapter)
    out: dict[str, torch.Tensor] = {}
    from peft.tuners.lora import LoraLayer

    for name, layer in peft_model.base_model.model.named_modules():
        if not isinstance(layer, LoraLayer) or adapter not in layer.lora_A:
            continue
        base = layer.get_base_layer()
        if _is_4bit(base):
            raise ConfigError("peft_model", f"{name} is a 4-bit layer: merged weights need a 16/32-bit base "
                              "(serve the adapter itself instead)")
        w = base.weight.detach()
        # get_delta_weight applies alpha/r (or rsLoRA's), fan_in_fan_out and the adapter's dtype
        out[f"{name}.weight"] = (w + layer.get_delta_weight(adapter).to(w.dtype)) if with_delta else w.clone()
    if not out:
        raise ConfigError("adapter", f"adapter {adapter!r} wraps no linear layer")
    return out


def active_adapter(peft_model: Any) -> str:
    """The PEFT model's active adapter name ("default" when it reports several or none)."""
    name = getattr(peft_model, "active_adapter", "default")
    return name if isinstance(name, str) else "default"


# ------------------------------------------------------------------------------------------------------------
# scaling
# ------------------------------------------------------------------------------------------------------------

def _base_scaling(layer: nn.Module, adapter: str) -> float:
    r, alpha = layer.r[adapter], layer.lora_alpha[adapter]
    return alpha / math.sqrt(r) if layer.use_rslora.get(adapter, False) else alpha / r


def scale_adapter(peft_model: Any, scale: float, adapter: str | None = None) -> None:
    """Set the adapter's effective multiplier in place: output = W·x + scale·(alpha/r)·B·A·x.

    0 gives the base model exactly, 1 the adapter as trained, >1 exaggerates it, <0 reverses it. The scale is
    absolute (PEFT's `LoraLayer.set_scale`), so setting 0.5 twice gives 0.5 — unlike `scale_layer` or
    `peft.helpers.rescale_adapter_scale`, which multiply the current scale. Blends made afterwards with
    `blend` inherit the parents' current scales. Refused while the adapter is merged, because unmerge
    would then subtract a different ΔW than was added.
    """
    _require_peft(peft_model)
    adapter = adapter or peft_model.active_adapter
    _check_adapter(peft_model, adapter)
    if not math.isfinite(scale):
        raise ConfigError("scale", f"must be a finite number, got {scale}")
    layers = [m for m in _lora_layers(peft_model) if adapter in m.scaling]
    if any(adapter in m.merged_adapters for m in layers):
        raise ConfigError("adapter", f"adapter {adapter!r} is merged; unmerge it before changing its scale")
    for layer in layers:
        layer.set_scale(adapter, scale)


def adapter_scale(peft_model: Any, adapter: str | None = None) -> float:
    """The multiplier last set by `scale_adapter` (1.0 for a freshly trained or loaded adapter)."""
    _require_peft(peft_model)
    adapter = adapter or peft_model.active_adapter
    _check_adapter(peft_model, adapter)
    for layer in _lora_layers(peft_model):
        if adapter in layer.scaling:
            return layer.scaling[adapter] / _base_scaling(layer, adapter)
    raise ConfigError("adapter", f"adapter {adapter!r} has no LoRA layer in the model")


# ------------------------------------------------------------------------------------------------------------
# blending
# ------------------------------------------------------------------------------------------------------------

def blend(peft_model: Any, adapters: Sequence[str], weights: Sequence[float], method: str = "linear",
          density: float = 0.5, name: str | None = None) -> str:
    """Combine adapters into a new one with PEFT's `add_weighted_adapter`, activate it and return its name.

    Methods: linear (weighted sum of the A's and of the B's — cheap, but not Σ wᵢ·ΔWᵢ: cross terms creep
    in), svd (Σ wᵢ·ΔWᵢ exactly, then truncated back to rank by SVD), cat (stacks the A's and B's: exact,
    rank = Σ rᵢ), ties / dare_linear / dare_ties (prune to `density` of the entries — by magnitude for TIES,
    at random with rescaling for DARE — and, for *_ties, keep only entries agreeing with the majority
    sign). linear / ties / dare_* need all parents at the same rank. The new adapter has alpha = r (scale 1).
    """
    _require_peft(peft_model)
    if method not in BLEND_METHODS:
        raise ConfigError("method", f"unknown blend method {method!r}; choose one of {list(BLEND_METHODS)}")
    adapters = list(adapters)
    if not adapters:
        raise ConfigError("adapters", "give at least one adapter to blend")
    for a in adapters:
        _check_adapter(peft_model, a, "adapters")
    if len(weights) != len(adapters):
        raise ConfigError("weights",
                          f"got {len(weights)} weights for {len(adapters)} adapters; give one per adapter")
    if method in _DENSITY_METHODS and not 0.0 < density <= 1.0:
        raise ConfigError("density", f"must be in (0, 1] for {method}, got {density}")
    if method in _SAME_RANK_METHODS and len(adapters) > 1:
        ranks = {a: peft_model.peft_config[a].r for a in adapters}
        if len(set(ranks.values())) > 1:
            raise ConfigError("adapters", f"{method} needs equal ranks, got {ranks}; use 'svd' or 'cat'")
    name = name or f"{method}_" + "_".join(adapters)
    # PEFT silently does nothing when the name is taken, which would hand back the old adapter.
    if name in peft_model.peft_config:
        raise ConfigError("name", f"an adapter called {name!r} already exists")
    peft_model.add_weighted_adapter(adapters, [float(w) for w in weights], name, combination_type=method,
                                    density=density if method in _DENSITY_METHODS else None)
    peft_model.set_adapter(name)
    return name


# ------------------------------------------------------------------------------------------------------------
# side by side generation
# ------------------------------------------------------------------------------------------------------------

def compare_adapters(model: Any, tok: Any, prompts: Sequence[str], adapters: Sequence[str | None],
                     max_new_tokens: int = 32, **generate_kwargs: Any) -> list[dict[str, str]]:
    """Greedy replies of each adapter to each prompt: one dict per prompt, {'prompt': ..., <column>: reply}.

    A column is the adapter's name, or 'base' for None (all adapters disabled). The active adapter is
    restored afterwards.
    """
    from labkit.models.generate import generate

    _require_peft(model)
    cols = ["base" if a is None else a for a in adapters]
    if len(set(cols)) != len(cols):
        raise ConfigError("adapters", f"each adapter may appear once, got {list(adapters)}")
    for a in adapters:
        if a is not None:
            _check_adapter(model, a, "adapters")
    rows: list[dict[str, str]] = [{"prompt": p} for p in prompts]
    active = model.active_adapter
    try:
        for a, col in zip(adapters, cols):
            ctx = model.disable_adapter() if a is None else contextlib.nullcontext()
            if a is not None:
                model.set_adapter(a)
            with ctx:
                gens = generate(model, tok, list(prompts), max_new_tokens=max_new_tokens, **generate_kwargs)
            for row, g in zip(rows, gens):
                row[col] = g.text
    finally:
        model.set_adapter(active)
    return rows


# ------------------------------------------------------------------------------------------------------------
# merge safety check and export
# ------------------------------------------------------------------------------------------------------------

@dataclass
class MergeCheck:
    """Result of `merge_safety_check`; `passed` says whether merging preserved the model's logits."""

    max_logit_diff: float
    threshold: float
    dtype: str
    reload_diff: float | None = None
    rounding_error: float | None = None
    quantized: bool = False

    @property
    def passed(self) -> bool:
        """Every measured logit difference is finite and within `threshold` (rounding_error is not judged)."""
        diffs = [self.max_logit_diff] + ([self.reload_diff] if self.reload_diff is not None else [])
        return all(math.isfinite(d) and d <= self.threshold for d in diffs)

    def __str__(self) -> str:
        head = (f"merge check {'PASSED' if self.passed else 'FAILED'} "
                f"({self.dtype}, threshold {self.threshold:g}): ")
        parts = [head + f"unmerged vs merged max |Δlogit| = {self.max_logit_diff:.3g}"]
        if self.reload_diff is not None:
            parts.append(f"vs reloaded from safetensors = {self.reload_diff:.3g}")
        if self.rounding_error is not None:
            parts.append(f"4-bit re-quantisation rounding (reported, not failed) = {self.rounding_error:.3g}")
        return "; ".join(parts)


@torch.no_grad()
def _logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()  # LoRA dropout would make the two sides differ at random
    try:
        device = next(model.parameters()).device
        return model(input_ids=input_ids.to(device)).logits.float().cpu()
    finally:
        model.train(was_training)


def merge_safety_check(peft_model: Any, input_ids: torch.Tensor, *,
                       reload_dir: str | os.PathLike | None = None,
                       threshold: float | None = None) -> MergeCheck:
    """Does merging change what the model computes? Compares logits of base+adapter (unmerged) with the merge.

    - fp32/bf16/fp16 base: unmerged vs `merge(peft_model)`; passes when max |Δlogit| ≤ `threshold`
      (default `MERGE_TOLERANCE` for the dtype: 1e-4 fp32, 5e-2 bf16, 1e-2 fp16; the adapters' dtype when
      that is looser, since the unmerged reference computes B·A·x in it — a bnb 4-bit base on CPU may
      hold bf16 adapters under an fp32 compute dtype).
    - 4-bit (bnb NF4) base: unmerged vs the full-precision merge dequant(W) + ΔW, which must pass the
      same way; and `rounding_error` = unmerged vs PEFT's in-4-bit merge. That merge dequantises W, adds
      ΔW and re-quantises the sum to NF4: each weight snaps to one of 16 levels per 64-weight block, an
      error of up to half a level (~a few % of the block's absmax) — much larger than ΔW's fine detail. The
      resulting logit error is far above 1e-4 and is reported, not failed: it is the reason to merge a
      QLoRA adapter into a full-precision copy of the base (what `export_merged` does).
    - `reload_dir`: the merged model is also exported there (safetensors, see `export_merged`) and
      reloaded with `AutoModelForCausalLM.from_pretrained`; `reload_diff` must pass too.
    """
    _require_peft(peft_model)
    _unpack_4bit(peft_model)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    dtype = _compute_dtype(peft_model)
    name = str(dtype).removeprefix("torch.")
    tol = MERGE_TOLERANCE.get(dtype, 1e-4)
    adapter_dtype = _adapter_dtype(peft_model)
    if MERGE_TOLERANCE.get(adapter_dtype, 0.0) > tol:
        # The unmerged reference computes B·A·x in the adapter's (lower) precision; the merge does not.
        tol, name = (MERGE_TOLERANCE[adapter_dtype],
                     f"{name}, {str(adapter_dtype).removeprefix('torch.')} adapters")
    tol = threshold if threshold is not None else tol
    quant = is_quantized(peft_model)
    ref = _logits(peft_model, input_ids)  # [B, T, V]
    full = merge(peft_model, dequantize=True)
    check = MergeCheck(max_logit_diff=(ref - _logits(full, input_ids)).abs().max().item(), threshold=tol,
                       dtype=name, quantized=quant)
    if quant:
        requant = merge(peft_model)  # PEFT's merge into NF4
        _unpack_4bit(requant)
        check.rounding_error = (ref - _logits(requant, input_ids)).abs().max().item()
        del requant
    if reload_dir is not None:
        from transformers import AutoModelForCausalLM

        out = _atomic_save(full, None, Path(reload_dir), overwrite=True)
        reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=dtype)
        check.reload_diff = (ref - _logits(reloaded, input_ids)).abs().max().item()
    return check


def _atomic_save(model: nn.Module, tokenizer: Any, out_dir: Path, *, overwrite: bool) -> Path:
    """Save into a temporary sibling directory, then rename it into place;
    on failure nothing is left behind."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("out_dir", f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError("out_dir", f"{out_dir} is not empty; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)  # safetensors is transformers' only format for save_pretrained
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            # Move the old copy aside first so a failed rename can put it back.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "d")
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old / "d", out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_merged(peft_model: Any, tokenizer: Any, out_dir: str | os.PathLike, *,
                  overwrite: bool = False) -> Path:
    """Write the merged model (safetensors + config) and the tokenizer to `out_dir`, atomically;
    return the path.

    A 4-bit base is merged in full precision (dequant(W) + ΔW, no quantizer in the config), so the export
    loads anywhere with `AutoModelForCausalLM.from_pretrained(out_dir)` and carries no re-quantisation
    error; quantise it again for serving if you like. Refuses a non-empty `out_dir` unless `overwrite=True`.
    """
    _require_peft(peft_model)
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:  # fail before the (slow) merge
        raise ConfigError("out_dir", f"{out} is not empty; pass overwrite=True to replace it")
    model = merge(peft_model, dequantize=True)
    return _atomic_save(model, tokenizer, out, overwrite=overwrite)
