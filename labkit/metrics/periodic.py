"""Evaluate every N steps and at the end, draw it, log it: the one mechanism every stage uses.

A stage writes a *measurement*, a plain function of the model as it is now:

    def measure(model, tok, step):               # -> (metrics, samples)
        return {"accuracy": ...}, [...]

and hands it to `PeriodicEval`, a labkit callback (`on_start` / `on_step` / `finish`, see
labkit.runs.callbacks). It measures at step 0 (or takes the `before` numbers the stage already has), every
`every` steps, and once more at the last step; each result goes to the run's callbacks as
`on_eval(step, {prefix + name: value})`, so the JSONL log and the dashboard get it like any other eval.
TRL-backed stages reach it through the Trainer adapter, labkit's own loops (PPO) call it directly: the
measurement never knows which.

Two context managers keep an evaluation from disturbing the run: `evaluating(model)` switches dropout off
and restores the training mode after; `Stopwatch.paused()` keeps eval time out of the training clock, so an
accuracy-against-time curve shows time spent learning.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

Measurement = Callable[[Any, Any, int], "tuple[dict[str, float], list[dict]]"]


@contextlib.contextmanager
def evaluating(model) -> Iterator[Any]:
    """`model` in eval mode inside the block (no dropout), in the mode it had before after it."""
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


class Stopwatch:
    """Wall-clock seconds since start, and `training`: the same with every `paused()` block taken out."""

    def __init__(self):
        self.start = time.perf_counter()
        self.paused_seconds = 0.0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside the block the clock's `training` time stands still."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - t

    @property
    def wall(self) -> float:
        """Seconds since the stopwatch started."""
        return time.perf_counter() - self.start

    @property
    def training(self) -> float:
        """Seconds since the start, minus the time spent inside paused() blocks."""
        return self.wall - self.paused_seconds


def due(step: int, every: int) -> bool:
    """Whether step is one of the every-N steps (never, when every is 0)."""
    return every > 0 and step > 0 and step % every == 0


class PeriodicEval:
    """A labkit callback that runs `measure(model, tok, step)` at the start,
    every `every` steps and at the end.

    Args:
        measure: returns (metrics, samples) for the model as it is now; metrics are scalars.
        every: steps between evaluations; 0 evaluates only at the start and the end.
        prefix: put before each metric name in the evals it sends ("heldout/accuracy").
        before: the step-0 numbers when the stage measured them already (they are sent, not re-measured).
        model, tokenizer: what to measure; when None, taken from `info["handles"]` at on_start.
        at_start: measure at on_start when `before` is not given.
        clock: a Stopwatch whose training time excludes the evaluations; `points` records it per eval.

    Attributes:
        history: [(step, metrics)] in order; latest: (step, metrics, samples) of the last evaluation;
        points: [{"step", "seconds", "wall_seconds", **metrics}] (the curve against training time);
        seconds: total time spent evaluating.

    Example:
        ev = PeriodicEval(measure, every=10, model=model, tokenizer=tok)
        cbs = Callbacks([JsonlLogger(path), *callbacks, ev])

    Put it last among a stage's callbacks, so each step reaches the log before the eval it triggers. Its
    last evaluation is sent from `finish`, which labkit's Callbacks runs before anyone's on_end.
    """

    def __init__(self, measure: Measurement, every: int = 0, *, prefix: str = "heldout/",
                 before: dict[str, float] | None = None, model=None, tokenizer=None, at_start: bool = True,
                 clock: Stopwatch | None = None):
        if every < 0:
            raise ValueError(f"every must be 0 (start and end only) or a number of steps, got {every}")
        self.measure, self.every, self.prefix = measure, every, prefix
        self.before, self.at_start, self.clock = before, at_start, clock
        self.model, self.tokenizer = model, tokenizer
        self.emit = None
        self.history: list[tuple[int, dict[str, float]]] = []
        self.points: list[dict[str, float]] = []
        self.latest: tuple[int, dict[str, float], list[dict]] | None = None
        self.seconds = 0.0
        if before:
            self._record(0, dict(before), [])

    def on_start(self, info: dict) -> None:
        """Take the model and the run's callbacks from the handles, then send (or measure) step 0."""
        handles = info.get("handles")
        self.emit = handles.emit if handles is not None else None
        if self.model is None and handles is not None:
            self.model, self.tokenizer = handles.model, handles.tokenizer
        if self.model is None or self.emit is None:
            warnings.warn("PeriodicEval: the stage passed no model handles in on_start; no evals will run",
                          stacklevel=2)
            self.emit = None
            return
        step = int(info.get("global_step") or 0)
        if self.before:  # the step-0 point of every curve, sent after the dashboard has reset
            self.emit.on_eval(step, {self.prefix + k: v for k, v in self.before.items()})
        elif self.at_start:
            self.run(step)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Measure when the step is one of the every-N steps."""
        if due(step, self.every):
            self.run(step)

    def finish(self, summary: dict) -> None:
        """The last point, sent before every callback's on_end (labkit.runs.callbacks.Callbacks.on_end)."""
        step = summary.get("global_step")
        if step is not None:
            self.run(int(step))  # the last point, unless that step was just evaluated

    def run(self, step: int) -> dict[str, float]:
        """Measure now and send the metrics; a step already measured is skipped."""
        if self.emit is None or (self.latest is not None and self.latest[0] == step):
            return {}
        start = time.perf_counter()
        with evaluating(self.model), (self.clock.paused() if self.clock else contextlib.nullcontext()):
            metrics, samples = self.measure(self.model, self.tokenizer, step)
        self.seconds += time.perf_counter() - start
        self._record(step, metrics, samples)
        self.emit.on_eval(step, {self.prefix + k: v for k, v in metrics.items()})
        return metrics

    def _record(self, step: int, metrics: dict[str, float], samples: list[dict]) -> None:
        self.history.append((step, metrics))
        self.latest = (step, metrics, samples)
        seconds = (self.clock.training, self.clock.wall) if self.clock else (0.0, 0.0)
        self.points.append({"step": step, "seconds": seconds[0], "wall_seconds": seconds[1], **metrics})
