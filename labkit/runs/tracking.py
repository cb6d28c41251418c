"""Tracked runs: the manifest written first, budgets kept, a final status, telemetry and lineage.

Every training stage runs through one `RunTracker`, so every run folder reads the same way:

    run = RunTracker.start(cfg.output_dir, build_manifest("sft", cfg, data=[path]), force=force)
    if run.skipped:                        # this manifest already finished here: nothing runs
        return run.stored_result(loader)
    with run:                              # raises → failed (with the error); Ctrl-C → interrupted
        ...                                # run.checkpoint: the checkpoint to continue from (resume)
        with run.telemetry.phase("loop"):  # the training loop; generation/scoring/eval timed inside it
            ...                            # run.over_budget(step) → stop cleanly, keep a checkpoint
        return run.complete(result, outputs={"adapter": save_dir})   # done, or budget_exceeded

`start` writes manifest.json (once) and status.json (`running`, with this process's pid) before any
model is loaded, and records the run and its inputs in the lineage store (`default_registry`). A run
folder whose identical manifest finished `done` is a no-op unless forced; one that stopped any other
way (failed, interrupted, budget_exceeded, or killed: `running` with a dead pid) resumes from the last
checkpoint in checkpoints/. Budget ceilings apply to each attempt: resuming a budget_exceeded run
gives it the same budget again from its last checkpoint.

The final status.json holds the telemetry (`Telemetry.summary`): wall time split into the training
loop's generation, scoring, evaluation and update time, tokens generated and trained on, peak memory
and reward statistics; scores.json holds the score samples `labkit drift` compares between runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from labkit.data.io import write_text_atomic
from labkit.metrics.drift import describe
from labkit.runs.manifest import Budget, Manifest, ManifestError, RunDir, StartPlan, read_manifest

log = logging.getLogger(__name__)

SCORES = "scores.json"
MAX_SCORES = 20_000  # values kept per score name: enough for a drift test, small enough to stay a file
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SAME_MANIFEST_ONLY = contextvars.ContextVar("labkit_same_manifest_only", default=False)


@contextlib.contextmanager
def same_manifest_only() -> Iterator[None]:
    """Inside the block a run folder holding another manifest is an error (ManifestError), not moved aside:
    `labkit resume` continues *that* run or says why it cannot (the code or data changed since)."""
    token = _SAME_MANIFEST_ONLY.set(True)
    try:
        yield
    finally:
        _SAME_MANIFEST_ONLY.reset(token)


# ---- where the lineage store lives -------------------------------------------------------------------------

def default_registry(run_dir: str | os.PathLike) -> Path | None:
    """The lineage/registry SQLite file a run records itself in.

    $LABKIT_REGISTRY when set ("none" or "" turns recording off); else registry.sqlite in the nearest
    folder above the run named `runs` (runs/01_sft → runs/registry.sqlite, where `labkit runs` and
    `labkit lineage` look by default); else registry.sqlite next to the run folder.
    """
    env = os.environ.get("LABKIT_REGISTRY")
    if env is not None:
        return None if env.strip().lower() in ("", "none", "off") else Path(env)
    path = Path(run_dir).resolve()
    for parent in path.parents:
        if parent.name == "runs":
            return parent / "registry.sqlite"
    return path.parent / "registry.sqlite"


def last_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The checkpoint-N folder with the highest N in `folder` (None when there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return max(found)[1] if found else None


# ---- telemetry ---------------------------------------------------------------------------------------------

class Telemetry:
    """What one attempt of a run spent: seconds per phase, tokens, scores. Thread-safe.

    Phases: "loop" (the training loop as a whole) and, inside it, "generation" (sampling rollouts),
    "scoring" (reward functions) and "eval" (held-out evaluations); the rest of the loop is the update
    itself (forward, backward, optimizer). `summary()` turns them into the run's telemetry record.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.tokens_generated = 0
        self.tokens_trained = 0
        self.scores: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    @property
    def wall(self) -> float:
        """Seconds since this attempt started."""
        return time.perf_counter() - self.start

    @property
    def tokens(self) -> int:
        """Tokens processed so far: generated plus trained on."""
        return self.tokens_generated + self.tokens_trained

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall-clock seconds to phase `name` (exceptions included)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add_seconds(name, time.perf_counter() - t)

    def add_seconds(self, name: str, seconds: float) -> None:
        """Add seconds to a phase."""
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def add_tokens(self, *, generated: int = 0, trained: int = 0) -> None:
        """Count tokens sampled (rollouts) and tokens fed through training steps."""
        with self._lock:
            self.tokens_generated += int(generated)
            self.tokens_trained += int(trained)

    def add_scores(self, name: str, values: Iterable[float | None]) -> None:
        """Keep score values under `name` (None dropped; at most MAX_SCORES per name)."""
        kept = [float(v) for v in values if v is not None]
        with self._lock:
            bucket = self.scores.setdefault(name, [])
            bucket.extend(kept[: max(MAX_SCORES - len(bucket), 0)])

    def summary(self) -> dict[str, Any]:
        """The telemetry record: seconds (wall, loop and its parts, generation's share of the loop),
        tokens (generated, trained, total, per second of loop), peak memory, and score statistics."""
        with self._lock:
            sec = dict(self.seconds)
            scores = {k: list(v) for k, v in self.scores.items()}
        loop = sec.get("loop", 0.0)
        inner = {k: sec.get(k, 0.0) for k in ("generation", "scoring", "eval")}
        wall = self.wall
        out: dict[str, Any] = {
            "wall_seconds": wall, "loop_seconds": loop,
            **{f"{k}_seconds": v for k, v in inner.items()},
            "update_seconds": max(loop - sum(inner.values()), 0.0),
            "other_seconds": max(wall - loop, 0.0),  # loading, baseline evals, saving
            "generation_share": inner["generation"] / loop if loop else 0.0,
            "tokens_generated": self.tokens_generated, "tokens_trained": self.tokens_trained,
            "tokens": self.tokens, "tokens_per_s": self.tokens / loop if loop else 0.0,
            **peak_memory(),
            "scores": {k: describe(v) for k, v in sorted(scores.items())},
        }
        return out


