"""The evaluation task protocol: what a task is, what it returns, where its rows come from, and the registry.

A task is a name, the metrics it reports, a loader and a runner:

    rows = task.load(cfg)                       # benchmark rows in the benchmark's own schema
    out = task.run(model, tokenizer, rows, cfg) # -> TaskOutput: one Scored per item and metric, a few samples

Rows come from the real benchmark through `datasets` (cfg.source "hub", or "auto" when it is reachable or
cached); offline, from the real benchmark items labkit ships (data_samples/eval/<task>_real.jsonl, a few
hundred per task copied from the benchmarks' own repositories by labkit.eval.real_items: source "real", and
what "auto" falls back to); or from the look-alike fixture labkit writes itself
(data_samples/eval/<task>.jsonl, source "fixture": small, for unit tests and smoke runs). All three share
the benchmark's schema, so one normaliser serves them. `labkit.eval.card.evaluate` runs tasks and folds
their scores into an EvalCard.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib.resources
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# data_samples/eval/ inside the package labkit.data_samples (the checkout's folder in an editable install).
FIXTURES_DIR = Path(os.fspath(importlib.resources.files("labkit.data_samples"))) / "eval"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One number a task reports; `slices` lists the row fields it is also broken down by."""

    name: str
    higher_is_better: bool = True
    help: str = ""


@dataclasses.dataclass
class Scored:
    """One item's score on one metric. `slices` maps a slice family to this item's value in it, e.g.
    {"subject": "astronomy"}; every item also counts towards the metric's "all" slice."""

    metric: str
    id: str
    score: float
    slices: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TaskOutput:
    """What a task's `run` returns: one Scored per item and metric, readable samples, and notes.

    Example:
        TaskOutput(scores=[Scored("accuracy", "q1", 1.0, {"subject": "astronomy"})],
                   samples=[{"prompt": "…", "output": "B", "target": "B", "score": 1.0}])
    """

    scores: list[Scored]
    samples: list[dict[str, Any]]       # readable examples: prompt, output, target, score and task extras
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. how many rows were skipped and why


