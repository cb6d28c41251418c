"""One (Q)LoRA SFT training step on a 0.5-1.5B Llama/Qwen with random weights: plain PEFT, PEFT with
labkit.kernels.patch(), and Unsloth where it is installed. Prints time per step, peak memory and each one's
ratios to plain PEFT, and writes <out>/qlora_step-<device>.csv.

The model is built from a config (Qwen2.5-0.5B, Llama-3.2-1B or Qwen2.5-1.5B shapes; nothing is downloaded)
and saved once, so every variant loads the same weights through labkit's load_for_training, in a process of
its own: Unsloth patches transformers at import, and each process's memory statistics are its own. The batch
is random token ids with the first half of each row masked, as a completion-only SFT batch; the step is
forward, backward and an AdamW update of the adapters, under bf16 autocast when the dtype is bf16.

On a CPU, labkit.kernels take their torch paths (the chunked LM-head loss still saves memory) and Unsloth its
CPU backend (stock PEFT plus a chunked cross-entropy); --size tiny is the smoke run. On a GPU the kernels are
Triton and Unsloth is its GPU backend. Step-1 loss is before any update (LoRA's B starts at 0), so it should
agree across variants: a check that they train the same model.

    .venv/bin/python bench/qlora_step.py [--device cuda|cpu] [--size tiny|qwen-0.5b|llama-1b|qwen-1.5b]
        [--method qlora|lora] [--batch 4] [--seq 1024] [--steps 5] [--warmup 2] [--dtype bfloat16|float32]
        [--gradient-checkpointing] [--variants peft,kernels,unsloth] [--out bench/results]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

# name → (architecture, config fields). The three real shapes are their published configs' (tied embeddings).
SIZES = {
    "tiny": ("llama", dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                           num_key_value_heads=4, vocab_size=32000)),
    "qwen-0.5b": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                rope_theta=1e6)),
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                               rope_theta=5e5)),
    "qwen-1.5b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                rope_theta=1e6)),
}
VARIANTS = ("peft", "kernels", "unsloth")


def build_model(size: str, dtype: str, path: pathlib.Path) -> int:
    """Save a random model of this size (and a tokenizer, which the loaders expect) to `path`; its params."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from labkit.models.loading import load_tokenizer

    arch, fields = SIZES[size]
    config = (LlamaConfig if arch == "llama" else Qwen2Config)(
        **fields, tie_word_embeddings=True, max_position_embeddings=32768, rms_norm_eps=1e-6)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(path)
    # The embedded tokenizer: only its special tokens matter here (the batch is random ids below vocab).
    load_tokenizer().save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def unsloth_status(device: str) -> str | None:
    """None when the Unsloth variant can run on this device, else why not."""
    if importlib.util.find_spec("unsloth") is None:
        return "not installed (GPU: pip install 'labkit[gpu]'; CPU: bash scripts/setup_unsloth.sh)"
    if device == "cpu":
        from labkit.models.capabilities import unsloth_cpu_backend

        if not unsloth_cpu_backend():
            return "the installed Unsloth has no CPU backend (2026.10.9+ has)"
    return None


# ------------------------------------------------------------------------------------------------ worker

