"""RL time-to-accuracy: held-out accuracy against wall-clock for GRPO on the embedded model, on this CPU.

Two runs of labkit.stages.grpo on the arithmetic prompts, same model, seed, steps, group size and prompts
per step, one after the other in this process:

- labkit: the `cpu` preset (its rewards, loss type, temperature, completion length and learning rate);
- baseline: the same stage with TRL's GRPO defaults for what the preset changes (loss_type dapo,
  temperature 1.0, the correctness reward alone, no KL term, learning rate 1e-5 as in TRL's docs for full
  fine-tuning raised to 1e-4 for LoRA, completion length as the preset).

Held-out greedy accuracy is measured every --eval-every steps; the clock excludes those evals. Writes
<out>/rl_time_to_accuracy.csv (method, step, seconds, wall_seconds, accuracy) and .html (the curves), then
prints, last, each run's final accuracy and the ratio of the seconds each took to first reach the target
(baseline accuracy + 10 points, or --target).

    .venv/bin/python bench/rl_time_to_accuracy.py [--steps 60] [--eval-every 10] [--only labkit]
"""

from __future__ import annotations

import argparse
import csv
import gc
import pathlib
import tempfile

from labkit.config import RLConfig
from labkit.dash.rl import accuracy_vs_time
from labkit.stages import grpo

BASELINE = {"loss_type": "dapo", "temperature": 1.0, "rewards": "correctness", "reward_weights": "",
            "beta": 0.0,
            "learning_rate": 1e-4, "preflight": False}


def run(name: str, cfg: RLConfig) -> list[dict]:
    result = grpo.train(cfg)
    curve = [{"method": name, **{k: p[k] for k in ("step", "seconds", "wall_seconds", "accuracy")}}
             for p in result.metrics["curve"]]
    del result
    gc.collect()
    return curve


def first_reaching(curve: list[dict], target: float) -> float | None:
    return next((p["seconds"] for p in curve if p["accuracy"] >= target), None)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the cpu preset's)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--target", type=float, default=None, help="accuracy to time (default: start + 0.10)")
    ap.add_argument("--only", choices=("labkit", "baseline"), default=None)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labkit_cfg = RLConfig.from_preset("cpu", eval_every=args.eval_every)
    if args.steps:
        labkit_cfg = labkit_cfg.replace(max_steps=args.steps)
    configs = {"labkit": labkit_cfg, "baseline": labkit_cfg.replace(**BASELINE)}
    curves: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in configs.items():
            if args.only and name != args.only:
                continue
            print(f"[bench] {name}: {cfg.max_steps} steps", flush=True)
            curves[name] = run(name, cfg.replace(output_dir=f"{tmp}/{name}"))

    rows = [p for c in curves.values() for p in c]
    with (out / "rl_time_to_accuracy.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["method", "step", "seconds", "wall_seconds", "accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    accuracy_vs_time(rows).write_html(out / "rl_time_to_accuracy.html", include_plotlyjs="cdn")

    start = min(c[0]["accuracy"] for c in curves.values())
    target = args.target if args.target is not None else start + 0.10
    print(f"\nwrote {out / 'rl_time_to_accuracy.csv'} and .html; target accuracy {target:.0%}")
    reach = {}
    for name, curve in curves.items():
        reach[name] = first_reaching(curve, target)
        t = f"{reach[name]:.0f} s" if reach[name] is not None else "not reached"
        print(f"{name:>9}: accuracy {curve[0]['accuracy']:.0%} → {curve[-1]['accuracy']:.0%} in "
              f"{curve[-1]['seconds']:.0f} s of training; target reached at {t}")
    if len(curves) == 2 and reach["labkit"] and reach["baseline"]:
        print(f"time-to-target ratio baseline / labkit: {reach['baseline'] / reach['labkit']:.2f}x")
    elif len(curves) == 2 and reach["labkit"]:
        # The baseline never got there: its whole run is a lower bound on its time to target.
        print("time-to-target ratio baseline / labkit: > "
              f"{curves['baseline'][-1]['seconds'] / reach['labkit']:.2f}x (the baseline did not reach the "
              "target within its steps)")
    elif len(curves) == 2:
        print("time-to-target ratio: n/a (labkit did not reach the target within its steps)")


if __name__ == "__main__":
    main()
