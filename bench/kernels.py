"""labkit.kernels against torch eager (and torch.compile where it runs): time and peak memory of forward plus
backward, over sizes. Writes <out>/kernels-<device>.csv and prints each implementation's ratios to eager.

On a CPU it compares the chunked cross-entropy and log-prob paths (plain torch, a chunk of tokens at a time)
with the full-logits path: Triton's interpreter is for tests, its timings say nothing. On a GPU it compares
every kernel, plus the chunked torch path for the two LM-head ops. Memory is labkit.kernels.profiling's
peak_bytes: torch's allocator, above what the inputs already hold.

    .venv/bin/python bench/kernels.py [--device cpu|cuda] [--size small|full] [--dtype float32|bfloat16]
        [--repeats 3] [--no-compile] [--only cross_entropy,...] [--out bench/results]
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import statistics
import time

import torch

from labkit import kernels as K
from labkit.kernels.profiling import peak_bytes

# Sizes: SmolLM2-135M (hidden 576, MLP 1536, 9/3 heads of 64, vocab 49,152) and a Llama-8B-like layer
# (4096, 14336, 32/8 heads of 128, vocab 128,256). CPU sizes stay small enough for a laptop.
SIZES = {
    ("cpu", "small"): dict(tokens=[512, 2048], lm=[(576, 49152)]),
    ("cpu", "full"): dict(tokens=[2048, 8192], lm=[(576, 49152)]),
    ("cuda", "small"): dict(tokens=[4096], lm=[(576, 49152)], layer=[(576, 1536, 9, 3, 64, 16)]),
    ("cuda", "full"): dict(tokens=[4096, 16384], lm=[(576, 49152), (4096, 128256)],
                           layer=[(576, 1536, 9, 3, 64, 16), (4096, 14336, 32, 8, 128, 64)]),
}


def _randn(*shape, device, dtype, scale=1.0):
    return (torch.randn(*shape, device=device, dtype=torch.float32) * scale).to(dtype).requires_grad_(True)


def _as_attention(rope, cos, sin):
    """rope on q, k made as attention makes them: [B, T, H, D] projections viewed as [B, H, T, D]."""
    return lambda q, k: rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)


def cases(device: str, dtype: torch.dtype, size: str):
    """(op, size label, inputs, {impl: fn(*inputs) -> outputs}) for every op that makes sense on `device`."""
    spec, gpu = SIZES[(device, size)], device == "cuda"
    for n in spec["tokens"]:
        for hidden, vocab in spec["lm"]:
            h, w = _randn(n, hidden, device=device, dtype=dtype), _randn(vocab, hidden, device=device,
                                                                          dtype=dtype, scale=hidden ** -0.5)
            y = torch.randint(0, vocab, (n,), device=device)
            label = f"tokens={n} hidden={hidden} vocab={vocab}"
            # Default arguments bind this iteration's labels (a closure would see the last loop's).
            impls = {"eager": lambda h, w, y=y: K.linear_cross_entropy_reference(h, w, y),
                     "labkit-torch": lambda h, w, y=y: K.linear_cross_entropy(h, w, y, backend="torch")}
            if gpu:
                impls["labkit-triton"] = lambda h, w, y=y: K.linear_cross_entropy(h, w, y, backend="triton")
            yield "cross_entropy", label, [h, w], impls
            impls = {"eager": lambda h, w, y=y: K.linear_selected_logprobs_reference(h, w, y),
                     "labkit-torch": lambda h, w, y=y: K.linear_selected_logprobs(h, w, y, backend="torch")}
            if gpu:
                impls["labkit-triton"] = lambda h, w, y=y: K.linear_selected_logprobs(h, w, y,
                                                                                       backend="triton")
            yield "linear_logprobs", label, [h, w], impls
    if not gpu:
        return
    for n in spec["tokens"]:
        for hidden, inter, q_heads, k_heads, head_dim, rank in spec["layer"]:
            label = f"tokens={n} hidden={hidden}"
            x, g = _randn(n, hidden, device=device, dtype=dtype), _randn(hidden, device=device, dtype=dtype)
            yield "rmsnorm", label, [x, g], {"eager": K.rms_norm_reference, "labkit-triton": K.rms_norm}
            a, b = _randn(n, inter, device=device, dtype=dtype), _randn(n, inter, device=device, dtype=dtype)
            yield "swiglu", f"tokens={n} inter={inter}", [a, b], {"eager": K.swiglu_reference,
                                                                   "labkit-triton": K.swiglu}
            seq = 1024
            batch = max(1, n // seq)
            q = _randn(batch, seq, q_heads, head_dim, device=device, dtype=dtype)
            k = _randn(batch, seq, k_heads, head_dim, device=device, dtype=dtype)
            ang = torch.arange(seq, device=device)[:, None] * torch.rand(head_dim // 2, device=device)
            cos, sin = (torch.cat([f(ang)] * 2, -1)[None].to(dtype) for f in (torch.cos, torch.sin))
            yield "rope", f"batch={batch} seq={seq} heads={q_heads}/{k_heads}x{head_dim}", [q, k], {
                "eager": _as_attention(K.apply_rope_reference, cos, sin),
                "labkit-triton": _as_attention(K.apply_rope, cos, sin)}
            base = torch.randn(inter, hidden, device=device).to(dtype) * hidden ** -0.5     # frozen
            la = _randn(rank, hidden, device=device, dtype=dtype, scale=hidden ** -0.5)
            lb = _randn(inter, rank, device=device, dtype=dtype, scale=0.01)
            yield "lora", f"tokens={n} {hidden}->{inter} r={rank}", [x, la, lb], {
                "eager": lambda x, la, lb, w=base: K.lora_linear_reference(x, w, la, lb, 2.0),
                "labkit-triton": lambda x, la, lb, w=base: K.lora_linear(x, w, la, lb, 2.0)}


def _step(fn, inputs):
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    sum(o.float().sum() for o in out).backward()


def measure(fn, inputs, device: str, repeats: int) -> tuple[float, int]:
    """(median ms of forward + backward, peak bytes) after one warm-up (which also compiles)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    _step(fn, inputs)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        _step(fn, inputs)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    for t in inputs:
        t.grad = None
    return statistics.median(times), peak_bytes(lambda: _step(fn, inputs), device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=("cpu", "cuda"))
    ap.add_argument("--size", default="small", choices=("small", "full"))
    ap.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                    help="default: bfloat16 on a GPU, float32 on a CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    ap.add_argument("--only", default="", help="comma-separated ops (default: every op for the device)")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    only = {o for o in args.only.split(",") if o}
    rows = []
    print(f"labkit.kernels bench: {args.device}, {dtype}, backend {K.backend_name()}, "
          f"torch {torch.__version__}")
    for op, label, inputs, impls in cases(args.device, dtype, args.size):
        if only and op not in only:
            continue
        if not args.no_compile:
            impls["compile"] = torch.compile(impls["eager"], dynamic=False)
        results = {}
        for name, fn in impls.items():
            try:
                results[name] = measure(fn, inputs, args.device, args.repeats)
            except Exception as exc:  # torch.compile without a working compiler, a backend that cannot run
                first_line = (str(exc).splitlines() or [""])[0][:80]
                print(f"  {op} {label} {name}: skipped ({type(exc).__name__}: {first_line})")
            if args.device == "cuda":
                torch.cuda.empty_cache()
        eager_ms, eager_peak = results["eager"]
        for name, (ms, peak) in results.items():
            row = dict(op=op, size=label, device=args.device, dtype=str(dtype).removeprefix("torch."),
                       impl=name, ms=round(ms, 3), peak_mib=round(peak / 2**20, 2),
                       speedup_vs_eager=round(eager_ms / ms, 2),
                       memory_ratio_vs_eager=round(eager_peak / peak, 2) if peak else float("inf"))
            rows.append(row)
            print(f"{op:16s} {label:36s} {name:14s} {ms:9.2f} ms {peak / 2**20:9.1f} MiB   "
                  f"speed x{row['speedup_vs_eager']:<6} memory /{row['memory_ratio_vs_eager']}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"kernels-{args.device}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["op"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
