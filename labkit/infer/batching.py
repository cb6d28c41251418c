"""Static vs continuous batching on a mixed workload: throughput and per-request latency.

A mixed workload has prompts of different lengths asking for different numbers of tokens (most short, a few
long). Both schedulers get all requests at time 0 and decode them greedily to exactly their own budget:

- static: requests are taken in arrival order, `batch_size` at a time; a batch is left-padded and decodes
  until its longest request is done, so short requests wait for long ones (and for every batch before them)
  and finished rows keep occupying the batch;
- continuous: transformers' continuous-batching scheduler (paged KV cache) keeps up to `batch_size`
  requests in flight, retires each as soon as its budget is reached and admits the next one in its place.

Latency is the time from submission to a request's last token. Rows report useful tokens (the budgets, the
same for both), tokens/s and p50/p95 latency; static rows also report the share of decoding slots spent on
requests that were already done.

    work = mixed_workload(tok, 32)
    rows = compare_batching(model, tok, work, batch_size=8)
    batching_figure(rows).show()
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from labkit.errors import ConfigError
from labkit.infer.engine import EngineError, SamplingParams
from labkit.infer.hf import HFEngine

# Plain sentences; a prompt is 1-8 of them, so prompt lengths vary about tenfold.
_SENTENCES = ("The river runs past the old mill and under a stone bridge.",
              "Some people think that the best bread is baked at dawn.",
              "A small robot learned to paint by watching the rain on a window.",
              "In the library, every book had a note written in its margin.",
              "The train was late again, so she walked along the tracks.",
              "Mathematics is the language in which the rules of motion are written.",
              "He planted tomatoes, beans and a single sunflower that grew taller than the fence.",
              "At night the city hums with the sound of a thousand small machines.")


@dataclasses.dataclass
class Request:
    """One request: its prompt's token ids and how many tokens it asks for."""

    prompt_ids: list[int]
    max_new_tokens: int


def mixed_workload(tok, n: int = 32, *, seed: int = 0, short: tuple[int, int] = (8, 24),
                   long: tuple[int, int] = (64, 128), long_share: float = 0.25) -> list[Request]:
    """n requests with prompts of 1-8 sentences; `long_share` of them ask for a budget drawn from `long`,
    the rest from `short` (inclusive ranges). Seeded: the same workload every time."""
    if n < 1 or not 0 <= long_share <= 1:
        raise ConfigError("n", f"need n >= 1 and 0 <= long_share <= 1, got n={n}, long_share={long_share}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(_SENTENCES) for _ in range(rng.randint(1, 8)))
        budget = rng.randint(*long) if rng.random() < long_share else rng.randint(*short)
        out.append(Request(tok(text, add_special_tokens=False)["input_ids"], budget))
    return out


def _summary(mode: str, batch_size: int, requests: Sequence[Request], wall: float,
             latencies: list[float], **extra: Any) -> dict[str, Any]:
    useful = sum(r.max_new_tokens for r in requests)
    lat = sorted(latencies)
    return {"mode": mode, "batch_size": batch_size, "requests": len(requests), "useful_tokens": useful,
            "wall_s": round(wall, 3), "tokens_per_s": round(useful / wall, 1),
            "p50_latency_s": round(statistics.median(lat), 3),
            "p95_latency_s": round(lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))], 3),
            "mean_latency_s": round(statistics.fmean(lat), 3), **extra}


def run_static(model, tok, requests: Sequence[Request], *, batch_size: int = 8) -> dict[str, Any]:
    """Serve `requests` with static batches in arrival order; a summary row (see the module docstring) with
    `wasted_share`: the fraction of decoded row-steps that belonged to requests already past their budget."""
    engine = HFEngine(model, tok, batch_size=batch_size)
    latencies = [0.0] * len(requests)
    slots = 0
    t0 = time.perf_counter()
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        longest = max(r.max_new_tokens for r in chunk)
        sampling = SamplingParams(max_new_tokens=longest, ignore_eos=True)
        engine.generate([r.prompt_ids for r in chunk], sampling)
        done = time.perf_counter() - t0
        for i in range(start, start + len(chunk)):
            latencies[i] = done
        slots += longest * len(chunk)
    wall = time.perf_counter() - t0
    useful = sum(r.max_new_tokens for r in requests)
    return _summary("static", batch_size, requests, wall, latencies,
                    wasted_share=round(1 - useful / slots, 3))