def peak_memory() -> dict[str, int]:
    """This process's peak resident memory (getrusage maxrss) and, when CUDA is in use, the peak memory
    torch allocated on the current GPU since the process started (or since the last reset)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
    torch = sys.modules.get("torch")  # never imported here just to ask
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


# ---- the tracker -------------------------------------------------------------------------------------------

class RunTracker:
    """One attempt of a run in its folder: see the module docstring for the life cycle.

    Attributes:
        dir: the RunDir; manifest: the run's manifest (the stored one when resuming); plan: StartPlan.
        budget: the ceilings; telemetry: this attempt's Telemetry; checkpoint: the checkpoint folder to
        resume from (None for a fresh start); stop_reason: why a ceiling stopped the run (None if none).
    """

    def __init__(self, path: str | os.PathLike, manifest: Manifest, plan: StartPlan, *,
                 registry: str | os.PathLike | None = None):
        self.dir = RunDir(path)
        self.manifest = manifest
        self.plan = plan
        self.budget = Budget(**manifest.budget)
        self.telemetry = Telemetry()
        self.registry = Path(registry) if registry is not None else None
        self.checkpoint = last_checkpoint(self.dir.checkpoints_dir) if plan.action == "resume" else None
        self.stop_reason: str | None = None
        self.finished = False

    @classmethod
    def start(cls, path: str | os.PathLike, manifest: Manifest, *, force: bool = False,
              replace_other: bool = True, registry: str | os.PathLike | None | bool = True) -> RunTracker:
        """Start (or resume, or skip) the run of `manifest` in `path`; see RunDir.start for the decision.

        replace_other: when the folder holds a run of another manifest (a config changed, a notebook cell
            run again after an edit), move that run aside to `<folder>.replaced-<time>` and start anew,
            instead of RunDir.start's ManifestError. Nothing is deleted.
        registry: the lineage SQLite file; True (default) for `default_registry(path)`, None/False for
            none. Recording lineage never fails a run: a problem there is logged as a warning.
        """
        run = RunDir(path)
        if replace_other and not force and not _SAME_MANIFEST_ONLY.get() and run.manifest_path.is_file():
            with contextlib.suppress(ManifestError):  # an unreadable manifest: RunDir.start says so
                force = read_manifest(run.manifest_path).hash() != manifest.hash()
        plan = run.start(manifest, force=force)
        if plan.moved_to is not None:
            print(f"{manifest.stage}: {run.path} held another run; moved to {plan.moved_to}", flush=True)
        if plan.action != "skip":
            manifest = run.manifest()  # a resumed run keeps its first manifest (and run id)
        where = default_registry(path) if registry is True else (registry or None)
        tracker = cls(path, manifest, plan, registry=where)
        if plan.action == "skip":
            print(f"{manifest.stage}: this manifest already finished in {run.path}; nothing to do "
                  f"(force=True runs it again)", flush=True)
        else:
            if tracker.checkpoint is not None:
                print(f"{manifest.stage}: resuming {run.path} from {tracker.checkpoint.name}", flush=True)
            tracker.record_lineage("running")
        return tracker

    @property
    def skipped(self) -> bool:
        """The same manifest already finished here: the stage returns the stored result."""
        return self.plan.action == "skip"

    @property
    def resuming(self) -> bool:
        """Continuing from a checkpoint of an earlier attempt."""
        return self.checkpoint is not None

    @property
    def resume_from(self) -> str | None:
        """The checkpoint as a transformers Trainer's `resume_from_checkpoint` takes it (None: start)."""
        return str(self.checkpoint) if self.checkpoint is not None else None

    @property
    def run_id(self) -> str:
        """The run's id (the first attempt's, for a resumed run)."""
        return self.dir.status().get("run_id") or self.manifest.run_id

    def stored_result(self, loader: Callable[[], tuple[Any, Any]] | None = None):
        """The finished run's RunResult from result.json; `loader` loads its model on first use."""
        from labkit.runs.result import RunResult

        return RunResult.load(self.dir.path, loader=loader)

    # ---- budgets -------------------------------------------------------------------------------------------

    def over_budget(self, step: int | None = None, planned: int | None = None) -> str | None:
        """Why the run must stop now (and remember it), or None while within every ceiling.

        max_seconds counts from this attempt's start, max_tokens this attempt's tokens; max_steps is a
        ceiling only below the planned steps (`planned`): reaching the planned end is finishing.
        """
        b, t = self.budget, self.telemetry
        reason = None
        if b.max_seconds and t.wall >= b.max_seconds:
            reason = f"max_seconds: {t.wall:.1f} s ≥ {b.max_seconds:g} s"
        elif b.max_tokens and t.tokens >= b.max_tokens:
            reason = f"max_tokens: {t.tokens:,} tokens ≥ {b.max_tokens:,}"
        elif b.max_steps and step is not None and step >= b.max_steps and (planned is None or step < planned):
            reason = f"max_steps: step {step} ≥ {b.max_steps}"
        if reason is not None and self.stop_reason is None:
            self.stop_reason = reason
        return reason

    # ---- the end -------------------------------------------------------------------------------------------

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            if not self.finished:  # left without complete(): an early return is still a finished run
                self._finish("budget_exceeded" if self.stop_reason else "done")
            return False
        status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
        with contextlib.suppress(Exception):  # the original error matters more than a bookkeeping one
            self._finish(status, error=exc)
        return False

    def complete(self, result, outputs: Mapping[str, str | os.PathLike] | None = None):
        """Finish a run that ended normally: `done`, or `budget_exceeded` when a ceiling stopped it.

        Adds the telemetry (and the status) to result.metrics, saves result.json, writes scores.json and
        the final status.json, and records `outputs` ({artifact kind: path}, e.g. {"adapter": dir}) in
        the lineage store. Returns `result`.
        """
        status = "budget_exceeded" if self.stop_reason else "done"
        telemetry = self.telemetry.summary()
        result.metrics["telemetry"] = telemetry
        result.metrics["run"] = {"id": self.run_id, "status": status, "reason": self.stop_reason,
                                 "attempt": self.dir.status().get("attempt"),
                                 "resumed_from": self.checkpoint.name if self.checkpoint else None,
                                 "manifest_hash": self.manifest.hash()}
        result.save()
        self._finish(status, telemetry=telemetry, outputs=outputs)
        return result

    def _finish(self, status: str, *, error: BaseException | None = None,
                telemetry: dict[str, Any] | None = None,
                outputs: Mapping[str, str | os.PathLike] | None = None) -> None:
        self.finished = True
        telemetry = telemetry or self.telemetry.summary()
        self._write_scores()
        ckpt = last_checkpoint(self.dir.checkpoints_dir)
        record = self.dir.finish(status, error=error, reason=self.stop_reason, telemetry=telemetry,
                                 last_checkpoint=str(ckpt) if ckpt else None,
                                 outputs={k: str(v) for k, v in (outputs or {}).items()})
        self.record_lineage(status, outputs)
        t = telemetry
        line = f"{self.manifest.stage} {status}"
        if status == "budget_exceeded":
            line += f" ({self.stop_reason})"
        elif status in ("failed", "interrupted"):
            line += f" ({str(record['error'])[:200]})"
        share = (f", generation {t['generation_share']:.0%} of the training loop"
                 if t["generation_seconds"] else "")
        line += f": {t['wall_seconds']:.0f} s{share}, {t['tokens']:,} tokens; {self.dir.path}"
        print(line, flush=True)

    def _write_scores(self) -> None:
        with self.telemetry._lock:
            scores = {k: list(v) for k, v in self.telemetry.scores.items()}
        if scores:
            write_text_atomic(self.dir.path / SCORES, json.dumps(scores), replace=True)

    # ---- lineage -------------------------------------------------------------------------------------------

    def record_lineage(self, status: str, outputs: Mapping[str, str | os.PathLike] | None = None) -> None:
        """Record the run (inputs from its manifest, `outputs` as artifacts) with its status; a failure
        to record is logged, never raised."""
        if self.registry is None:
            return
        try:
            from labkit.runs.lineage import Lineage

            with Lineage(self.registry) as lin:
                ids = [lin.add_artifact(kind, path) for kind, path in (outputs or {}).items()
                       if path is not None and Path(path).exists()]
                lin.record_manifest(self.manifest, path=self.dir.path, outputs=ids, status=status)
        except Exception as exc:  # lineage is bookkeeping: never the reason a run fails
            log.warning("run %s: lineage not recorded in %s: %s", self.run_id, self.registry, exc)


