"""Run manifests and run directories: what a run was started from, written once before it starts.

A manifest records everything a run's result depends on: stage, flat config and preset, the base
model's content hash (or hub id and revision), data files and their hashes, reward functions and a
hash of their source, seeds, library versions, the git commit and dirty flag, the machine's
capabilities and the budget ceilings. `Manifest.hash()` is its identity: two manifests with the same
hash describe the same computation, so a finished one need not run again.

    manifest = build_manifest("sft", cfg, preset="cpu-smoke", data=["data_samples/sft_format.jsonl"])
    run = RunDir(cfg.output_dir)
    plan = run.start(manifest)        # writes manifest.json (read-only) and status.json = running
    if plan.action == "skip":         # the same manifest already finished: nothing to do
        return
    ...                               # train, log to run.metrics_path, checkpoints in run.checkpoints_dir
    run.finish("done")                # or run.finish("failed", error=exc), "budget_exceeded", "interrupted"

A run directory holds manifest.json, metrics.jsonl, checkpoints/, eval_card.json and status.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata as md
import inspect
import json
import os
import platform
import secrets
import subprocess
import threading
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from labkit.data.io import write_text_atomic
from labkit.errors import LabkitError

MANIFEST_VERSION = 1
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
STATUSES = ("running", "done", "failed", "budget_exceeded", "interrupted")
FINAL_STATUSES = STATUSES[1:]
# Fields that say when and where a run was made rather than what it computes: a manifest built again
# from the same inputs on another day, or on a machine that reports its threads differently, is the
# same manifest. `machine` is recorded so a surprising result can be explained, not to tell runs apart.
IDENTITY_EXCLUDES = ("run_id", "created", "machine", "preset")
# Config fields that say where a run lives or how it was started, not what it computes: the same run in
# another folder, or continued with `resume=True`, is the same computation. (`preset` above is a label:
# the config it filled in is what counts.)
CONFIG_IDENTITY_EXCLUDES = ("output_dir", "resume")
_CHUNK = 1 << 20


class ManifestError(LabkitError):
    """A manifest cannot be written or read, or a run directory holds a different run."""


# ---- content hashes ----------------------------------------------------------------------------------------

class HashCache:
    """sha256 of files, remembered by (absolute path, mtime_ns, size) in a small JSON file.

    Hashing a multi-gigabyte model on every run start would cost minutes; a file whose path, size
    and modification time are unchanged is taken to have the same content, as build tools do.
    `path=None` keeps the cache in memory only.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, list] = {}
        self._dirty = False
        if self.path is not None and self.path.is_file():
            with contextlib.suppress(OSError, ValueError):  # a corrupt cache is only a slower start
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    self._entries = data

    def file_hash(self, path: str | os.PathLike) -> str:
        """The sha256 hex digest of one file, from the cache when its path, mtime and size match."""
        p = Path(path).resolve()
        st = p.stat()
        key = str(p)
        with self._lock:
            hit = self._entries.get(key)
        if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            return hit[2]
        digest = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._entries[key] = [st.st_mtime_ns, st.st_size, value]
            self._dirty = True
        return value

    def save(self) -> None:
        """Write the cache file (atomically) if anything was added; a failure to write is ignored."""
        if self.path is None or not self._dirty:
            return
        with self._lock:  # files deleted since (old runs, temp folders) would only make the cache grow
            self._entries = {k: v for k, v in self._entries.items() if os.path.exists(k)}
            text = json.dumps(self._entries)
        with contextlib.suppress(OSError):
            write_text_atomic(self.path, text, replace=True)
            self._dirty = False


@functools.lru_cache(maxsize=1)
def default_hash_cache() -> HashCache:
    """The process-wide hash cache, kept in labkit's cache folder (models.cache_root)."""
    from labkit.models.loading import cache_root

    return HashCache(cache_root() / "hashes.json")


def content_hash(path: str | os.PathLike, cache: HashCache | None = None) -> str:
    """sha256 of a file, or of a directory's files (relative path and hash of each, sorted).

    Dot-files and dot-folders are skipped: download tools keep changing metadata there
    (`.cache/huggingface`) while the weights stay the same.
    """
    cache = cache or default_hash_cache()
    p = Path(path)
    if p.is_file():
        value = cache.file_hash(p)
    elif p.is_dir():
        digest = hashlib.sha256()
        for rel in _dir_files(p):
            digest.update(f"{rel}\0{cache.file_hash(p / rel)}\n".encode())
        value = digest.hexdigest()
    else:
        raise ManifestError(f"{path}: no such file or directory to hash")
    cache.save()
    return value


def _dir_files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


