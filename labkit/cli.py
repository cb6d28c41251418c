"""The `labkit` command: tour, capabilities, notebooks and sample data."""

from __future__ import annotations

import argparse
import sys

from labkit.errors import LabkitError


def _tour(args: argparse.Namespace) -> int:
    from labkit.config import TourConfig
    from labkit.tour import run_tour

    cfg = TourConfig(preset=args.preset, model=args.model, out_dir=args.out,
                     notebook_preset=args.notebook_preset, run_notebooks=not args.no_notebooks)
    path = run_tour(cfg)
    print(f"report: {path.resolve()}")
    return 0


def _caps(args: argparse.Namespace) -> int:
    from labkit.models import capability_report

    print(capability_report())
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    from labkit.runs.notebooks import list_notebooks, run_notebook

    books = [nb for nb in list_notebooks() if not args.names or any(n in nb.name for n in args.names)]
    if not books:
        raise LabkitError(f"no notebook matches {args.names}; have: {[nb.name for nb in list_notebooks()]}")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("tour", help="run the post-training chain headless and write an HTML report")
    t.add_argument("--preset", default="cpu-tour", help="size dial: cpu-tour (about 20 min) | cpu-smoke | cpu | gpu-qlora")
    t.add_argument("--model", default="smollm2-135m-instruct", help="embedded default, local dir or hub id")
    t.add_argument("--out", default="reports", help="reports folder")
    t.add_argument("--notebook-preset", default="cpu-smoke", help="preset the notebooks run in")
    t.add_argument("--no-notebooks", action="store_true", help="skip executing the notebooks")
    t.set_defaults(func=_tour)

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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabkitError as exc:  # a message for a person, not a traceback
        print(f"labkit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
