"""Serving adapters side by side: pick an engine, stack a chain of adapters exactly, compare answers.

- `choose_engine(mode)`: "vllm" when a vLLM environment exists (mode auto or on), else "hf", with a one-line
  reason a notebook or report can print;
- `start_engine(kind, model)`: a VLLMEngine or an HFEngine with room for LoRA adapters;
- `stack_adapters(base, [a1, a2, ...], out)`: a training chain (SFT, then DPO on the SFT-merged model...)
  as one adapter over the first base. PEFT's `cat` combination stacks the adapters' A and B matrices, so the
  stacked update is exactly ΔW₁ + ΔW₂ + ... (rank = the sum of their ranks): the chain's last merged model,
  served as an adapter of the base next to the other links;
- `side_by_side(engine, questions, adapters)`: each adapter's greedy answer to each question, and its
  tokens/s;
- `compare_greedy(a, b, prompts)`: whether two engines decode the same greedy tokens, and where they part.

    kind, why = choose_engine("auto"); print(why)
    engine = start_engine(kind, "smollm2-135m-instruct", max_lora_rank=32)
    engine.load_adapter("sft", "runs/sft/adapter")
    chain = ["runs/sft/adapter", "runs/dpo/adapter"]     # DPO trained on the SFT-merged model
    engine.load_adapter("dpo", stack_adapters("smollm2-135m-instruct", chain, "runs/dpo/stacked"))
    rows = side_by_side(engine, ["What is 2 + 3?"], [None, "sft", "dpo"])
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time
from collections.abc import Sequence
from typing import Any

from labkit.errors import ConfigError
from labkit.infer.engine import Engine, EngineError, Prompt, SamplingParams
from labkit.infer.hf import HFEngine
from labkit.infer.vllm_server import INSTALL_HINT, VLLMEngine, lora_slot_rank, vllm_available, vllm_python

MODES = ("auto", "on", "off")


def choose_engine(mode: str = "auto") -> tuple[str, str]:
    """(engine kind, why): "vllm" when mode is auto or on and a vLLM interpreter exists, else "hf".

    mode "on" raises MissingExtraError (with the install command) when vLLM is missing; "auto" falls back to
    the hf engine and says how to get vLLM.
    """
    if mode not in MODES:
        raise ConfigError("vllm", f"must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return "hf", "vLLM switched off (vllm='off'): the hf engine serves"
    if mode == "on" or vllm_available():
        return "vllm", f"vLLM server from {vllm_python()}"
    return "hf", f"no vLLM environment: the hf engine serves, the vLLM parts are skipped ({INSTALL_HINT})"


def start_engine(kind: str, model: str | os.PathLike, *, dtype: str = "float32", max_lora_rank: int = 16,
                 max_loras: int = 4, max_model_len: int = 1024, max_num_seqs: int = 32, kv_cache_gb: int = 1,
                 run_dir: str | os.PathLike | None = None, wait: bool = True) -> Engine:
    """A started engine of `kind` ("vllm" or "hf") on `model`, ready to load LoRA adapters up to
    `max_lora_rank` (vLLM reserves slots of that size; the hf engine needs nothing). vLLM's log goes to
    run_dir/vllm.log; with wait=False the vLLM server keeps loading in the background until its first
    request."""
    if kind == "vllm":
        return VLLMEngine(str(model), dtype=dtype, max_model_len=max_model_len, enable_lora=True,
                          max_loras=max_loras, max_lora_rank=lora_slot_rank(max_lora_rank),
                          max_num_seqs=max_num_seqs, kv_cache_gb=kv_cache_gb, run_dir=run_dir, wait=wait)
    if kind == "hf":   # loads in this process: there is nothing to wait for afterwards
        return HFEngine.from_name(str(model), dtype=dtype)
    raise ConfigError("engine", f"must be 'vllm' or 'hf', got {kind!r}")


def _adapter_config(path: pathlib.Path) -> dict[str, Any]:
    import json

    cfg = path / "adapter_config.json"
    if not cfg.is_file():
        raise EngineError(f"{path} is not a saved PEFT adapter (no adapter_config.json)")
    return json.loads(cfg.read_text())


def adapter_rank(path: str | os.PathLike) -> int:
    """The LoRA rank r of a saved adapter (what vLLM's max_lora_rank must hold)."""
    return int(_adapter_config(pathlib.Path(path))["r"])


def stack_adapters(base: str | os.PathLike, adapters: Sequence[str | os.PathLike],
                   out: str | os.PathLike) -> pathlib.Path:
    """Save the chain `adapters` (each trained on the model the ones before it merge into) as one adapter over
    `base`, at `out`; returns `out`.

    PEFT's `cat` stacks the A matrices (each times its alpha/r) and the B matrices, so the new adapter's
    update is exactly the sum of the chain's updates, with rank = the sum of their ranks and alpha = rank.
    Done once: an `out` that already holds an adapter is reused.
    """
    import torch

    from labkit.models import load_model
    from labkit.models.lora import blend, load_adapters
    from labkit.quiet import quiet_progress

    paths = [pathlib.Path(p) for p in adapters]
    if not paths:
        raise ConfigError("adapters", "name at least one adapter directory to stack")
    for p in paths:
        _adapter_config(p)
    out = pathlib.Path(out)
    if (out / "adapter_config.json").is_file():
        return out
    model, _ = load_model(str(base), dtype=torch.float32, device="cpu")
    names = {f"link{i}": p for i, p in enumerate(paths)}
    peft_model = load_adapters(model, names)
    stacked = blend(peft_model, list(names), [1.0] * len(names), method="cat", name="stacked")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_progress():
        peft_model.save_pretrained(str(tmp), selected_adapters=[stacked])
    # PEFT writes an adapter not called "default" into a folder of its name.
    (tmp / stacked).rename(out)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def chat_prompts(tokenizer, questions: Sequence[str]) -> list[str]:
    """Each question as one user turn in the tokenizer's chat template, ready for the assistant's reply."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=False) for q in questions]


def side_by_side(engine: Engine, questions: Sequence[str], adapters: Sequence[str | None], *,
                 max_new_tokens: int = 32, warmup: bool = True) -> list[dict[str, Any]]:
    """Every adapter's greedy answer to every question (chat-templated), one row each: adapter ("base" for
    None), question, answer, tokens, finish reason and the tokens/s of that adapter's batch. With warmup, a
    one-token call per adapter first takes its loading out of the timing (skip it for adapters already
    used)."""
    prompts = chat_prompts(engine.tokenizer, questions)
    sampling = SamplingParams(max_new_tokens=max_new_tokens)
    rows = []
    for name in adapters:
        if warmup:
            engine.generate(prompts[:1], SamplingParams(max_new_tokens=1), adapter=name)
        t0 = time.perf_counter()
        outs = engine.generate(prompts, sampling, adapter=name)
        seconds = time.perf_counter() - t0
        rate = sum(o.num_tokens for o in outs) / seconds
        rows += [{"adapter": name or "base", "question": q, "answer": o.text, "tokens": o.num_tokens,
                  "finish": o.finish_reason, "tokens_per_s": round(rate, 1)} for q, o in zip(questions, outs)]
    return rows


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first token where a and b differ (or the shorter one's length), None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare_greedy(a: Engine, b: Engine, prompts: Sequence[Prompt], *, max_new_tokens: int = 32,
                   adapter: str | None = None) -> list[dict[str, Any]]:
    """Greedy tokens of two engines on the same prompts: one row per prompt with `same` and the first
    divergence position (None when identical), and the tokens each produced."""
    sampling = SamplingParams(max_new_tokens=max_new_tokens)
    got_a = a.generate(prompts, sampling, adapter=adapter)
    got_b = b.generate(prompts, sampling, adapter=adapter)
    rows = []
    for i, (x, y) in enumerate(zip(got_a, got_b)):
        pos = first_divergence(x.token_ids, y.token_ids)
        rows.append({"prompt": i, "same": pos is None, "first_divergence": pos,
                     f"{a.name}_tokens": x.num_tokens, f"{b.name}_tokens": y.num_tokens,
                     f"{a.name}_text": x.text, f"{b.name}_text": y.text})
    return rows


def refit_timings(engine: Engine, prompts: Sequence[Prompt], *, adapter: str, base_state=None,
                  max_new_tokens: int = 16, scale: float = 0.5) -> list[dict[str, Any]]:
    """Push new weights into a running engine without a restart, timed, as an RL loop does after each step.

    1. the LoRA adapter `adapter` (already loaded from a saved directory) gets new tensors: its B matrices
       times `scale`, a stand-in for an optimizer step's change; then its saved tensors go back;
    2. with `base_state` (a state dict of the base model), the base weights are pushed in place (the same
       values, so greedy outputs must not move: a check that the refit loaded what was sent).
    One row per refit: engine, what, MB sent, seconds, and whether greedy tokens changed.
    """
    from safetensors.torch import load_file

    path = pathlib.Path(getattr(engine, "adapters", {}).get(adapter, ""))
    if not (path / "adapter_model.safetensors").is_file():
        raise EngineError(f"refit_timings: adapter '{adapter}' must be loaded from a saved directory first")
    saved = load_file(str(path / "adapter_model.safetensors"))
    moved = {k: v * scale if "lora_B" in k else v for k, v in saved.items()}
    sampling = SamplingParams(max_new_tokens=max_new_tokens)

    def tokens() -> list[list[int]]:
        return [c.token_ids for c in engine.generate(prompts, sampling, adapter=adapter)]

    def mb(state) -> float:
        return round(sum(v.numel() * v.element_size() for v in state.values()) / 1e6, 1)

    before = tokens()
    rows = [{"engine": engine.name, "refit": f"adapter '{adapter}', B × {scale:g}", "MB": mb(moved),
             "seconds": round(engine.update_weights(moved, adapter=adapter), 3)}]
    rows[-1]["greedy_changed"] = tokens() != before
    restore = engine.update_weights(saved, adapter=adapter)
    rows.append({"engine": engine.name, "refit": f"adapter '{adapter}' restored", "MB": mb(saved),
                 "seconds": round(restore, 3), "greedy_changed": tokens() != before})
    if base_state is not None:
        seconds = engine.update_weights(dict(base_state))
        rows.append({"engine": engine.name, "refit": "base weights (same values)", "MB": mb(base_state),
                     "seconds": round(seconds, 3), "greedy_changed": tokens() != before})
    return rows


__all__ = ["MODES", "adapter_rank", "chat_prompts", "choose_engine", "compare_greedy", "first_divergence",
           "refit_timings", "side_by_side", "stack_adapters", "start_engine"]
