"""Memory and capacity planner: what a training run needs, part by part, and whether it fits a card.

Pure arithmetic on a model's shape (a transformers config, or a built-in name) and a workload: method
(full, LoRA, QLoRA), objective (SFT, GRPO with k generations, DPO with a reference), sequence length, batch,
optimizer and precision. The parts:

    weights      N_frozen · b_frozen + N_train · b_train (QLoRA: NF4 linears, 0.5 byte + block constants)
    gradients    N_train · b_grad
    optimizer    AdamW 2 states, 8-bit AdamW 2 one-byte states, SGD none; mixed precision adds fp32 masters
    activations  per token per layer, what autograd keeps for backward (counted tensor by tensor below);
                 with checkpointing one hidden state per layer plus one layer recomputed
    logits       the loss's fp32 log-softmax over [tokens, vocab] and two gradients of that size
    reference    DPO / GRPO-with-KL under full fine-tuning keep a frozen copy (LoRA disables the adapter)
    rollout KV   GRPO: 2 · layers · kv_heads · head_dim per token for prompts × k generations
    adapter cast PEFT keeps LoRA weights in fp32 and casts each targeted input to fp32 under bf16

The peak is not the sum: backward frees a layer's activations as it writes that layer's gradients, so it
holds max(gradients, activations + logits) on top of weights, optimizer states, reference and KV cache.

The activation count follows Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (https://arxiv.org/abs/2205.05198), redone for a Llama/Qwen block (RMSNorm, GQA,
SwiGLU, fused SDPA attention, so no seq² scores). Throughput: training ≈ 6 N FLOPs per token (4 N when the
base is frozen, +2 N with checkpointing) at a model-FLOPs utilisation; decoding is bandwidth-bound (every
step reads the weights and the KV cache). `measure_peak` checks the plan against a real run on the CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

from labkit.errors import ConfigError

GB = 1024 ** 3
CARDS_GB = (8, 12, 16, 24)
METHODS = ("full", "lora", "qlora")
OBJECTIVES = ("sft", "grpo", "dpo")
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
PRECISIONS = ("fp32", "bf16", "mixed")
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only (Llama / Qwen2-style) model that memory depends on."""

    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    head_dim: int
    tied: bool = True           # the LM head shares the embedding matrix
    qkv_bias: bool = False      # Qwen2 has biases on q, k and v

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear of one block."""
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_params(self) -> int:
        """Weights of every block's linears: what QLoRA quantises and LoRA adapts."""
        return self.layers * sum(a * b for a, b in self.linear_shapes().values())

    def params(self) -> int:
        """All parameters (embedding, blocks, final norm, untied head)."""
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        block_extra = bias + 2 * self.hidden                     # q/k/v biases, two RMSNorm weights
        head = 0 if self.tied else self.vocab * self.hidden
        embed = self.vocab * self.hidden
        return embed + self.linear_params() + self.layers * block_extra + self.hidden + head

    def lora_params(self, r: int, targets: tuple[str, ...] = LINEARS) -> int:
        """A and B of every targeted linear: r · (in + out) each."""
        return self.layers * sum(r * (a + b) for n, (a, b) in self.linear_shapes().items() if n in targets)


def _shape(name, vocab, hidden, layers, heads, kv_heads, intermediate, *, tied=True, qkv_bias=False):
    return ModelShape(name, vocab, hidden, layers, heads, kv_heads, intermediate, hidden // heads, tied,
                      qkv_bias)


# Shapes from each model's published config.json (Qwen2.5: hf.co/Qwen/Qwen2.5-*-Instruct; SmolLM2:
# hf.co/HuggingFaceTB/SmolLM2-135M-Instruct); "tiny" is labkit.models.tiny_model with the embedded tokenizer.
BUILTIN: dict[str, ModelShape] = {
    "tiny": _shape("tiny", 49152, 64, 2, 4, 2, 128),
    "smollm2-135m-instruct": _shape("smollm2-135m-instruct", 49152, 576, 30, 9, 3, 1536),
    "qwen2.5-0.5b": _shape("qwen2.5-0.5b", 151936, 896, 24, 14, 2, 4864, qkv_bias=True),
    "qwen2.5-1.5b": _shape("qwen2.5-1.5b", 151936, 1536, 28, 12, 2, 8960, qkv_bias=True),
    "qwen2.5-7b": _shape("qwen2.5-7b", 152064, 3584, 28, 28, 4, 18944, tied=False, qkv_bias=True),
}