def worker(args) -> dict:
    """Load the saved model as `args.variant` and time its training steps; a JSON-ready dict."""
    if args.variant == "unsloth":
        import unsloth  # noqa: F401 - before transformers, as Unsloth asks
    import contextlib

    import torch

    from labkit.kernels import backend_name, patch
    from labkit.kernels.profiling import peak_bytes
    from labkit.models.adapters import load_for_training

    device = torch.device(args.device)
    model, _, info = load_for_training(
        args.model_dir, method=args.method, lora_r=16, lora_alpha=32, dtype=args.dtype, device=args.device,
        backend="unsloth" if args.variant == "unsloth" else "peft", max_length=args.seq,
        gradient_checkpointing=args.gradient_checkpointing, seed=0)
    patched = patch(model) if args.variant == "kernels" else {}      # the LM head too: this loop's loss
    if args.variant == "unsloth" and device.type == "cpu":
        # Unsloth's CPU backend routes the loss through its chunked cross-entropy only while this flag is up;
        # its SFTTrainer raises it around each training step, which this hand-written loop stands in for.
        for m in model.modules():
            if vars(m).get("_unsloth_cpu_chunked_ce"):
                m._unsloth_cpu_chunked_ce_active = True
    model.train()
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen).to(device)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100                                 # the prompt half carries no loss
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    bf16 = info["compute_dtype"] == "bfloat16"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> float:
        with autocast():
            loss = model(input_ids=ids, labels=labels, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    losses = [step() for _ in range(args.warmup)]        # the first creates AdamW's state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        held = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        losses.append(step())
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        total = torch.cuda.max_memory_allocated(device)
        step_peak = total - held
    else:
        step_peak = peak_bytes(lambda: losses.append(step()), device)   # the profiler slows this one step
        total = None
    ms = statistics.median(times) * 1e3
    return {"variant": args.variant, "backend": info["backend"], "kernels_backend": backend_name(),
            "patched": {k: len(v) for k, v in patched.items()}, "compute_dtype": info["compute_dtype"],
            "trainable_params": info["trainable_params"], "ms_per_step": round(ms, 2),
            "tokens_per_s": round(args.batch * args.seq / ms * 1e3, 1),
            "step_peak_mib": round(step_peak / 2**20, 1),
            "total_peak_gib": round(total / 2**30, 3) if total is not None else None,
            "loss_step1": round(losses[0], 5), "loss_last": round(losses[-1], 5)}


# ------------------------------------------------------------------------------------------------- main

def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=("cpu", "cuda"))
    ap.add_argument("--size", default=None, choices=tuple(SIZES),
                    help="default: llama-1b on cuda, tiny on cpu")
    ap.add_argument("--method", default="qlora", choices=("qlora", "lora"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=None,
                    help="tokens per row (default: 1024 on cuda, 256 on cpu)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--dtype", default=None, choices=("bfloat16", "float32"),
                    help="compute dtype (default: bfloat16 on cuda, float32 on cpu)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--variant", help=argparse.SUPPRESS)       # worker mode: one variant, JSON on stdout
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    gpu = args.device == "cuda"
    args.size = args.size or ("llama-1b" if gpu else "tiny")
    args.seq = args.seq or (1024 if gpu else 256)
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    if args.variant:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return

    with tempfile.TemporaryDirectory(prefix="labkit-qlora-bench-") as tmp:
        start = time.perf_counter()
        n = build_model(args.size, args.dtype, pathlib.Path(tmp))
        print(f"qlora_step: {args.size} ({n / 1e9:.2f}B parameters, random), {args.method}, {args.device} "
              f"{args.dtype}, batch {args.batch} x {args.seq} tokens, r=16 on all linear layers; model built "
              f"in {time.perf_counter() - start:.0f} s", flush=True)
        rows = []
        for variant in [v for v in args.variants.split(",") if v]:
            why = unsloth_status(args.device) if variant == "unsloth" else None
            if why:
                print(f"  {variant:8s} skipped: {why}")
                continue
            cmd = [sys.executable, __file__, "--variant", variant, "--model-dir", tmp, "--device",
                   args.device, "--size", args.size, "--method", args.method, "--batch", str(args.batch),
                   "--seq", str(args.seq), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--dtype", args.dtype]
            cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
            env = {**os.environ, "UNSLOTH_FORCE_CPU": "1"} if not gpu else dict(os.environ)
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
                print(f"  {variant:8s} failed: {tail[0][:200]}")
                continue
            rows.append(json.loads(lines[-1][len("RESULT "):]))
    base = next((r for r in rows if r["variant"] == "peft"), None)
    print(f"{'variant':9s} {'backend':8s} {'ms/step':>9s} {'tokens/s':>9s} {'step peak MiB':>14s} "
          f"{'total GiB':>10s} {'loss@1':>9s} {'loss@end':>9s}   vs peft")
    for r in rows:
        if base:
            r["speedup_vs_peft"] = round(base["ms_per_step"] / r["ms_per_step"], 2)
            r["memory_ratio_vs_peft"] = round(base["step_peak_mib"] / r["step_peak_mib"], 2) \
                if r["step_peak_mib"] else None
        total = f"{r['total_peak_gib']:10.2f}" if r["total_peak_gib"] is not None else f"{'-':>10s}"
        print(f"{r['variant']:9s} {r['backend']:8s} {r['ms_per_step']:9.1f} {r['tokens_per_s']:9.0f} "
              f"{r['step_peak_mib']:14.1f} {total} {r['loss_step1']:9.4f} {r['loss_last']:9.4f}   "
              f"speed x{r.get('speedup_vs_peft', '-')}, step memory /{r.get('memory_ratio_vs_peft', '-')}")
    if not rows:
        return
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"qlora_step-{args.device}.csv"
    fields = ["size", "method", "device", "batch", "seq"] + [k for k in rows[0] if k != "patched"] + \
        ["speedup_vs_peft", "memory_ratio_vs_peft"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(fields)), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({"size": args.size, "method": args.method, "device": args.device,
                             "batch": args.batch, "seq": args.seq, **r})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
