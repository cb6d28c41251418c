"""Quantisation lab: one model in fp32, bf16, int8, NF4 4-bit and as its GGUF file, measured side by side.

Each variant gets the same four measurements, returned as table rows:

- size_mb: bytes of its weights as saved (the serialised state dict; the file itself for GGUF);
- tokens_per_s: greedy decoding of fixed prompts to a fixed length (EOS ignored), after a warm-up;
- perplexity: exp of the mean negative log-likelihood of the assistant tokens of held-out replies;
- accuracy: a task score from a function the caller passes (labkit.infer sits below labkit.eval, so the
  eval is handed in, e.g. MMLU by log-likelihood: see bench/inference_lab.py).

Variants:
- fp32, bf16: the weights cast (bf16 runs natively on CPUs with AVX512-BF16 or AMX, emulated elsewhere);
- int8: torch's dynamic quantisation of every nn.Linear (int8 weights with a scale per output channel,
  activations quantised to 8 bits on the fly; embeddings, and an LM head tied to them, stay fp32). torch
  2.13 still ships `torch.ao.quantization.quantize_dynamic` (deprecated in favour of torchao, which labkit
  does not install) and it runs on x86 CPUs. One activation scale per tensor cannot hold SmolLM2's massive
  activations (inputs in the thousands in a few MLP down-projections), so perplexity suffers;
- int8-mixed: int8, except the linears whose inputs exceed OUTLIER_THRESHOLD on calibration text stay fp32
  (the per-layer form of LLM.int8()'s outlier split);
- nf4: bitsandbytes 4-bit NormalFloat linears with fp32 compute, loaded through transformers'
  BitsAndBytesConfig (bitsandbytes >= 0.48 runs these on CPU too);
- gguf: the file the embedded model ships as (llama.cpp's format). Its size is read from disk; running it
  needs a GGUF runtime (llama.cpp), which labkit does not install, so speed, perplexity and accuracy stay
  empty. transformers dequantises the same file to the fp32 weights above.

    rows = quant_table("smollm2-135m-instruct", accuracy=my_mmlu_subset)
    quant_figure(rows).show()
"""

from __future__ import annotations

import copy
import functools
import pathlib
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from labkit.errors import ConfigError, LabkitError, MissingExtraError, require
from labkit.infer.engine import Prompt, SamplingParams
from labkit.infer.hf import HFEngine

VARIANTS = ("fp32", "bf16", "int8", "int8-mixed", "nf4", "gguf")
# int8-mixed keeps linears whose calibration inputs exceed this in float. SmolLM2-135M's inputs mostly stay
# under ~30, but its massive activations reach ~3000: on SPEED_PROMPTS 11 of 211 linears exceed 30, mostly MLP
# down-projections, and keeping them fp32 brings held-out perplexity from ~6.3 back to ~2.50 (fp32: 2.45).
OUTLIER_THRESHOLD = 30.0

# Fixed prompts for tokens/s: chat-free text, so any tokenizer can encode them.
SPEED_PROMPTS = ("The history of the printing press begins", "A good recipe for bread needs",
                 "In computer science, a hash table is", "The three laws of motion state that")


class _ByteCounter:
    """A file-like object that only counts what torch.save writes to it."""

    def __init__(self):
        self.bytes = 0

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def size_mb(model) -> float:
    """Megabytes (10^6 bytes) of the model's state dict as torch.save writes it: packed int8 and 4-bit
    weights count at their packed size, tied weights once."""
    counter = _ByteCounter()
    torch.save(model.state_dict(), counter)
    return counter.bytes / 1e6


