"""Generation throughput: a naive one-prompt-at-a-time loop vs the hf engine vs the vllm engine.

All three complete the same prompts of the embedded model greedily to exactly --tokens new tokens each
(EOS ignored), in the same dtype, so each produces batch × tokens tokens. The naive loop calls
`model.generate` on one prompt at a time; the hf engine batches them (static or continuous batching);
the vllm engine is a vLLM server process (skipped when no vLLM environment exists: `make vllm-env`). Runs
alternate engine order per repeat; start-up time is reported apart from tokens/s. Medians of --repeats.

    .venv/bin/python bench/generation.py [--batch 32] [--tokens 256] [--repeats 3] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from labkit.infer import HFEngine, SamplingParams, VLLMEngine, vllm_available
from labkit.models import load_model

PROMPTS = ["Write a short story about a robot who learns to paint.", "Explain photosynthesis simply.",
           "List three uses of a paperclip.", "What is the capital of Australia, and why?",
           "Describe the water cycle.", "Give me a recipe for pancakes.", "Why is the sky blue?",
           "Summarise the plot of Hamlet."]


def prompts_for(tok, batch: int) -> list[list[int]]:
    texts = [PROMPTS[i % len(PROMPTS)] + f" (#{i})" for i in range(batch)]
    return [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                    tokenize=True, return_dict=False) for t in texts]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 (the same for every engine)")
    ap.add_argument("--naive-prompts", type=int, default=4,
                    help="the naive loop times this many prompts and scales (it is the slow baseline)")
    ap.add_argument("--engines", default="naive,hf,hf-continuous,vllm")
    ap.add_argument("--vllm-max-num-seqs", type=int, default=None,
                    help="vllm: --max-num-seqs (default: the batch)")
    ap.add_argument("--vllm-kv-cache-gb", type=int, default=2, help="vllm: VLLM_CPU_KVCACHE_SPACE in GiB")
    ap.add_argument("--vllm-env", action="append", default=[], metavar="KEY=VALUE",
                    help="vLLM server environment, e.g. VLLM_CPU_OMP_THREADS_BIND=0-1 (repeatable)")
    ap.add_argument("--vllm-arg", action="append", default=[],
                    help="extra vLLM server argument, e.g. --vllm-arg=--enable-prefix-caching (repeatable)")
    args = ap.parse_args()
    engines = args.engines.split(",")
    model, tok = load_model(dtype=args.dtype)
    prompts = prompts_for(tok, args.batch)
    sampling = SamplingParams(max_new_tokens=args.tokens, ignore_eos=True)
    runners = {}
    if "naive" in engines:
        few = prompts[:args.naive_prompts]
        loop = HFEngine(model, tok, batch_size=1)
        runners["naive"] = (lambda: [loop.generate([p], sampling) for p in few], len(few) * args.tokens)
    if "hf" in engines:
        hf = HFEngine(model, tok, batch_size=args.batch)
        runners["hf"] = (lambda: hf.generate(prompts, sampling), args.batch * args.tokens)
    if "hf-continuous" in engines:
        cb = HFEngine(model, tok, batching="continuous")
        runners["hf-continuous"] = (lambda: cb.generate(prompts, sampling), args.batch * args.tokens)
    vllm = None
    if "vllm" in engines:
        if vllm_available():
            env = dict(kv.split("=", 1) for kv in args.vllm_env)
            vllm = VLLMEngine(dtype=args.dtype, enable_lora=False, max_model_len=1024,
                              max_num_seqs=args.vllm_max_num_seqs or max(args.batch, 8),
                              kv_cache_gb=args.vllm_kv_cache_gb, extra_args=args.vllm_arg, env=env)
            print(f"vllm engine started in {vllm.start_seconds:.1f} s (log: {vllm.log_path}; "
                  f"env {env or '-'}, args {args.vllm_arg or '-'})", flush=True)
            vllm.generate(prompts[:2], SamplingParams(max_new_tokens=4))   # first request pays lazy set-up
            runners["vllm"] = (lambda: vllm.generate(prompts, sampling), args.batch * args.tokens)
        else:
            print("vllm: skipped (no vLLM environment; run `make vllm-env`)")
    rates: dict[str, list[float]] = {name: [] for name in runners}
    try:
        for rep in range(args.repeats):
            order = list(runners) if rep % 2 == 0 else list(reversed(runners))
            for name in order:
                fn, tokens = runners[name]
                with torch.inference_mode():
                    seconds = timed(fn)
                rates[name].append(tokens / seconds)
                print(f"rep {rep} {name:>14}: {tokens} tokens in {seconds:7.1f} s = {tokens / seconds:7.1f} "
                      f"tokens/s", flush=True)
    finally:
        if vllm is not None:
            vllm.close()
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in med.items():
        print(f"median {name:>14}: {rate:7.1f} tokens/s")
    for a, b in (("hf", "naive"), ("hf-continuous", "naive"), ("vllm", "hf"), ("vllm", "naive")):
        if a in med and b in med:
            print(f"ratio {a} / {b}: {med[a] / med[b]:.2f}x")


if __name__ == "__main__":
    main()