# ---- reading runs back -------------------------------------------------------------------------------------

def run_scores(run: str | os.PathLike) -> dict[str, list[float]]:
    """A run folder's score samples by name: its scores.json, else its rollouts.jsonl (the total
    `reward` and each `reward/<function>`), else {}."""
    path = Path(run)
    if (path / SCORES).is_file():
        data = json.loads((path / SCORES).read_text(encoding="utf-8"))
        return {str(k): [float(x) for x in v] for k, v in data.items()}
    rollouts = path / "rollouts.jsonl"
    out: dict[str, list[float]] = {}
    if rollouts.is_file():
        for line in rollouts.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                out.setdefault("reward", []).append(float(rec["reward"]))
                for name, value in (rec.get("rewards") or {}).items():
                    if value is not None:
                        out.setdefault(f"reward/{name}", []).append(float(value))
    return out


def find_run(ref: str | os.PathLike, root: str | os.PathLike = "runs") -> RunDir:
    """A run folder by path, or by run id / folder name under `root` (ManifestError when none)."""
    from labkit.runs.manifest import find_runs

    if (Path(ref) / RunDir.MANIFEST).is_file():
        return RunDir(ref)
    found = [r for r in find_runs(root) if str(ref) in (r.path.name, r.status().get("run_id"),
                                                         _manifest_id(r))]
    if not found:
        raise ManifestError(f"no run {str(ref)!r}: not a run folder (with manifest.json), not under {root}")
    if len(found) > 1:
        raise ManifestError(f"{len(found)} runs match {str(ref)!r} under {root}: give the folder instead")
    return found[0]


def _manifest_id(run: RunDir) -> str | None:
    with contextlib.suppress(Exception):
        return read_manifest(run.manifest_path).run_id
    return None
