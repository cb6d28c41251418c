"""The callback protocol that stages call and dashboards implement, and a JSONL metrics logger.

A stage calls four hooks in order: ``on_start(info)`` once, ``on_step(step, metrics)`` and
``on_eval(step, metrics)`` as training goes, ``on_end(summary)`` once. A callback implements any
subset of them; :class:`Callbacks` dispatches to whichever exist. A callback that still has something
to send when the run ends (a held-out eval's last point) implements ``finish(summary)``: every
callback's ``finish`` runs before anyone's ``on_end``, so logs and dashboards see it before they close.
Metrics reach callbacks as plain Python floats, whatever the stage computed them as
(tensor, numpy scalar, int).
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from labkit.errors import DataError

HOOKS = ("on_start", "on_step", "on_eval", "finish", "on_end")


class RunHandles:
    """Handed to callbacks as ``info["handles"]`` by stages that train a model: the model being trained, its
    tokenizer, and ``emit``, the run's own callbacks. A callback that does more than observe (an in-training
    eval) uses them; sending results through ``emit.on_eval`` puts them in the same log and dashboard.
    Loggers leave it out: it is a live object, not a record."""

    def __init__(self, model: Any, tokenizer: Any, emit: Callbacks):
        self.model, self.tokenizer, self.emit = model, tokenizer, emit

    def __repr__(self) -> str:
        return f"RunHandles(model={type(self.model).__name__})"


@runtime_checkable
class Callback(Protocol):
    """What a stage calls. ``on_start(info: dict)`` is optional too and not part of the check."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Receive one optimizer step's training metrics (a logged step, not necessarily every one)."""
        ...

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Receive an evaluation's metrics, taken at `step`."""
        ...

    def on_end(self, summary: dict) -> None:
        """Receive the run's summary once, after every callback's `finish`."""
        ...


def to_float(value: Any) -> float | None:
    """A scalar (Python number, numpy scalar, one-element tensor or array) as a float; None otherwise."""
    if isinstance(value, numbers.Real):  # also bool, int and numpy scalars
        return float(value)
    # Tensors and numpy arrays: only a single element is a metric; .numel()/.size says how many.
    size = getattr(value, "numel", None)
    size = size() if callable(size) else getattr(value, "size", None)
    if size == 1 and hasattr(value, "item"):
        return float(value.item())
    return None


def scalar_metrics(metrics: dict[str, Any], *, strict: bool = True) -> dict[str, float]:
    """Metrics as ``{name: float}``. Non-scalar values raise TypeError, or are dropped when not ``strict``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        number = to_float(value)
        if number is not None:
            out[str(key)] = number
        elif strict:
            raise TypeError(
                f"metric '{key}' must be a scalar number, got {type(value).__name__}: {value!r:.80}"
            )
    return out


class Callbacks:
    """Dispatches each hook to every callback that defines it, in order, with metrics as floats.

    Accepts an iterable of callbacks, a single callback, or another ``Callbacks`` (flattened), so a
    stage can wrap whatever ``callbacks=`` argument it was given.
    """

    def __init__(self, callbacks: Iterable[object] | object | None = ()):
        if callbacks is None:
            callbacks = ()
        elif any(hasattr(callbacks, hook) for hook in HOOKS) and not isinstance(callbacks, Callbacks):
            callbacks = [callbacks]
        self._items: list[object] = []
        for cb in callbacks:  # type: ignore[union-attr]
            if isinstance(cb, Callbacks):
                self._items.extend(cb)
            elif any(callable(getattr(cb, hook, None)) for hook in HOOKS):
                self._items.append(cb)
            else:
                # A bare function or a typo'd class would otherwise be ignored without a word.
                raise TypeError(f"{cb!r} is not a callback: it defines none of {', '.join(HOOKS)}")

    def __iter__(self) -> Iterator[object]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self._items:
            method = getattr(cb, hook, None)
            if callable(method):
                method(*args)

    def on_start(self, info: dict) -> None:
        """Pass a copy of `info` to every callback's on_start."""
        self._call("on_start", dict(info))

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        """Pass the step as an int and the metrics as floats; a non-scalar metric raises TypeError."""
        self._call("on_step", int(step), scalar_metrics(metrics))

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        """Pass the step as an int and the metrics as floats; a non-scalar metric raises TypeError."""
        self._call("on_eval", int(step), scalar_metrics(metrics))

    def on_end(self, summary: dict) -> None:
        """Run every callback's `finish`, then every callback's on_end, each with a copy of `summary`."""
        self._call("finish", dict(summary))
        self._call("on_end", dict(summary))


# JSON has no NaN or Infinity; these strings stand in for them and read_jsonl turns them back.
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _jsonable(value: Any) -> Any:
    """Value ready for strict JSON: non-finite floats as strings, scalars as floats, containers walked."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    number = to_float(value)
    if number is None:
        return str(value)
    if math.isfinite(number):
        return number
    return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")


def _restore(value: Any) -> Any:
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


class JsonlLogger:
    """Writes one JSON object per event to ``path``: ``{"event", "step", "time", **metrics}``.

    Each line is written and flushed as the event happens (the file is opened per event), so a run
    that crashes keeps everything it logged. Non-finite floats are stored as the strings ``"nan"``,
    ``"inf"``, ``"-inf"``; :func:`read_jsonl` turns them back into floats. The ``event``, ``step`` and
    ``time`` fields win over metrics of the same name. ``start``/``end`` events take their step from
    ``info["global_step"]`` / ``summary["global_step"]`` when present.
    """

    def __init__(self, path: str | Path, *, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append:
            self.path.write_text("", encoding="utf-8")

    def _write(self, event: str, step: int | None, fields: dict) -> None:
        record = {**_jsonable(fields), "event": event, "step": step, "time": time.time()}
        line = json.dumps(record, allow_nan=False, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def on_start(self, info: dict) -> None:
        """Write a `start` line with the run's info, minus the live `handles`."""
        self._write("start", info.get("global_step"), {k: v for k, v in info.items() if k != "handles"})

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Write a `step` line with the metrics."""
        self._write("step", step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Write an `eval` line with the metrics."""
        self._write("eval", step, metrics)

    def on_end(self, summary: dict) -> None:
        """Write an `end` line with the summary."""
        self._write("end", summary.get("global_step"), summary)


def read_jsonl(path: str | Path) -> list[dict]:
    """The events a :class:`JsonlLogger` wrote, with ``"nan"``/``"inf"``/``"-inf"`` back as floats.

    A last line cut short by a crash mid-write is skipped; a bad line elsewhere raises DataError.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    events = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(_restore(json.loads(line)))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise DataError(str(path), i, None, f"not a JSON object ({exc.msg})") from exc
    return events


def metrics_frame(events: Iterable[dict], event: str = "step") -> dict[str, list[float]]:
    """Columns ``{"step": [...], metric: [...]}`` for the events of one kind, for plotting without pandas.

    Every column has one entry per event; a metric an event lacks is nan there (plotly draws a gap).
    Non-numeric fields are left out.
    """
    rows = [e for e in events if e.get("event") == event]
    keys: dict[str, None] = {"step": None}  # ordered set: first-seen order keeps plots stable
    for row in rows:
        keys.update((k, None) for k, v in row.items() if k != "event" and to_float(v) is not None)
    frame: dict[str, list[float]] = {}
    for key in keys:
        column = [to_float(row.get(key)) for row in rows]
        frame[key] = [math.nan if v is None else v for v in column]
    return frame