def int8_dynamic(model, *, keep_float: Sequence[str] = (), per_channel: bool = True,
                 quantize_tied_head: bool = False):
    """A copy of `model` with every nn.Linear (but those named in keep_float) replaced by torch's dynamic int8
    linear: int8 weights (a scale per output channel, or one per tensor with per_channel=False), activations
    quantised to 8 bits per batch on the fly. CPU only (fbgemm/x86 kernels).

    An LM head tied to the input embeddings stays float unless quantize_tied_head: the embedding lookup
    still needs the float matrix, so an int8 head would be a second copy and make the model larger.
    """
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    qmodel = copy.deepcopy(model).float().cpu()
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    keep = set(keep_float)
    head, emb = qmodel.get_output_embeddings(), qmodel.get_input_embeddings()
    if not quantize_tied_head and head is not None and emb is not None and head.weight is emb.weight:
        keep |= {n for n, m in qmodel.named_modules() if m is head}
    spec = {name: qconfig for name, m in qmodel.named_modules()
            if isinstance(m, torch.nn.Linear) and name not in keep}
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it moves to torchao; it still works in torch 2.13.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        qmodel = torch.ao.quantization.quantize_dynamic(qmodel, spec, dtype=torch.qint8)
    qmodel.eval()
    return qmodel


@torch.inference_mode()
def linear_input_absmax(model, tok, texts: Sequence[str] = SPEED_PROMPTS) -> dict[str, float]:
    """The largest |input| each nn.Linear sees over `texts` (one forward pass each), by module name.

    Small LMs carry a few "massive activations" (thousands, against a typical few units) into some MLP
    down-projections; one 8-bit scale per activation tensor then rounds everything else there to zero.
    """
    peaks: dict[str, float] = {}

    def hook(name):
        def record(_module, inputs, _output):
            peaks[name] = max(peaks.get(name, 0.0), float(inputs[0].abs().max()))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"].to(model.device)
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    return dict(sorted(peaks.items(), key=lambda kv: -kv[1]))


def outlier_linears(model, tok, *, threshold: float = OUTLIER_THRESHOLD,
                    texts: Sequence[str] = SPEED_PROMPTS) -> list[str]:
    """Names of the linears whose input exceeds `threshold` in absolute value on `texts` (largest first):
    the ones to keep in float for int8 (the per-layer version of LLM.int8()'s outlier split)."""
    return [n for n, peak in linear_input_absmax(model, tok, texts).items() if peak > threshold]


def nf4_available() -> None:
    """Raise MissingExtraError (naming the `gpu` extra) unless bitsandbytes is importable."""
    require("bitsandbytes", "gpu", "NF4 4-bit weights; on a CPU-only machine `pip install "
            "bitsandbytes==0.50.2` alone is enough")


def load_variant(name: str, variant: str):
    """(model, tokenizer) of a labkit model name (embedded default, local dir, hub id) as one variant, on CPU.

    variant: fp32 | bf16 | int8 | int8-mixed | nf4 ("gguf" is a file, not a model: see gguf_info). nf4 raises
    MissingExtraError when bitsandbytes is not installed.
    """
    from labkit.models import load_model

    if variant in ("fp32", "bf16"):
        return load_model(name, device="cpu", dtype="float32" if variant == "fp32" else "bfloat16")
    if variant in ("int8", "int8-mixed"):
        model, tok = load_model(name, device="cpu", dtype="float32")
        keep = outlier_linears(model, tok) if variant == "int8-mixed" else ()
        return int8_dynamic(model, keep_float=keep), tok
    if variant == "nf4":
        nf4_available()
        from labkit.models.adapters import four_bit_config

        return load_model(name, device="cpu", dtype="float32",
                          quantization_config=four_bit_config(torch.float32), device_map="cpu")
    raise ConfigError("variant", f"must be one of {VARIANTS[:-1]} (gguf is a file: gguf_info), "
                      f"got {variant!r}")