# ---- what a manifest records -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Budget:
    """Ceilings a run stops at, cleanly, with status `budget_exceeded` (0 = no ceiling)."""

    max_steps: int = 0
    max_seconds: float = 0.0
    max_tokens: int = 0   # tokens processed: sampled in rollouts plus fed through training steps

    def to_dict(self) -> dict[str, Any]:
        """The ceilings as a plain dict."""
        return dataclasses.asdict(self)


def model_record(name: str, *, revision: str | None = None, cache: HashCache | None = None) -> dict:
    """What a manifest records about a base model: a local dir or GGUF file with its content hash,
    the embedded model with its GGUF file's hash, or a hub id with its revision.

    The revision of a hub id is `revision` when given, else the commit the local HF cache resolves
    `main` to (read from disk, no network), else None.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        return {"name": name, "kind": "dir", "path": str(local.resolve()),
                "hash": content_hash(local, cache)}
    if local.is_file():
        return {"name": name, "kind": "gguf" if local.suffix == ".gguf" else "file",
                "path": str(local.resolve()), "hash": content_hash(local, cache)}
    if "/" in name:  # "org/model": a hub id (checked first: importing the loader costs seconds)
        return {"name": name, "kind": "hub", "id": name, "revision": revision or _hub_cache_revision(name)}
    from labkit.models import loading

    if name.lower() in loading._EMBEDDED_ALIASES:  # one alias list, kept by loading
        gguf = loading.embedded_gguf_path()
        return {"name": name, "kind": "embedded", "path": str(gguf), "hash": content_hash(gguf, cache)}
    return {"name": name, "kind": "hub", "id": name, "revision": revision or _hub_cache_revision(name)}


def _hub_cache_revision(repo_id: str) -> str | None:
    """The commit `main` points to in the local Hugging Face cache, if the model was downloaded."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    ref = Path(hub) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def data_record(source: str | os.PathLike, cache: HashCache | None = None) -> dict:
    """A data file (or folder) with its content hash; a name that is no path (a data_samples name,
    a hub dataset) is recorded by name with hash None."""
    p = Path(source)
    if p.exists():
        return {"path": str(p.resolve()), "hash": content_hash(p, cache),
                "bytes": p.stat().st_size if p.is_file() else None}
    return {"path": str(source), "hash": None, "bytes": None}


def reward_record(fn: Any) -> dict:
    """A reward function's name and a sha256 of its source (inspect.getsource), plus its repr, which
    holds the parameters of configured rewards such as length_reward(max_tokens=48).

    A name (str) is looked up in labkit.rewards.REWARDS. When the source cannot be read (a builtin, a
    function typed into a REPL) the hash is None and `source` says why.
    """
    if isinstance(fn, str):
        from labkit.rewards.verifiable import get_rewards

        fn = get_rewards([fn])[0]
    inner = fn
    while hasattr(inner, "func") and hasattr(inner, "keywords"):  # functools.partial
        inner = inner.func
    name = getattr(inner, "__name__", type(inner).__name__)
    target = inner if inspect.isfunction(inner) or inspect.ismethod(inner) else type(inner)
    try:
        source = inspect.getsource(target)
        src_hash, why = hashlib.sha256(source.encode()).hexdigest(), "inspect.getsource"
    except (OSError, TypeError) as exc:
        src_hash, why = None, f"source unavailable: {type(exc).__name__}"
    return {"name": name, "qualname": f"{getattr(target, '__module__', '?')}."
            f"{getattr(target, '__qualname__', name)}", "source_hash": src_hash, "source": why,
            "repr": repr(fn)[:200]}


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions (importlib.metadata, nothing imported) of the libraries a run depends on,
    plus python and labkit."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("labkit", *names):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """{"commit", "dirty"} of the git checkout holding `path` (default: labkit's own source);
    both None when there is no git or no checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=20, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=1)
def machine_record() -> dict[str, Any]:
    """The capability report (labkit.models.capabilities) as data, probed once per process:
    probing takes about a second and a machine does not change under a running process."""
    from labkit.models.capabilities import capability_report

    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "capabilities": capability_report().to_dict()}