@dataclasses.dataclass(frozen=True)
class Task:
    """A benchmark as labkit runs it: a name, the metrics it reports, how to load its rows, how to score them.

    Args:
        name: the registry key ("gsm8k").
        metrics: the Metrics it reports, each with its direction.
        load: (EvalConfig) -> rows, checked before any model runs (hub, datasets cache or offline fixture).
        run: (model, tokenizer, rows, EvalConfig) -> TaskOutput.
        about: one line for cards and the CLI.

    Example:
        task = get_tasks("gsm8k")[0]
        out = task.run(model, tok, task.load(EvalConfig(limit=8)), EvalConfig(limit=8))
    """

    name: str
    metrics: tuple[Metric, ...]
    load: Callable[[Any], list[dict]]                       # (EvalConfig) -> rows
    # (model, tokenizer, rows, EvalConfig) -> TaskOutput
    run: Callable[[Any, Any, list[dict], Any], TaskOutput]
    about: str = ""

    def metric(self, name: str) -> Metric:
        """The Metric called `name`; KeyError listing the task's metrics otherwise."""
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"task '{self.name}' has no metric '{name}'; it has "
                       f"{', '.join(m.name for m in self.metrics)}")


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add `task` to TASKS under its name (a later task of the same name replaces it); returns it."""
    TASKS[task.name] = task
    return task


def get_tasks(names: str | list[str]) -> list[Task]:
    """Tasks by name, from a comma list or a list; unknown names raise ConfigError listing the known ones."""
    import labkit.eval.suite  # noqa: F401 - registers every built-in task

    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    wanted = [n for n in wanted if n]
    unknown = [n for n in wanted if n not in TASKS]
    if unknown or not wanted:
        raise ConfigError("tasks", f"unknown task(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"choose from {', '.join(TASKS)}", config="EvalConfig")
    return [TASKS[n] for n in wanted]


# ----- rows: hub, real items or fixture --------------------------------------------------------------------

# Set while rows_from loads a task's real items: the task's own fixture loader then reads <name>_real.jsonl
# through read_fixture, so every task gets the real items without a loader of its own.
_READING_REAL = contextvars.ContextVar("labkit_eval_reading_real", default=False)

# Task name -> where its rows came from on the last load ("hub", or the data_samples file read), for cards.
LOADED_FROM: dict[str, str] = {}


def real_path(name: str) -> Path:
    """data_samples/eval/<name>_real.jsonl: the real benchmark items labkit ships for task `name`."""
    return FIXTURES_DIR / f"{name}_real.jsonl"


def has_real(name: str) -> bool:
    return real_path(name).is_file()


def read_real(name: str) -> list[dict]:
    """Rows of data_samples/eval/<name>_real.jsonl; DataError naming the file when labkit ships none."""
    from labkit.data.io import read_jsonl

    path = real_path(name)
    if not path.is_file():
        raise DataError(str(path), None, None, "no real items for this task; rebuild with "
                        "`python -m labkit.eval.real_items build --from <git dirs>`")
    return read_jsonl(path)


def reading_real() -> bool:
    """Whether the rows being loaded now are real items (read_fixture is reading <name>_real.jsonl)."""
    return _READING_REAL.get()


def fixture_label(name: str) -> str:
    """The file read_fixture(name) reads now, as a repo path, for error messages and cards."""
    file = f"{name}_real.jsonl" if reading_real() and has_real(name) else f"{name}.jsonl"
    return f"data_samples/eval/{file}"


def read_fixture(name: str) -> list[dict]:
    """Rows of data_samples/eval/<name>.jsonl (the look-alike fixture written by labkit.eval.fixtures), or of
    <name>_real.jsonl (real benchmark items, labkit.eval.real_items) while rows_from loads real items."""
    from labkit.data.io import read_jsonl

    if reading_real() and has_real(name):
        return read_real(name)
    path = FIXTURES_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(str(path), None, None,
                        "eval fixture missing; rebuild with `python -m labkit.eval.fixtures build`")
    return read_jsonl(path)


def _real_rows(fixture: Callable[[], list[dict]], task: str) -> list[dict]:
    if not has_real(task):
        log.info("eval task %s: no real items shipped; using the look-alike fixture", task)
    token = _READING_REAL.set(True)
    try:
        rows = fixture()
    finally:
        _READING_REAL.reset(token)
    LOADED_FROM[task] = f"data_samples/eval/{task}_real.jsonl" if has_real(task) else \
        f"data_samples/eval/{task}.jsonl"
    return rows


def load_hub(path: str, *, name: str | None = None, split: str) -> list[dict]:
    """A benchmark split through `datasets` (online, or from its cache when HF_DATASETS_OFFLINE=1)."""
    from datasets import load_dataset

    return [dict(r) for r in load_dataset(path, name, split=split)]


def rows_from(source: str, fixture: Callable[[], list[dict]], hub: Callable[[], list[dict]],
              task: str) -> list[dict]:
    """Pick the row source: "hub"; "real" (the shipped real items, or the fixture for a task without any);
    "fixture" (the look-alike fixture); or "auto" (the hub when it answers, else "real", logged).

    `fixture` is the task's loader of its data_samples file (it calls read_fixture); under "real" it runs
    with read_fixture pointed at <task>_real.jsonl."""
    if source == "fixture":
        rows = fixture()
        LOADED_FROM[task] = f"data_samples/eval/{task}.jsonl"
        return rows
    if source == "real":
        return _real_rows(fixture, task)
    if source == "hub":
        rows = hub()
        LOADED_FROM[task] = "hub"
        return rows
    if source != "auto":
        raise ConfigError("source", f"{source!r} is not one of 'auto', 'hub', 'real', 'fixture'",
                          config="EvalConfig")
    try:
        rows = hub()
    except Exception as exc:  # offline, not cached, or datasets refused: the real items have the same schema
        log.info("eval task %s: hub unavailable (%s); using the shipped real items", task,
                 str(exc).splitlines()[0][:120])
        return _real_rows(fixture, task)
    LOADED_FROM[task] = "hub"
    return rows


def subsample(rows: list[dict], limit: int, seed: int) -> list[dict]:
    """At most `limit` rows (0 = all), a seeded sample that keeps the rows' original order."""
    if not limit or limit >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def require_fields(rows: list[dict], fields: tuple[str, ...], source: str) -> None:
    """Every row has every field, or a DataError naming the first row and field that does not."""
    for i, row in enumerate(rows):
        for f in fields:
            if f not in row or row[f] is None:
                raise DataError(source, i, f, f"missing; rows of this task need {', '.join(fields)}")


def letter_ids(tok, letters: str) -> list[int]:
    """The token id of each bare letter as the first token of an assistant reply (MMLU options,
    judge verdicts)."""
    ids = []
    for letter in letters:
        enc = tok.encode(letter, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"the tokenizer splits {letter!r} into {len(enc)} tokens; scoring needs one")
        ids.append(enc[0])
    return ids
