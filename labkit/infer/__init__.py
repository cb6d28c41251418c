"""Inference engines behind one interface: `hf` (transformers, in process) and `vllm` (a server process).

    from labkit.infer import SamplingParams, make_engine
    with make_engine("hf") as engine:
        out = engine.generate(["2 + 2 ="], SamplingParams(max_new_tokens=8, logprobs=True))

Labs on top of them, each returning table rows and plotly figures (imported on demand):
labkit.infer.speculative (prompt lookup and draft models), labkit.infer.quant (fp32/bf16/int8/NF4/GGUF),
labkit.infer.agreement (engine vs trainer log-probs) and labkit.infer.batching (static vs continuous);
labkit.infer.serving picks an engine, stacks an adapter chain into one adapter and serves adapters side by
side.
"""

from __future__ import annotations

from typing import Any

from labkit.errors import ConfigError
from labkit.infer.engine import Completion, Engine, EngineError, SamplingParams, UnsupportedError
from labkit.infer.hf import HFEngine
from labkit.infer.vllm_server import VLLMEngine, vllm_available, vllm_python

ENGINES = ("hf", "vllm")


def make_engine(kind: str = "hf", model: str = "smollm2-135m-instruct", **kwargs: Any) -> Engine:
    """Start an engine by name on a labkit model name (embedded default, local dir or hub id).

    kwargs go to the engine: HFEngine.from_name (device, dtype, batch_size, batching) or VLLMEngine
    (dtype, max_model_len, enable_lora, run_dir...).
    """
    if kind == "hf":
        return HFEngine.from_name(model, **kwargs)
    if kind == "vllm":
        return VLLMEngine(model, **kwargs)
    raise ConfigError("engine", f"must be one of {ENGINES}, got {kind!r}")


__all__ = ["ENGINES", "Completion", "Engine", "EngineError", "HFEngine", "SamplingParams", "UnsupportedError",
           "VLLMEngine", "make_engine", "vllm_available", "vllm_python"]