# ---- the manifest ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything a run was started from. Build one with `build_manifest`; `hash()` is its identity."""

    stage: str
    config: dict[str, Any]
    preset: str = ""
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rewards: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seeds: dict[str, int] = dataclasses.field(default_factory=dict)
    versions: dict[str, str | None] = dataclasses.field(default_factory=dict)
    git: dict[str, Any] = dataclasses.field(default_factory=dict)
    machine: dict[str, Any] = dataclasses.field(default_factory=dict)
    budget: dict[str, Any] = dataclasses.field(default_factory=lambda: Budget().to_dict())
    run_id: str = ""
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, tagged with `kind` and `version` so `from_dict` can recognise it."""
        return {"kind": "labkit.run_manifest", "version": MANIFEST_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """A manifest from `to_dict`'s data; ManifestError when it is not one."""
        if not isinstance(data, Mapping) or data.get("kind") != "labkit.run_manifest":
            raise ManifestError("not a labkit run manifest (written by RunDir.start / write_manifest)")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def hash(self) -> str:
        """sha256 of the canonical JSON of every field but IDENTITY_EXCLUDES (when and where) and the
        config's CONFIG_IDENTITY_EXCLUDES (its folder, whether it was resumed)."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in IDENTITY_EXCLUDES}
        data["config"] = {k: v for k, v in data["config"].items() if k not in CONFIG_IDENTITY_EXCLUDES}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def build_manifest(stage: str, config: Any, *, preset: str = "", model: str | None = None,
                   revision: str | None = None, data: Iterable[str | os.PathLike] = (),
                   rewards: Iterable[Any] = (), seeds: Mapping[str, int] | None = None,
                   budget: Budget | None = None, machine: Mapping[str, Any] | None = None,
                   git: Mapping[str, Any] | None = None, cache: HashCache | None = None) -> Manifest:
    """Gather a run's manifest before it starts.

    Args:
        stage: "sft", "dpo", "grpo"…; config: the stage's Config (or its flat dict); preset: its name.
        model: the base model (default: config["model"]); revision: a hub id's revision.
        data: data files (or folders) the run reads; rewards: reward callables or labkit reward names.
        seeds: named seeds (default: every config field whose name contains "seed").
        budget: ceilings (default: max_steps, max_seconds and max_tokens from the config).
        machine, git: pass to skip probing (tests, or a caller that already has them).
        cache: the HashCache (default: one in labkit's cache folder).
    """
    cfg = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    seeds = dict(seeds) if seeds is not None else {k: v for k, v in cfg.items() if "seed" in k}
    if budget is None:
        budget = Budget(max_steps=int(cfg.get("max_steps", 0) or 0),
                        max_seconds=float(cfg.get("max_seconds", 0) or 0),
                        max_tokens=int(cfg.get("max_tokens", 0) or 0))
    model_name = model if model is not None else cfg.get("model")
    now = datetime.now().astimezone()
    return Manifest(
        stage=stage, config=cfg, preset=preset,
        model=model_record(str(model_name), revision=revision, cache=cache) if model_name else {},
        data=[data_record(d, cache) for d in data], rewards=[reward_record(r) for r in rewards],
        seeds=seeds, versions=library_versions(),
        git=dict(git) if git is not None else git_state(),
        machine=dict(machine) if machine is not None else machine_record(),
        budget=budget.to_dict(), run_id=f"{stage}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}",
        created=now.isoformat(timespec="seconds"))


# ---- writing once ------------------------------------------------------------------------------------------

def write_manifest(path: str | os.PathLike, manifest: Manifest) -> Path:
    """Write manifest.json once: atomically, read-only, and never over an existing file
    (ManifestError)."""
    path = Path(path)
    try:
        write_text_atomic(path, json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False, default=str),
                      replace=False, mode=0o444)
    except FileExistsError:
        raise ManifestError(f"{path} exists: a manifest is written once and never changed") from None
    return path


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest in a manifest.json (or a run directory holding one)."""
    p = Path(path)
    p = p / RunDir.MANIFEST if p.is_dir() else p
    try:
        return Manifest.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{p}: cannot read a manifest: {exc}") from exc


# ---- run directories ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StartPlan:
    """What `RunDir.start` did, and why.

    action: "new" (first start), "skip" (this manifest already finished: a no-op), "resume" (the same
    manifest started before and did not finish), "rerun" (forced: the old run moved to `moved_to`).
    """

    action: str
    reason: str
    moved_to: Path | None = None


def plan_start(run_dir: str | os.PathLike, manifest: Manifest, *, force: bool = False) -> StartPlan:
    """Decide what starting `manifest` in `run_dir` means, without changing anything.

    The same manifest (same hash) that finished `done` is a no-op unless forced; one that stopped
    any other way resumes. A different manifest in the same folder is an error unless forced: the
    folder holds another run's files.
    """
    run = RunDir(run_dir)
    if not run.manifest_path.exists():
        return StartPlan("new", f"no manifest in {run.path}")
    old = read_manifest(run.manifest_path)
    record = run.status()
    status = record.get("status")
    if status == "running" and _alive_elsewhere(record):
        raise ManifestError(f"{run.path} is being run by process {record['pid']} on this machine: wait for "
                            f"it, or stop it first")
    if old.hash() != manifest.hash():
        if force:
            return StartPlan("rerun", "forced: a different manifest replaces the old run")
        raise ManifestError(f"{run.path} holds another run (manifest {old.hash()[:12]}, this one "
                            f"{manifest.hash()[:12]}): use another output folder, or force=True to "
                            f"move the old run aside")
    if status == "done":
        if force:
            return StartPlan("rerun", "forced: this manifest finished, and runs again")
        return StartPlan("skip", f"this manifest already finished in {run.path} (force=True runs it again)")
    return StartPlan("resume", f"this manifest started before and stopped with status {status!r}")


def _alive_elsewhere(record: Mapping[str, Any]) -> bool:
    """Whether the status names another live process on this host (a run killed with SIGKILL leaves
    `running` behind with a dead pid: that one may be resumed)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or record.get("host") != platform.node():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


class RunDir:
    """A run's folder: manifest.json, metrics.jsonl, checkpoints/, eval_card.json and status.json.

    The API a stage calls: `start(manifest)` before any work, `finish(status, error=None)` at the end
    (every status write is atomic, so a reader never sees half a file).

    Example:
        run = RunDir("runs/sft")
        if run.start(manifest).action != "skip":
            ...
            run.finish("done")
    """

    MANIFEST = "manifest.json"
    METRICS = "metrics.jsonl"
    CHECKPOINTS = "checkpoints"
    EVAL_CARD = "eval_card.json"
    STATUS = "status.json"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    manifest_path = property(lambda self: self.path / self.MANIFEST, doc="manifest.json")
    metrics_path = property(lambda self: self.path / self.METRICS, doc="metrics.jsonl")
    checkpoints_dir = property(lambda self: self.path / self.CHECKPOINTS, doc="checkpoints/")
    eval_card_path = property(lambda self: self.path / self.EVAL_CARD, doc="eval_card.json")
    status_path = property(lambda self: self.path / self.STATUS, doc="status.json")

    def manifest(self) -> Manifest:
        """The run's manifest."""
        return read_manifest(self.manifest_path)

    def status(self) -> dict[str, Any]:
        """status.json as a dict ({} when the run never started)."""
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{self.status_path}: unreadable status: {exc}") from exc

    def start(self, manifest: Manifest, *, force: bool = False) -> StartPlan:
        """Write the manifest and status `running`, as `plan_start` decides; "skip" changes nothing.

        A forced rerun first renames the old folder to `<name>.replaced-<time>`: the old manifest is
        moved, never edited.
        """
        plan = plan_start(self.path, manifest, force=force)
        if plan.action == "skip":
            return plan
        if plan.action == "rerun":
            moved = self.path.with_name(f"{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
                                        f"-{secrets.token_hex(2)}")
            self.path.rename(moved)
            plan = dataclasses.replace(plan, moved_to=moved)
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)
        previous = self.status()
        if plan.action != "resume":
            write_manifest(self.manifest_path, manifest)
        self._write_status({"status": "running", "error": None, "run_id": manifest.run_id
                            if plan.action != "resume" else previous.get("run_id", manifest.run_id),
                            "manifest_hash": manifest.hash(), "attempt": int(previous.get("attempt", 0)) + 1,
                            "started": _now(), "finished": None, "pid": os.getpid(), "host": platform.node()})
        return plan

    def finish(self, status: str, error: BaseException | str | None = None, **extra: Any) -> dict[str, Any]:
        """Record the final status: done, failed (with the error), budget_exceeded or interrupted.

        An exception is stored as its type and message plus the traceback; `extra` adds fields
        (e.g. last_checkpoint=…, steps=…).
        """
        if status not in FINAL_STATUSES:
            raise ManifestError(f"final status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        record = self.status()
        if not record:
            raise ManifestError(f"{self.path}: finish() before start()")
        text, tb = error, None
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
            tb = "".join(traceback.format_exception(error))
        record.update({"status": status, "error": text, "traceback": tb, "finished": _now(), **extra})
        self._write_status(record)
        return record

    def _write_status(self, record: dict[str, Any]) -> None:
        write_text_atomic(self.status_path, json.dumps(record, indent=1, default=str), replace=True)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def find_runs(root: str | os.PathLike, max_depth: int = 3) -> list[RunDir]:
    """Run directories (folders holding manifest.json) under `root`, at most `max_depth` deep, sorted."""
    root = Path(root)
    found: list[RunDir] = []

    def walk(p: Path, depth: int) -> None:
        if (p / RunDir.MANIFEST).is_file():
            found.append(RunDir(p))
            return
        if depth >= max_depth:
            return
        with contextlib.suppress(OSError):
            for child in sorted(p.iterdir()):
                if child.is_dir() and not child.name.startswith("."):
                    walk(child, depth + 1)

    if root.is_dir():
        walk(root, 0)
    return found

