"""Eval card time: how long the embedded model's card takes on this machine, per task,
against the 5-minute budget.

The baseline is the budget itself (issue 6: every task at smoke sizes in under 5 minutes on a CPU). Each
repeat builds a whole card; the script prints per-task medians, then the median total and its ratio to the
budget last.

    .venv/bin/python bench/eval_card.py [--preset cpu-smoke] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from labkit.config import EvalConfig
from labkit.eval.card import evaluate, load_for_eval

BUDGET_S = 300.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-smoke")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    cfg = EvalConfig.from_preset(args.preset)
    start = time.perf_counter()
    model, tok = load_for_eval(cfg)
    load_s = time.perf_counter() - start
    totals, per_task = [], {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        card = evaluate(model, cfg=cfg, tokenizer=tok, progress=False)
        totals.append(time.perf_counter() - start + load_s)  # a user's card includes loading the model
        for task, s in card.meta["seconds"].items():
            per_task.setdefault(task, []).append(s)
    print(f"preset {args.preset}: {card.meta['rows']} rows; model load {load_s:.1f} s")
    for task, values in per_task.items():
        print(f"{task:>10}: median {statistics.median(values):6.1f} s")
    total = statistics.median(totals)
    print(f"card total (median of {args.repeats}, load included): {total:.1f} s; budget {BUDGET_S:.0f} s; "
          f"ratio total / budget: {total / BUDGET_S:.2f}")


if __name__ == "__main__":
    main()
