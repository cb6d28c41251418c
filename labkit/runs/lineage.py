"""Lineage: which runs made which artifacts from which inputs, kept in SQLite (stdlib sqlite3, WAL).

Three tables: `runs`, `artifacts` (models, datasets, adapters, merged models, eval cards: id, kind,
path, content hash, created) and `edges` (artifact → run as an input, run → artifact as an output).
`lineage(artifact)` walks the edges back to the base model and the data, and renders as text for
`labkit lineage ARTIFACT` or as plain nodes and edges a notebook can draw.

    with Lineage("runs/registry.sqlite") as lin:
        data = lin.add_artifact("dataset", "data_samples/sft_format.jsonl")
        base = lin.add_artifact("model", "path/to/base-model")
        adapter = lin.add_artifact("adapter", "runs/sft/adapter")
        lin.record_run("sft-20260101-120000-ab12", inputs=[base, data], outputs=[adapter], stage="sft")
        print(lin.lineage(adapter).to_text())
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.runs.manifest import HashCache, Manifest, content_hash

KINDS = ("model", "dataset", "adapter", "merged_model", "eval_card", "checkpoint", "other")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    stage TEXT NOT NULL DEFAULT '',
    path TEXT,
    manifest_hash TEXT,
    status TEXT,
    created TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT,
    hash TEXT,
    created TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS edges (
    run_id TEXT NOT NULL REFERENCES runs(id),
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    direction TEXT NOT NULL CHECK (direction IN ('input', 'output')),
    PRIMARY KEY (run_id, artifact_id, direction)
);
CREATE INDEX IF NOT EXISTS edges_by_artifact ON edges (artifact_id, direction);
"""


class LineageError(LabkitError):
    """An unknown artifact or run, or an artifact id reused for different content."""