def run_continuous(model, tok, requests: Sequence[Request], *, batch_size: int = 8,
                   page_size: int = 64) -> dict[str, Any]:
    """Serve `requests` with transformers' continuous batching, at most `batch_size` in flight, each to its
    own budget; a summary row. The KV cache is sized from the workload (on CPU it would otherwise be sized
    from free memory)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    longest = max(len(r.prompt_ids) + r.max_new_tokens for r in requests)
    blocks = min(len(requests), batch_size) * -(-longest // page_size) + 4
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    gen = GenerationConfig(max_new_tokens=max(r.max_new_tokens for r in requests), do_sample=False,
                           eos_token_id=-1, pad_token_id=pad)   # -1: no EOS, every request runs to its budget
    cb = ContinuousBatchingConfig(page_size=page_size, num_blocks=blocks, max_batch_tokens=max(512, longest),
                                  max_requests_per_batch=batch_size, use_cuda_graph=False)
    finished: dict[str, float] = {}
    with model.continuous_batching_context_manager(generation_config=gen, continuous_batching_config=cb,
                                                   block=True, timeout=5, warmup=False) as manager:
        t0 = time.perf_counter()
        for i, r in enumerate(requests):
            manager.add_request(r.prompt_ids, request_id=f"r{i}", max_new_tokens=r.max_new_tokens,
                                eos_token_id=-1)
        while len(finished) < len(requests):
            res = manager.get_result(timeout=1)
            if res is not None and res.is_finished():
                if res.error:
                    raise EngineError(f"continuous batching failed on request {res.request_id}: {res.error}")
                want = requests[int(res.request_id[1:])].max_new_tokens
                if len(res.generated_tokens) != want:
                    raise EngineError(f"request {res.request_id} got {len(res.generated_tokens)} tokens, "
                                      f"asked for {want}")
                end = res.lifespan[1] if res.lifespan[1] > 0 else time.perf_counter()
                finished[res.request_id] = end - t0
            elif res is None and not manager.is_running():
                raise EngineError(f"the continuous-batching loop stopped after {len(finished)} of "
                                  f"{len(requests)} requests")
        wall = time.perf_counter() - t0
    return _summary("continuous", batch_size, requests, wall,
                    [finished[f"r{i}"] for i in range(len(requests))], wasted_share=0.0)


def compare_batching(model, tok, requests: Sequence[Request], *, batch_size: int = 8,
                     modes: Sequence[str] = ("static", "continuous"),
                     repeats: int = 1) -> list[dict[str, Any]]:
    """One summary row per mode on the same requests (run_static / run_continuous), plus `vs_static`:
    each mode's tokens/s over static's. With repeats > 1 the modes alternate order each round and each
    mode's row is its run with the median tokens/s."""
    runners = {"static": run_static, "continuous": run_continuous}
    unknown = [m for m in modes if m not in runners]
    if unknown:
        raise ConfigError("modes", f"unknown {unknown}; choose from {tuple(runners)}")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(max(1, repeats)):
        for m in (modes if rep % 2 == 0 else modes[::-1]):
            runs[m].append(runners[m](model, tok, requests, batch_size=batch_size))
    rows = [sorted(runs[m], key=lambda r: r["tokens_per_s"])[len(runs[m]) // 2] for m in modes]
    base = next((r["tokens_per_s"] for r in rows if r["mode"] == "static"), None)
    for r in rows:
        r["vs_static"] = round(r["tokens_per_s"] / base, 2) if base else None
    return rows


def batching_figure(rows: list[dict[str, Any]]):
    """Throughput and p50/p95 latency per mode side by side: continuous batching should raise the first
    and cut the second for short requests stuck behind long ones."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("throughput (tokens/s)", "latency (s)"))
    names = [f"{r['mode']} (batch {r['batch_size']})" for r in rows]
    fig.add_bar(x=names, y=[r["tokens_per_s"] for r in rows], name="tokens/s", row=1, col=1)
    fig.add_bar(x=names, y=[r["p50_latency_s"] for r in rows], name="p50", row=1, col=2)
    fig.add_bar(x=names, y=[r["p95_latency_s"] for r in rows], name="p95", row=1, col=2)
    fig.update_layout(title="Static vs continuous batching on mixed-length requests", barmode="group")
    return fig


__all__ = ["Request", "batching_figure", "compare_batching", "mixed_workload", "run_continuous", "run_static"]
