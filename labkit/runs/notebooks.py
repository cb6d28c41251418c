"""Headless notebook runs with papermill: the tour, the notebook tests and the nightly job all use this."""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import pathlib
import re
import time
from typing import Any

# notebooks/, the package labkit.notebooks: the checkout's folder in an editable install, else the
# wheel's copy.
NOTEBOOKS_DIR = pathlib.Path(os.fspath(importlib.resources.files("labkit.notebooks")))
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@dataclasses.dataclass
class NotebookRun:
    """One headless execution: the source notebook, the executed copy, how long it took, and the
    error ("ExceptionType: message", papermill's cell error included) when it failed."""

    source: pathlib.Path
    output: pathlib.Path
    seconds: float
    ok: bool
    error: str = ""


def list_notebooks(folder: pathlib.Path = NOTEBOOKS_DIR) -> list[pathlib.Path]:
    """The curated notebooks, in their numbered order: NN_topic.ipynb, and NNx_topic.ipynb for one inserted
    after NN (00b_ comes after 00_)."""
    return sorted([*folder.glob("[0-9][0-9]_*.ipynb"), *folder.glob("[0-9][0-9][a-z]_*.ipynb")])


def _matches(spec: str, name: str) -> bool:
    """A notebook number ("00", "00b") names that notebook only; anything else is a name substring."""
    if re.fullmatch(r"\d\d[a-z]?", spec):
        return name.split("_", 1)[0] == spec
    return spec in name


def select_notebooks(spec: str | list[str], folder: pathlib.Path = NOTEBOOKS_DIR) -> list[pathlib.Path]:
    """The notebooks a selection names: "all", "none" / "", notebook numbers ("00", "00b": that notebook only)
    or name substrings (a comma-separated string or a list). A part that matches no notebook is an error, so
    a typo fails before anything runs."""
    from labkit.errors import ConfigError

    books = list_notebooks(folder)
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    if parts in ([], ["none"]):
        return []
    if parts == ["all"]:
        return books
    if missing := [p for p in parts if not any(_matches(p, nb.name) for nb in books)]:
        raise ConfigError("notebooks", f"no notebook matches {', '.join(map(repr, missing))}; "
                          f"have: {', '.join(nb.name for nb in books)}")
    return [nb for nb in books if any(_matches(p, nb.name) for p in parts)]


def strip_widget_state(nb) -> int:
    """Drop widget state and widget-view outputs (each figure's state is MBs and replays nothing
    headless); the static fallbacks every labkit widget also emits stay. Returns outputs removed."""
    nb.metadata.pop("widgets", None)
    removed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                del data[WIDGET_MIME]
                removed += 1
        if "outputs" in cell:  # code cells only: a markdown cell with an outputs key is invalid nbformat
            cell["outputs"] = [o for o in cell["outputs"] if o.get("output_type") != "display_data"
                               or o.get("data")]
    return removed


# ipykernel warns on every start that its loopback TCP sockets are unencrypted; a headless run on this
# machine has nothing to act on, so the kernel's own log shows errors only.
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


def run_notebook(path: str | os.PathLike, *, out_dir: str | os.PathLike, preset: str = "cpu-smoke",
                 parameters: dict[str, Any] | None = None, timeout: int = 600,
                 raise_on_error: bool = True, kernel_name: str = "python3") -> NotebookRun:
    """Execute one notebook with papermill (PRESET injected into its `parameters` cell).

    The executed copy lands in out_dir with widget state stripped. With raise_on_error=False a failed
    run returns ok=False and the error text instead of raising. `timeout` is per cell, in seconds;
    `kernel_name` a Jupyter kernelspec (the nightly canary runs its own venv's python through one).
    """
    import nbformat
    import papermill as pm

    src = pathlib.Path(path).resolve()
    out = pathlib.Path(out_dir).resolve() / src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"PRESET": preset, **(parameters or {})}
    start = time.perf_counter()
    error = ""
    try:
        pm.execute_notebook(str(src), str(out), parameters=params, kernel_name=kernel_name,
                            cwd=str(out.parent), execution_timeout=timeout, progress_bar=False,
                            log_output=False, extra_arguments=QUIET_KERNEL)
    except Exception as exc:  # papermill wraps cell errors; keep the message, decide below
        error = f"{type(exc).__name__}: {exc}"
        if raise_on_error:
            raise
    finally:
        if out.exists():
            nb = nbformat.read(out, as_version=4)
            strip_widget_state(nb)
            nbformat.write(nb, out)
    return NotebookRun(src, out, time.perf_counter() - start, not error, error)


def run_notebooks(paths: list[pathlib.Path], *, out_dir: str | os.PathLike, preset: str = "cpu-smoke",
                  workers: int = 1, timeout: int = 600, kernel_name: str = "python3") -> list[NotebookRun]:
    """Run several notebooks (never raising), `workers` at a time, in the order given.

    With more than one worker each runs in its own fresh (spawned) process and its kernels get one thread
    apiece: a smoke notebook spends most of its time in single-threaded Python (kernel start, imports, model
    load), so two at once on two cores finish sooner than two threads each, one after the other.
    """
    if workers <= 1:
        return [run_notebook(p, out_dir=out_dir, preset=preset, raise_on_error=False, timeout=timeout,
                             kernel_name=kernel_name) for p in paths]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # spawned workers and their kernels inherit it
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_notebook, p, out_dir=out_dir, preset=preset, raise_on_error=False,
                                   timeout=timeout, kernel_name=kernel_name) for p in paths]
            return [f.result() for f in futures]
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