def now() -> str:
    """The local time as ISO 8601 with the offset, to the second: the stores' timestamp format."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def connect(path: str | os.PathLike, *, create: bool = True) -> sqlite3.Connection:
    """An SQLite connection for the lineage store: WAL journal, foreign keys on, rows as sqlite3.Row.

    Autocommit mode (isolation_level=None): writes happen inside explicit `BEGIN IMMEDIATE`
    transactions, so a read-check-write sequence holds the write lock from its first read.
    """
    path = Path(path)
    if not create and not path.is_file():
        raise LineageError(f"no registry at {path} (it is created by the first register or record_run)")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception: all of a change, or none of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclasses.dataclass
class LineageGraph:
    """An artifact's ancestry: `nodes` (id → its row, with `type` "artifact" or "run") and `edges`
    (source, target, direction), all plain data a notebook can draw with any graph library."""

    root: str
    nodes: dict[str, dict[str, Any]]
    edges: list[dict[str, str]]

    def sources(self) -> list[str]:
        """The artifacts no recorded run produced: base models and data, where the chain begins."""
        produced = {e["target"] for e in self.edges if e["direction"] == "output"}
        return [n for n, v in self.nodes.items() if v["type"] == "artifact" and n not in produced]

    def to_dict(self) -> dict[str, Any]:
        """{"root", "nodes": [...], "edges": [...]} for JSON."""
        return {"root": self.root, "nodes": list(self.nodes.values()), "edges": self.edges}

    def to_text(self) -> str:
        """A tree from the artifact back to its sources; a node met a second time is marked (above)."""
        parents: dict[str, list[str]] = {}
        for e in self.edges:
            parents.setdefault(e["target"], []).append(e["source"])
        lines: list[str] = []
        seen: set[str] = set()

        def visit(node: str, prefix: str, last: bool, top: bool) -> None:
            branch = "" if top else ("└─ " if last else "├─ ")
            again = node in seen
            lines.append(prefix + branch + _label(self.nodes[node]) + ("  (above)" if again else ""))
            seen.add(node)
            if again:
                return
            kids = sorted(parents.get(node, []))
            child_prefix = prefix + ("" if top else ("   " if last else "│  "))
            for i, kid in enumerate(kids):
                visit(kid, child_prefix, i == len(kids) - 1, False)

        visit(self.root, "", True, True)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _label(node: dict[str, Any]) -> str:
    if node["type"] == "run":
        extra = ", ".join(x for x in (node.get("stage"), node.get("status")) if x)
        return f"run {node['id']}" + (f" ({extra})" if extra else "")
    where = node.get("path") or node["meta"].get("path") or ""
    kind = "" if node["id"].startswith(node["kind"] + ":") else f" ({node['kind']})"
    return f"{node['id']}{kind}" + (f"  {where}" if where else "")


class Lineage:
    """The lineage store in one SQLite file. Use as a context manager, or call close().

    Args:
        path: the SQLite file (created with its tables unless create=False).
        create: False to fail with LineageError when the file does not exist (read-only commands).
        cache: the HashCache for content hashes of artifact paths.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, cache: HashCache | None = None):
        self.path = Path(path)
        self.cache = cache
        self.conn = connect(self.path, create=create)
        self._create_schema()

    def _create_schema(self) -> None:
        with transaction(self.conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            if self.conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Lineage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- writing -------------------------------------------------------------------------------------------

    def add_artifact(self, kind: str, path: str | os.PathLike | None = None, *, id: str | None = None,
                     hash: str | None = None, meta: Mapping[str, Any] | None = None) -> str:
        """Record an artifact and return its id; adding the same id with the same content is a no-op.

        Args:
            kind: one of KINDS. path: where it lives (hashed when `hash` is not given).
            id: defaults to "<kind>:<first 12 hex of the hash>", so the same content gets the same id.
            hash: its content hash, when already known (or for things without a local path).
            meta: free JSON-ready details (a hub id and revision, a name…).
        """
        if hash is None and path is not None:  # hashed before the write lock: a big model takes a while
            hash = content_hash(path, self.cache)
        with transaction(self.conn):
            return self._add_artifact(kind, path, id=id, hash=hash, meta=meta)

    def _add_artifact(self, kind: str, path: str | os.PathLike | None, *, id: str | None,
                      hash: str | None, meta: Mapping[str, Any] | None) -> str:
        if kind not in KINDS:
            raise LineageError(f"unknown artifact kind {kind!r}; known kinds: {', '.join(KINDS)}")
        where = str(Path(path).resolve()) if path is not None else None
        if id is None:
            if hash is None:
                raise LineageError("an artifact needs an id, a path or a hash")
            id = f"{kind}:{hash[:12]}"
        old = self.conn.execute("SELECT kind, hash FROM artifacts WHERE id = ?", (id,)).fetchone()
        if old is not None:
            if (old["kind"], old["hash"]) != (kind, hash):
                raise LineageError(f"artifact {id!r} exists as a {old['kind']} with hash "
                                   f"{str(old['hash'])[:12]}; this one is a {kind} with hash "
                                   f"{str(hash)[:12]}")
            return id
        self.conn.execute("INSERT INTO artifacts (id, kind, path, hash, created, meta) "
                          "VALUES (?, ?, ?, ?, ?, ?)",
                          (id, kind, where, hash, now(), json.dumps(dict(meta or {}), default=str)))
        return id

    def record_run(self, run_id: str, *, inputs: Iterable[str] = (), outputs: Iterable[str] = (),
                   stage: str = "", path: str | os.PathLike | None = None, manifest_hash: str | None = None,
                   status: str | None = None, meta: Mapping[str, Any] | None = None) -> str:
        """Record a run and its edges in one transaction: artifact ids in `inputs` (what it read) and
        `outputs` (what it wrote). Recording the same run again adds edges and updates its status."""
        with transaction(self.conn):
            return self._record_run(run_id, inputs, outputs, stage, path, manifest_hash, status, meta)

    def _record_run(self, run_id: str, inputs: Iterable[str], outputs: Iterable[str], stage: str,
                    path: str | os.PathLike | None, manifest_hash: str | None, status: str | None,
                    meta: Mapping[str, Any] | None) -> str:
        self.conn.execute(
            "INSERT INTO runs (id, stage, path, manifest_hash, status, created, meta) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "status = COALESCE(excluded.status, status), path = COALESCE(excluded.path, path)",
            (run_id, stage, str(Path(path).resolve()) if path else None, manifest_hash, status, now(),
             json.dumps(dict(meta or {}), default=str)))
        for direction, ids in (("input", inputs), ("output", outputs)):
            for artifact in ids:
                self._require_artifact(artifact)
                self.conn.execute("INSERT OR IGNORE INTO edges (run_id, artifact_id, direction) "
                                  "VALUES (?, ?, ?)", (run_id, artifact, direction))
        return run_id

    def record_manifest(self, manifest: Manifest, *, path: str | os.PathLike | None = None,
                        outputs: Iterable[str] = (), status: str | None = None) -> str:
        """Record a run from its manifest: its base model and data files become input artifacts.

        Returns the run id (manifest.run_id). `outputs` are artifact ids the run wrote.
        """
        with transaction(self.conn):
            inputs: list[str] = []
            m = manifest.model
            if m:
                if m.get("kind") == "hub":
                    ident = f"model:{m['id']}@{m.get('revision') or 'unknown'}"
                    inputs.append(self._add_artifact("model", None, id=ident, hash=m.get("revision"),
                                                     meta={"hub_id": m["id"]}))
                else:
                    inputs.append(self._add_artifact("model", None, id=None, hash=m["hash"],
                                                     meta={"name": m.get("name"), "path": m.get("path")}))
            for d in manifest.data:
                if d.get("hash"):
                    inputs.append(self._add_artifact("dataset", None, id=None, hash=d["hash"],
                                                     meta={"path": d["path"]}))
                else:  # a named dataset (hub, data_samples name) with no local file to hash
                    inputs.append(self._add_artifact("dataset", None, id=f"dataset:{d['path']}", hash=None,
                                                     meta={"name": d["path"]}))
            return self._record_run(manifest.run_id, inputs, outputs, manifest.stage, path, manifest.hash(),
                                    status, {"preset": manifest.preset})

    def set_status(self, run_id: str, status: str) -> None:
        """Update a recorded run's status (running, done, failed…)."""
        with transaction(self.conn):
            if self.conn.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id)).rowcount == 0:
                raise LineageError(f"no run {run_id!r} in {self.path}")

    # ---- reading -------------------------------------------------------------------------------------------

    def _require_artifact(self, artifact_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        if row is None:
            raise LineageError(f"no artifact {artifact_id!r} in {self.path}: add it first (add_artifact)")
        return _row(row, "artifact")

    def artifact(self, ref: str) -> dict[str, Any]:
        """An artifact's row by id, or by its path (the one added last when several share it)."""
        row = self.conn.execute("SELECT * FROM artifacts WHERE id = ?", (ref,)).fetchone()
        if row is None:
            row = self.conn.execute("SELECT * FROM artifacts WHERE path = ? ORDER BY rowid DESC LIMIT 1",
                                    (str(Path(ref).resolve()),)).fetchone()
        if row is None:
            raise LineageError(f"no artifact {ref!r} in {self.path}")
        return _row(row, "artifact")

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's row with its `inputs` and `outputs` (artifact ids)."""
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise LineageError(f"no run {run_id!r} in {self.path}")
        out = _row(row, "run")
        for direction in ("input", "output"):
            out[direction + "s"] = [r[0] for r in self.conn.execute(
                "SELECT artifact_id FROM edges WHERE run_id = ? AND direction = ? ORDER BY artifact_id",
                (run_id, direction))]
        return out

    def runs(self) -> list[dict[str, Any]]:
        """Every recorded run, oldest first."""
        return [_row(r, "run") for r in self.conn.execute("SELECT * FROM runs ORDER BY created, rowid")]

    def artifacts(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every artifact (of one kind), oldest first."""
        rows = self.conn.execute("SELECT * FROM artifacts WHERE ? IS NULL OR kind = ? ORDER BY rowid",
                                 (kind, kind))
        return [_row(r, "artifact") for r in rows]

    def lineage(self, artifact: str) -> LineageGraph:
        """The chain back from an artifact (id or path): the runs that produced it, their inputs, the runs
        that produced those, and so on to the base model and data."""
        root = self.artifact(artifact)
        nodes = {root["id"]: root}
        edges: list[dict[str, str]] = []
        todo = [root["id"]]
        while todo:
            aid = todo.pop()
            producers = self.conn.execute("SELECT run_id FROM edges WHERE artifact_id = ? "
                                          "AND direction = 'output'", (aid,)).fetchall()
            for (run_id,) in producers:
                edges.append({"source": run_id, "target": aid, "direction": "output"})
                if run_id in nodes:
                    continue
                row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
                nodes[run_id] = _row(row, "run")
                for (parent,) in self.conn.execute(
                        "SELECT artifact_id FROM edges WHERE run_id = ? AND direction = 'input'",
                        (run_id,)).fetchall():
                    edges.append({"source": parent, "target": run_id, "direction": "input"})
                    if parent not in nodes:
                        nodes[parent] = self._require_artifact(parent)
                        todo.append(parent)
        return LineageGraph(root["id"], nodes, edges)

    def check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks ([] when consistent)."""
        problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in self.conn.execute("PRAGMA foreign_key_check")]
        return problems


def _row(row: sqlite3.Row, kind: str) -> dict[str, Any]:
    out = {"type": kind, **dict(row)}
    if "meta" in out:
        out["meta"] = json.loads(out["meta"] or "{}")
    return out
