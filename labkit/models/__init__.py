"""Loading models (embedded, hub id, local dir, tiny random), device/dtype policy and capabilities."""

from labkit.models.capabilities import Capability, CapabilityReport, capability_report
from labkit.models.device import cpu_has_native_bf16, resolve_device, resolve_dtype
from labkit.models.generate import Generation, chat, generate
from labkit.models.loading import (
    EMBEDDED,
    ModelLoadError,
    cache_root,
    embedded_gguf_path,
    ensure_embedded_cache,
    load_from_gguf,
    load_model,
    load_tokenizer,
    tiny_model,
)

__all__ = [
    "EMBEDDED", "Capability", "CapabilityReport", "ModelLoadError", "capability_report", "cache_root",
    "cpu_has_native_bf16", "embedded_gguf_path",
    "Generation", "chat", "generate", "ensure_embedded_cache", "load_from_gguf", "load_model",
    "load_tokenizer", "resolve_device",
    "resolve_dtype", "tiny_model",
]