def gguf_info(path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """Size and tensor types of a GGUF file (the embedded model's by default), read with the gguf package.

    Cached per file: the gguf reader parses every tensor header in Python, several seconds for SmolLM2.
    """
    from labkit.models import embedded_gguf_path

    path = pathlib.Path(path or embedded_gguf_path()).resolve()
    stat = path.stat()
    return dict(_gguf_info(str(path), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _gguf_info(path: str, size: int, _mtime_ns: int) -> dict[str, Any]:
    import collections

    import gguf

    types = collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors)
    return {"path": path, "size_mb": size / 1e6, "tensor_types": dict(types.most_common())}


def gguf_runtime() -> str | None:
    """The name of an installed GGUF runtime, or None. labkit knows llama-cpp-python's module name only."""
    import importlib.util

    return "llama_cpp" if importlib.util.find_spec("llama_cpp") is not None else None


@torch.inference_mode()
def tokens_per_second(model, tok, prompts: Sequence[Prompt] = SPEED_PROMPTS, *, max_new_tokens: int = 32,
                      batch_size: int = 1, repeats: int = 1) -> float:
    """Generated tokens per second, greedy to exactly max_new_tokens per prompt, in batches of batch_size;
    the median of `repeats` runs.

    A short generation first pays one-off set-up (oneDNN kernels for bf16 and int8), so it is not timed.
    """
    engine = HFEngine(model, tok, batch_size=batch_size)
    engine.generate(list(prompts[:1]), SamplingParams(max_new_tokens=2, ignore_eos=True))
    rates = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = engine.generate(list(prompts), SamplingParams(max_new_tokens=max_new_tokens, ignore_eos=True))
        rates.append(sum(c.num_tokens for c in out) / (time.perf_counter() - t0))
    return statistics.median(rates)


def heldout_rows() -> list[dict[str, Any]]:
    """The fixed perplexity text set: labkit's 20 hand-written general-knowledge questions with their
    reference replies (data_samples/general_prompts.jsonl), which no labkit stage trains on."""
    from labkit.data.samples import load_sample

    return load_sample("general_prompts")


def perplexity(model, tok, rows: Sequence[dict[str, Any]] | None = None, *, batch_size: int = 8) -> float:
    """exp(mean negative log-likelihood) of the assistant tokens of SFT-style rows (heldout_rows() default).

    Tokens are counted across all rows together (a corpus perplexity, not a mean of per-row ones).
    """
    from labkit.data.tokenize import sft_example
    from labkit.models.logprobs import masked_token_logps

    rows = list(heldout_rows() if rows is None else rows)
    if not rows:
        raise ConfigError("rows", "perplexity needs at least one row")
    examples = [sft_example(tok, r, index=i) for i, r in enumerate(rows)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    lps = masked_token_logps(model, [e["input_ids"] for e in examples],
                             [e["assistant_masks"] for e in examples], pad_id=pad, batch_size=batch_size)
    total = torch.cat(lps)
    return float(torch.exp(-total.mean()))


def measure(model, tok, variant: str, *, prompts: Sequence[Prompt] = SPEED_PROMPTS, max_new_tokens: int = 32,
            batch_size: int = 1, repeats: int = 1, ppl_rows: Sequence[dict[str, Any]] | None = None,
            accuracy: Callable[[Any, Any], float] | None = None) -> dict[str, Any]:
    """One table row for a loaded model: variant, size_mb, tokens_per_s (median of `repeats`), perplexity,
    accuracy."""
    return {"variant": variant, "size_mb": round(size_mb(model), 1),
            "tokens_per_s": round(tokens_per_second(model, tok, prompts, max_new_tokens=max_new_tokens,
                                                    batch_size=batch_size, repeats=repeats), 1),
            "perplexity": round(perplexity(model, tok, ppl_rows), 3),
            "accuracy": None if accuracy is None else round(float(accuracy(model, tok)), 4)}


def quant_table(name: str = "smollm2-135m-instruct", variants: Sequence[str] = VARIANTS, *,
                prompts: Sequence[Prompt] = SPEED_PROMPTS, max_new_tokens: int = 32, batch_size: int = 1,
                repeats: int = 1, ppl_rows: Sequence[dict[str, Any]] | None = None,
                accuracy: Callable[[Any, Any], float] | None = None) -> list[dict[str, Any]]:
    """Measure each variant of model `name` (see the module docstring); one row per variant, in order.

    accuracy(model, tokenizer) -> float scores a task (None leaves the column empty). A variant that cannot
    run here (nf4 without bitsandbytes, gguf without a GGUF runtime) still gets a row: what could be measured,
    and a `note` saying what is missing. Rows: variant, size_mb, tokens_per_s, perplexity, accuracy, load_s,
    note.
    """
    from labkit.models.loading import _EMBEDDED_ALIASES

    rows = []
    for variant in variants:
        if variant == "gguf":
            rows.append(_gguf_row(name.lower() in _EMBEDDED_ALIASES))
            continue
        t0 = time.perf_counter()
        try:
            model, tok = load_variant(name, variant)
        except MissingExtraError as exc:
            rows.append({"variant": variant, "size_mb": None, "tokens_per_s": None, "perplexity": None,
                         "accuracy": None, "load_s": None, "note": str(exc)})
            continue
        load_s = time.perf_counter() - t0
        row = measure(model, tok, variant, prompts=prompts, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, repeats=repeats, ppl_rows=ppl_rows, accuracy=accuracy)
        rows.append({**row, "load_s": round(load_s, 2), "note": _NOTES.get(variant, "")})
        del model
    return rows


_NOTES = {
    "fp32": "",
    "bf16": "weights and activations in bfloat16",
    "int8": "torch dynamic int8 linears; embeddings (and the LM head tied to them) fp32",
    "int8-mixed": f"as int8, but linears whose inputs exceed {OUTLIER_THRESHOLD:g} stay fp32",
    "nf4": "bitsandbytes NF4 linears, double-quantised scales, fp32 compute",
}


def _gguf_row(embedded: bool) -> dict[str, Any]:
    row = {"variant": "gguf", "size_mb": None, "tokens_per_s": None, "perplexity": None, "accuracy": None,
           "load_s": None}
    if not embedded:
        return {**row, "note": "only the embedded model ships as GGUF here"}
    try:
        info = gguf_info()
    except LabkitError as exc:
        return {**row, "note": str(exc)}
    types = ", ".join(f"{n}×{t}" for t, n in info["tensor_types"].items())
    runtime = gguf_runtime()
    why = (f"{runtime} is installed but labkit does not drive it yet" if runtime else
           "no GGUF runtime installed (llama.cpp / llama-cpp-python), so not run")
    return {**row, "size_mb": round(info["size_mb"], 1),
            "note": f"file on disk ({types}); {why}; its dequantised weights are the fp32 row"}


def quant_figure(rows: list[dict[str, Any]]):
    """Size against perplexity, one point per variant that ran, labelled with its tokens/s: the trade-off
    a quantisation buys (smaller and often faster) against what it costs (perplexity)."""
    import plotly.graph_objects as go

    ran = [r for r in rows if r.get("perplexity") is not None]
    fig = go.Figure(go.Scatter(
        x=[r["size_mb"] for r in ran], y=[r["perplexity"] for r in ran], mode="markers+text",
        text=[f"{r['variant']} ({r['tokens_per_s']} tok/s)" for r in ran], textposition="top center",
        marker={"size": 12}))
    fig.update_layout(title="Quantisation: size vs held-out perplexity", xaxis_title="weights (MB)",
                      yaxis_title="perplexity (lower is better)")
    return fig


__all__ = ["OUTLIER_THRESHOLD", "SPEED_PROMPTS", "VARIANTS", "gguf_info", "gguf_runtime", "heldout_rows",
           "int8_dynamic", "linear_input_absmax", "load_variant", "measure", "nf4_available",
           "outlier_linears", "perplexity", "quant_figure", "quant_table", "size_mb", "tokens_per_second"]