def model_shape(model: str | ModelShape | Any) -> ModelShape:
    """A ModelShape from a built-in name, a transformers config (object or dict) or a local model dir."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str):
        if model in BUILTIN:
            return BUILTIN[model]
        if os.path.isfile(os.path.join(model, "config.json")):
            with open(os.path.join(model, "config.json")) as f:
                return model_shape(json.load(f) | {"_name": model})
        raise ConfigError("model", f"unknown model {model!r}: use one of {', '.join(BUILTIN)}, a local model "
                          "dir with a config.json, or a transformers config")
    cfg = model if isinstance(model, dict) else model.to_dict()
    need = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ConfigError("model", f"the config lacks {', '.join(missing)}; the planner knows decoder-only "
                          "Llama/Qwen-style configs")
    heads = cfg["num_attention_heads"]
    return ModelShape(
        name=str(cfg.get("_name_or_path") or cfg.get("_name") or cfg.get("model_type", "model")),
        vocab=cfg["vocab_size"], hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=heads,
        kv_heads=cfg.get("num_key_value_heads") or heads, intermediate=cfg["intermediate_size"],
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        tied=bool(cfg.get("tie_word_embeddings", True)),
        qkv_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")))


@dataclasses.dataclass
class Workload:
    """What is trained and how. Token counts: SFT/DPO sequences are `seq_len` long; GRPO sequences are
    `prompt_len + seq_len` (seq_len = completion length) and there are batch · k of them."""

    method: str = "lora"            # full | lora | qlora
    objective: str = "sft"          # sft | grpo | dpo
    seq_len: int = 512
    batch: int = 4                  # sequences (SFT), prompts (GRPO), pairs (DPO) per micro-batch
    k: int = 8                      # GRPO generations per prompt
    prompt_len: int = 128           # GRPO prompt length
    optimizer: str = "adamw"        # adamw | adamw8bit | sgd
    precision: str = "bf16"         # fp32 | bf16 (pure) | mixed (bf16 compute, fp32 master weights)
    checkpointing: bool = False     # gradient checkpointing: keep one hidden state per layer
    lora_r: int = 16
    lora_targets: tuple[str, ...] = LINEARS
    kl_beta: float = 0.0            # GRPO: > 0 needs reference log-probs

    def __post_init__(self):
        for name, allowed in (("method", METHODS), ("objective", OBJECTIVES), ("optimizer", OPTIMIZERS),
                              ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}",
                                  config="Workload")
        for name in ("seq_len", "batch", "k", "lora_r"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be ≥ 1, got {getattr(self, name)}", config="Workload")
        unknown = set(self.lora_targets) - set(LINEARS)
        if unknown:
            raise ConfigError("lora_targets", f"unknown modules {sorted(unknown)}; use some of {LINEARS}",
                              config="Workload")

    @property
    def sequences(self) -> int:
        return {"sft": self.batch, "grpo": self.batch * self.k, "dpo": 2 * self.batch}[self.objective]

    @property
    def tokens_per_sequence(self) -> int:
        return self.seq_len + (self.prompt_len if self.objective == "grpo" else 0)


@dataclasses.dataclass
class Plan:
    """Bytes by part, the total, which cards it fits, and throughput estimates."""

    model: str
    params: int
    trainable: int
    parts: dict[str, float]
    tokens_per_step: int
    train_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None

    @property
    def total(self) -> float:
        """Peak bytes. Backward frees each layer's activations as it writes that layer's gradients, so the
        peak holds the larger of (activations + logits) and the gradients, not both."""
        p = self.parts
        held = sum(v for k, v in p.items() if k not in ("gradients", "activations", "logits"))
        return held + max(p["gradients"], p["activations"] + p["logits"])

    def fits(self, cards_gb=CARDS_GB, headroom: float = 0.9) -> dict[int, bool]:
        """Card size → fits, keeping (1 - headroom) of the card for the CUDA context and fragmentation."""
        return {c: self.total <= headroom * c * GB for c in cards_gb}

    def table(self) -> dict[str, float]:
        """Parts and total in GiB, rounded, for a DataFrame row."""
        return {**{k: round(v / GB, 3) for k, v in self.parts.items()}, "total": round(self.total / GB, 3)}


def _bytes(precision: str) -> dict[str, float]:
    """Bytes per element of (frozen weights, trainable weights, grads, activations)."""
    if precision == "fp32":
        return {"frozen": 4, "train": 4, "grad": 4, "act": 4}
    if precision == "bf16":
        return {"frozen": 2, "train": 2, "grad": 2, "act": 2}
    return {"frozen": 2, "train": 4, "grad": 4, "act": 2}    # mixed: fp32 masters, bf16 activations


def activations_per_token(shape: ModelShape, w: Workload) -> float:
    """Bytes autograd keeps per token for backward (all layers, final norm), without the logits.

    One block, element counts (H hidden, I intermediate, q/kv the projection widths):
      each RMSNorm: its input (fp32), and its normalised output (the next linears' input)     2H  (+H full FT:
                    the pre-weight product is kept for the norm weight's gradient)
      attention: rotated q and k, v (SDPA repeats k, v to every head), the SDPA output and its contiguous
                 copy (o_proj's input)                                                        3q + 2q
      MLP: gate and up outputs, silu(gate), their product (down_proj's input)                 4I
    Under bf16 the norm's fp32 input doubles its bytes; with LoRA on a bf16 base PEFT casts every targeted
    linear's input to the adapter's fp32 (one copy per target).
    """
    b = _bytes(w.precision)
    act = b["act"]
    full = w.method == "full"
    h, i, q = shape.hidden, shape.intermediate, shape.q_dim
    # fp32 input, normalised output, and under full fine-tuning the pre-weight product
    norm = (h * 4 if act == 2 else h * act) + h * act + (h * act if full else 0)
    block = 2 * norm + 5 * q * act + 4 * i * act
    if not full and act != 4:
        block += sum(a for n, (a, _) in shape.linear_shapes().items() if n in w.lora_targets) * 4
    if w.checkpointing:
        # Kept: each block's input; recomputed one block at a time during backward.
        return shape.layers * h * act + block + norm
    return shape.layers * block + norm


def logits_per_token(shape: ModelShape, w: Workload) -> float:
    """Bytes per token for the LM head at its peak, the start of backward: the loss's fp32 log-softmax (kept
    for backward), its incoming gradient and the gradient of its input, V floats each. The logits themselves
    (and their fp32 copy under bf16) are freed once the log-softmax exists, as long as nobody keeps them."""
    return shape.vocab * 3 * 4


def plan(model: str | ModelShape | Any, workload: Workload | None = None, *, gpu: str | None = None,
         flops: float | None = None, bandwidth: float | None = None, mfu: float = 0.4,
         bw_efficiency: float = 0.7, **workload_fields: Any) -> Plan:
    """Memory by part for `workload` (or a Workload built from the keyword fields) on `model`.

    gpu: a name in GPUS for FLOP/s and bandwidth, or pass flops (FLOP/s, bf16 dense) and bandwidth (bytes/s)
    yourself; then the plan carries training and decode tokens/s estimates.
    """
    shape = model_shape(model)
    w = workload or Workload(**workload_fields)
    b = _bytes(w.precision)
    n = shape.params()
    lin = shape.linear_params()
    parts: dict[str, float] = {}
    if w.method == "full":
        trainable = n
        parts["weights"] = n * b["train"]          # under "mixed" these are the fp32 master weights
    else:
        trainable = shape.lora_params(w.lora_r, w.lora_targets)
        if w.method == "qlora":
            # NF4: 4 bits per weight + one fp32 absmax per 64 (double quantisation: ~8 bits per 64, 0.127 bit)
            frozen = lin * (0.5 + 0.127 / 8) + (n - lin) * (2 if b["frozen"] == 4 else b["frozen"])
        else:
            frozen = n * b["frozen"]
        # PEFT keeps adapter weights in fp32 even on a bf16 base (autocast_adapter_dtype).
        parts["weights"] = frozen + trainable * 4
    grad_bytes = 4 if w.method != "full" else b["grad"]
    parts["gradients"] = trainable * grad_bytes
    adam_state = 4 if w.method != "full" else b["train"]
    state_bytes = {"adamw": 2 * adam_state, "adamw8bit": 2, "sgd": 0}[w.optimizer]
    parts["optimizer"] = trainable * state_bytes
    tokens = w.sequences * w.tokens_per_sequence
    parts["activations"] = tokens * activations_per_token(shape, w)
    parts["logits"] = tokens * logits_per_token(shape, w)
    needs_ref = w.objective == "dpo" or (w.objective == "grpo" and w.kl_beta > 0)
    parts["reference"] = n * b["frozen"] if needs_ref and w.method == "full" else 0.0
    if w.objective == "grpo":
        # Rollouts: KV cache for every generated sequence at full length, in the compute dtype.
        parts["rollout_kv"] = 2 * shape.layers * shape.kv_dim * b["act"] * tokens
    result = Plan(shape.name, n, trainable, parts, tokens)
    f, bw = _gpu(gpu, flops, bandwidth)
    if f:
        per_token = (6 if w.method == "full" else 4) * n + (2 * n if w.checkpointing else 0)
        result.train_tokens_per_s = f * mfu / per_token
        if bw:
            # Decoding B sequences: each step reads the weights once and every sequence's KV cache.
            weight_bytes = parts["weights"]
            kv_per_seq = 2 * shape.layers * shape.kv_dim * b["act"] * w.tokens_per_sequence
            batch = w.sequences if w.objective == "grpo" else w.batch
            steps_per_s = bw * bw_efficiency / (weight_bytes + batch * kv_per_seq / 2)
            result.decode_tokens_per_s = min(batch * steps_per_s, f * mfu / (2 * n))
    return result


# Datasheet dense bf16 tensor FLOP/s and memory bandwidth (bytes/s), rounded.
GPUS: dict[str, tuple[float, float]] = {
    "t4": (65e12, 320e9),
    "l4": (121e12, 300e9),
    "a100-40gb": (312e12, 1555e9),
    "a100-80gb": (312e12, 2039e9),
    "h100-sxm": (989e12, 3350e9),
    "h200": (989e12, 4800e9),
}


def _gpu(gpu: str | None, flops: float | None, bandwidth: float | None) -> tuple[float | None, float | None]:
    if gpu is None:
        return flops, bandwidth
    if gpu not in GPUS:
        raise ConfigError("gpu", f"unknown GPU {gpu!r}; use one of {', '.join(GPUS)} or pass flops= and "
                          "bandwidth=")
    f, bw = GPUS[gpu]
    return flops or f, bandwidth or bw


def plan_table(models=("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"), **workload_fields: Any) -> list[dict]:
    """One row per model: parts and total in GiB and fits on 8/12/16/24 GB cards."""
    rows = []
    for m in models:
        p = plan(m, **workload_fields)
        rows.append({"model": p.model, "params_B": round(p.params / 1e9, 3), **p.table(),
                     **{f"fits_{c}GB": ok for c, ok in p.fits().items()}})
    return rows


# -- measuring a real run --------------------------------------------------------------------------------

def measure_peak(model: str, workload: Workload, *, steps: int = 2, timeout: float = 600) -> dict[str, float]:
    """Peak training memory of a real run of `workload` on the CPU, measured in a fresh process.

    model: "tiny" (labkit.models.tiny_model) or a labkit model name/dir. How it measures: a subprocess builds
    the model and the batch, copies the weights into private memory, records its resident set size (RSS),
    resets the kernel's high-water mark (/proc/self/clear_refs), runs `steps` training steps (forward, loss,
    backward, optimizer step) and reads the mark (VmHWM). Peak training memory = the model's parameter bytes
    (counted from its tensors) + (high-water mark − RSS before training). glibc malloc is told to serve every
    block over 64 KiB by mmap (MALLOC_MMAP_THRESHOLD_), so a freed tensor goes back to the kernel at once and
    the high-water mark tracks live tensors, not allocator caches. Two steps, so the optimizer states exist.
    Returns {"peak": bytes, "weights": bytes, "growth": bytes}.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    args = json.dumps({"model": model, "steps": steps, "workload": dataclasses.asdict(workload)})
    proc = subprocess.run([sys.executable, "-m", "labkit.rlsys.planner", args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"measure_peak: the measuring process failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure_child(spec: dict) -> dict[str, float]:
    """Runs inside measure_peak's subprocess: build, train `steps` steps, report the RSS high-water mark."""
    import torch

    from labkit.models import load_model, load_tokenizer, tiny_model

    w = Workload(**{**spec["workload"], "lora_targets": tuple(spec["workload"]["lora_targets"])})
    if w.objective != "sft" or w.method == "qlora" or w.checkpointing:
        raise ConfigError("workload", "measure_peak runs SFT, full or LoRA, without checkpointing")
    dtype = torch.float32 if w.precision == "fp32" else torch.bfloat16
    if spec["model"] == "tiny":
        model, tok = tiny_model(load_tokenizer(), dtype=dtype)
    else:
        model, tok = load_model(spec["model"], device="cpu", dtype=dtype)
    # transformers may map fp32 safetensors weights straight from the file: those pages would enter the RSS
    # only when first read during training. Private copies make the weights resident before the baseline.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    if w.method == "lora":
        from peft import get_peft_model

        from labkit.models.adapters import lora_config

        model = get_peft_model(model, lora_config(w.lora_r, 2 * w.lora_r, 0.0, ",".join(w.lora_targets)))
    model.train()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(trainable, lr=1e-5, foreach=False) if w.optimizer == "adamw"
           else torch.optim.SGD(trainable, lr=1e-5))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (w.batch, w.seq_len), generator=g)          # [B, T]
    before = _rss_kb("VmRSS")
    # Reset the kernel's high-water mark so building the model (which can peak higher) does not count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(spec["steps"]):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss
    growth = max(0, _rss_kb("VmHWM") - before) * 1024
    return {"peak": weights + growth, "weights": weights, "growth": growth}


def _rss_kb(field: str) -> int:
    """VmRSS (now) or VmHWM (high-water mark since the last reset) of this process, in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


if __name__ == "__main__":
    print(json.dumps(_measure_child(json.loads(sys.argv[1]))))
