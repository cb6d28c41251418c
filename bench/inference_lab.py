"""Inference lab on the embedded model: speculative decoding, quantisation, train–serve agreement, batching.

One run prints four tables (labkit.infer.speculative, .quant, .agreement, .batching):

1. speculative decoding at batch 1: plain greedy vs prompt lookup vs truncated drafts of the model (its
   first k layers) vs an int8-mixed copy of it as the draft; speed-up over greedy (median of --repeats),
   acceptance (accepted / proposed draft tokens), tokens per target forward, and whether the output is
   token-identical to greedy;
2. quantisation: fp32, bf16, int8, int8-mixed, NF4 and the GGUF file: size, tokens/s (median of --repeats),
   held-out perplexity and accuracy on --mmlu real MMLU items by log-likelihood (labkit.eval.mmlu);
3. train–serve agreement: hf engine vs trainer log-probs per setting, and one prompt's batch invariance;
4. static vs continuous batching on mixed-length requests: tokens/s and p50/p95 latency (median of
   --repeats by tokens/s).

    OMP_NUM_THREADS=2 .venv/bin/python bench/inference_lab.py [--repeats 3] [--parts spec,quant,agree,batch]
"""

from __future__ import annotations

import argparse
import statistics
import time

from labkit.config import EvalConfig
from labkit.eval import mmlu
from labkit.infer import agreement, batching, quant, speculative
from labkit.models import load_model

# Chat requests; the first two copy from their prompt (where prompt lookup shines), the rest do not.
SPEC_ASKS = ("Repeat this sentence exactly: The quick brown fox jumps over the lazy dog near the river bank.",
             "Fix the spelling and repeat the text: Teh cat sat on teh mat and lookd out of teh window.",
             "List the numbers from 1 to 20, separated by commas.",
             "Write a Python function that returns the square of a number.")
AGREE_ASKS = ("What is the capital of France?", "Write a haiku about rain.",
              "Explain gravity in one sentence.", "List three fruits.", "What does a thermometer measure?",
              "Give me a synonym for happy.")


def table(rows: list[dict], title: str) -> None:
    """Print rows as an aligned text table."""
    print(f"\n== {title}")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), flush=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4g}"
    return "" if v is None else str(v)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def chat(tok, asks) -> list[str]:
    return [tok.apply_chat_template([{"role": "user", "content": a}], add_generation_prompt=True,
                                    tokenize=False) for a in asks]


def part_spec(model, tok, args) -> None:
    drafts = {}
    if args.int8_draft:
        drafts["int8-mixed copy"] = quant.int8_dynamic(model, keep_float=quant.outlier_linears(model, tok))
    rows = speculative.compare_speculative(
        model, tok, chat(tok, SPEC_ASKS), max_new_tokens=args.spec_tokens, lookup_tokens=10,
        draft_layers=args.draft_layers, drafts=drafts, draft_tokens=4, repeats=args.repeats)
    table(rows, f"speculative decoding, batch 1, fp32, up to {args.spec_tokens} new tokens, "
                f"median of {args.repeats}")
    for r in rows[1:]:
        print(f"ratio {r['method']} / greedy: {r['speedup']:.2f}x (acceptance {r['acceptance']})")


def part_quant(args) -> None:
    rows = mmlu.load(EvalConfig(source="real", limit=args.mmlu, seed=0))

    def accuracy(model, tok) -> float:
        scored = mmlu.score_logprobs(rows, mmlu.letter_logprobs(model, tok, rows))
        return statistics.fmean(s.score for s in scored)

    out = quant.quant_table(max_new_tokens=args.quant_tokens, repeats=args.repeats, accuracy=accuracy)
    notes = {r["variant"]: r.pop("note") for r in out}
    table(out, f"quantisation: greedy tokens/s at batch 1 ({args.quant_tokens} tokens x "
               f"{len(quant.SPEED_PROMPTS)} prompts), perplexity on {len(quant.heldout_rows())} held-out "
               f"replies, MMLU accuracy (loglik) on {len(rows)} real items")
    for variant, note in notes.items():
        if note:
            print(f"  {variant}: {note}")
    fp32 = next(r for r in out if r["variant"] == "fp32")
    for r in out:
        if r["tokens_per_s"] and r["variant"] != "fp32":
            print(f"ratio {r['variant']} / fp32 tokens/s: {r['tokens_per_s'] / fp32['tokens_per_s']:.2f}x, "
                  f"size {r['size_mb'] / fp32['size_mb']:.2f}x")


def part_agree(model, tok, args) -> None:
    prompts = chat(tok, AGREE_ASKS)
    rows = agreement.agreement_sweep(model, tok, prompts)
    table(rows, "train–serve agreement: sampled rollouts (T=1, 32 tokens), engine vs trainer log-probs, "
                "eps=0.2")
    for dtype in ("float32", "bfloat16"):
        m = model if dtype == "float32" else load_model(dtype=dtype, device="cpu")[0]
        inv = agreement.batch_invariance(m, tok, prompts[0], prompts[1:] + chat(tok, SPEC_ASKS),
                                         sizes=args.batch_sizes, max_new_tokens=24)
        table(inv, f"batch invariance, {dtype}, greedy 24 tokens: prompt 0 alone vs in a batch")


def part_batch(model, tok, args) -> None:
    work = batching.mixed_workload(tok, args.requests, short=(4, 16), long=(32, 64), long_share=0.25)
    rows = batching.compare_batching(model, tok, work, batch_size=args.batch, repeats=args.repeats)
    budgets = [r.max_new_tokens for r in work]
    table(rows, f"batching: {len(work)} requests, prompts {min(len(r.prompt_ids) for r in work)}-"
                f"{max(len(r.prompt_ids) for r in work)} tokens, budgets {min(budgets)}-{max(budgets)}, "
                f"batch {args.batch}, median of {args.repeats}")
    print(f"ratio continuous / static tokens/s: {rows[1]['vs_static']:.2f}x; "
          f"p95 latency static / continuous: {rows[0]['p95_latency_s'] / rows[1]['p95_latency_s']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="spec,quant,agree,batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spec-tokens", type=int, default=48)
    ap.add_argument("--draft-layers", type=_ints, default=(4, 10), help="truncated drafts to try")
    ap.add_argument("--no-int8-draft", dest="int8_draft", action="store_false",
                    help="skip the int8-mixed copy of the model as a draft")
    ap.add_argument("--quant-tokens", type=int, default=16)
    ap.add_argument("--mmlu", type=int, default=40, help="real MMLU items for the accuracy column")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batch-sizes", type=_ints,
                    default=(1, 2, 8, 32), help="batch sizes for the batch-invariance table")
    args = ap.parse_args()
    parts = args.parts.split(",")
    model, tok = load_model(dtype="float32", device="cpu")
    t0 = time.perf_counter()
    for name in parts:
        start = time.perf_counter()
        if name == "spec":
            part_spec(model, tok, args)
        elif name == "quant":
            part_quant(args)
        elif name == "agree":
            part_agree(model, tok, args)
        elif name == "batch":
            part_batch(model, tok, args)
        else:
            raise SystemExit(f"unknown part {name!r}")
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
