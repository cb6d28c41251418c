"""GRPO rollout time per step: TRL's own generate vs labkit's vLLM engine, same config, on this CPU.

Short runs of labkit.stages.grpo on the embedded model and the arithmetic prompts, with the same seed,
steps, prompts per step, group size, completion length, temperature and dtype:

- hf: TRL generates (`model.generate` on the LoRA policy, left-padded, one batch per step);
- vllm-merged / vllm-adapter: RLConfig(use_vllm=True, vllm_mode="engine", vllm_sync=...): the vLLM server
  samples, and each step the policy reaches it as merged weights (W + ΔW loaded as its base weights; the
  CPU default) or as its LoRA adapter (hot-loaded; sampled through vLLM's LoRA path).

Each vLLM run starts its own server just before it and stops it after (so nothing else runs during the hf
run); start-up is reported apart. A step's rollout time is the wall time of the trainer's generation call
(`GRPOTrainer._generate`: templating, sampling, decoding, and for vLLM the refit), timed by wrapping it. For
vLLM the refit and sampling seconds are broken out, and the log-prob check engine_rollouts runs on the first
two steps (a diagnostic, one extra forward pass) is subtracted. The runs sample different completions, so
completion tokens per second are printed next to seconds per step. Medians over the steps after the first
(which pays one-off costs); last lines: the ratio hf / vllm per sync mode.

    .venv/bin/python bench/rl_rollouts.py [--steps 4] [--sync merged,adapter] [--prompts-per-step 2]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import tempfile
import time

from labkit.config import RLConfig
from labkit.stages import engine_rollouts, grpo


def timed_generate(records: list[dict]):
    """Wrap GRPOTrainer._generate so each call appends {step, seconds, tokens}; returns the undo function."""
    from trl import GRPOTrainer

    original = GRPOTrainer._generate

    def _generate(self, prompts):
        t0 = time.perf_counter()
        out = original(self, prompts)
        records.append({"step": self.state.global_step, "seconds": time.perf_counter() - t0,
                        "tokens": sum(len(ids) for ids in out[1])})
        return out

    GRPOTrainer._generate = _generate
    return lambda: setattr(GRPOTrainer, "_generate", original)


def run(name: str, cfg: RLConfig, engine=None) -> list[dict]:
    records: list[dict] = []
    undo = timed_generate(records)
    try:
        result = grpo.train(cfg, engine=engine, force=True)
    finally:
        undo()
    per_batch = {r["step"]: r for r in result.metrics.get("rollouts", {}).get("per_batch", [])}
    for r in records:
        extra = per_batch.get(r["step"], {})
        r["check"] = extra.get("check_seconds", 0.0)
        r["refit"] = extra.get("refit_seconds")
        r["sample"] = extra.get("generate_seconds")
        r["seconds"] -= r["check"]
        detail = (f" (refit {r['refit']:.2f} s, sampling {r['sample']:.1f} s; check {r['check']:.1f} s "
                  "left out)" if r["refit"] is not None else "")
        print(f"{name:>12} step {r['step']}: rollout {r['seconds']:6.1f} s, {r['tokens']} tokens, "
              f"{r['tokens'] / r['seconds']:6.1f} tokens/s{detail}", flush=True)
    return records


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=2, help="prompts per micro-batch")
    ap.add_argument("--grad-accum", type=int, default=2,
                    help="micro-batches per step: one generation call covers prompts-per-step × grad-accum "
                         "prompts (the default 2 × 2 × 8 = the cpu preset's 32 completions a step, trained "
                         "in halves to bound memory)")
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-completion-length", type=int, default=48)
    ap.add_argument("--dtype", default="float32", help="policy and engine dtype (float32 | bfloat16)")
    ap.add_argument("--sync", default="auto",
                    help="comma-separated vLLM sync modes to run: auto | merged | adapter (auto: merged on "
                         "CPU)")
    ap.add_argument("--only", choices=("hf", "vllm"), default=None)
    args = ap.parse_args(argv)

    out = pathlib.Path(tempfile.mkdtemp(prefix="labkit-rl-rollouts-"))
    base = RLConfig.from_preset("cpu", max_steps=args.steps, prompts_per_step=args.prompts_per_step,
                                grad_accum=args.grad_accum, num_generations=args.num_generations,
                                max_completion_length=args.max_completion_length, dtype=args.dtype,
                                eval_split="", preflight=False, log_rollouts=False)
    print(f"GRPO rollouts, {args.prompts_per_step * args.grad_accum} prompts × {args.num_generations} "
          f"completions of ≤ "
          f"{args.max_completion_length} tokens per step, {args.steps} steps, {args.dtype}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, load {os.getloadavg()[0]:.1f}",
          flush=True)
    results: dict[str, list[dict]] = {}
    if args.only != "vllm":
        results["hf"] = run("hf", base.replace(output_dir=str(out / "hf")))
    for sync in ([] if args.only == "hf" else args.sync.split(",")):
        cfg = base.replace(use_vllm=True, vllm_mode="engine", vllm_sync=sync,
                           output_dir=str(out / f"vllm-{sync}"))
        name = f"vllm-{engine_rollouts.sync_mode(cfg)}"
        with engine_rollouts.start_engine(cfg, out / name, {"compute_dtype": args.dtype}) as engine:
            results[name] = run(name, cfg, engine)
    med = {}
    for name, recs in results.items():
        later = recs[1:] or recs
        med[name] = (statistics.median(r["seconds"] for r in later),
                     statistics.median(r["tokens"] / r["seconds"] for r in later))
        print(f"median {name:>12}: {med[name][0]:6.1f} s per step's rollouts, {med[name][1]:6.1f} tokens/s")
    for name in med:
        if name != "hf" and "hf" in med:
            print(f"ratio hf / {name}: {med['hf'][0] / med[name][0]:.2f}x per step "
                  f"({med[name][1] / med['hf'][1]:.2f}x tokens/s); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
