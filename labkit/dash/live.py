"""The live training dashboard: a callback that plots a run's metrics against step, in Jupyter or headless.

``LiveDashboard`` implements the callback protocol of :mod:`labkit.runs.callbacks`. In a Jupyter
kernel it shows a plotly ``FigureWidget`` (one subplot per :class:`Panel`) and a ``tqdm`` bar, and
updates them in place as steps arrive. A headless run (papermill) keeps only a widget's initial,
empty state, so at ``on_end`` the widget's output is replaced by a static figure of the final state.
Outside a kernel it only collects data: ``history`` holds every series and ``figure()`` draws them.

    dash = LiveDashboard()                                  # SFT panels
    dash = LiveDashboard(PREFERENCE_PANELS, title="dpo")    # or RL_PANELS, or your own:
    dash = LiveDashboard([Panel("reward", ("reward", "reward_std")), "kl"])
    train(cfg, callbacks=[dash])
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.runs.callbacks import JsonlLogger, to_float

EVENTS = ("step", "eval")


@dataclass(frozen=True)
class Panel:
    """One subplot: training metrics drawn as lines and evaluation metrics as markers, against step.

    ``metrics`` and ``eval_metrics`` name keys of the ``on_step`` / ``on_eval`` metric dicts (a single
    name may be given as a string). A metric that never arrives leaves its trace empty.
    """

    title: str
    metrics: tuple[str, ...] = ()
    eval_metrics: tuple[str, ...] = ()
    log_y: bool = False

    def __post_init__(self):
        # Accept a bare string or a list so Panel("kl", "kl") works; a frozen dataclass needs setattr.
        for field in ("metrics", "eval_metrics"):
            value = getattr(self, field)
            object.__setattr__(self, field, (value,) if isinstance(value, str) else tuple(value))


SFT_PANELS: tuple[Panel, ...] = (
    Panel("loss", ("loss",), ("loss",)),
    Panel("learning rate", ("learning_rate",)),
    Panel("grad norm", ("grad_norm",)),
    Panel("tokens/s", ("tokens_per_s",)),
)

# Training metrics as TRL's DPO/CPO/ORPO/KTO trainers log them; `heldout/…` evals come from
# labkit.stages.preference (ranking accuracy on held-out pairs, KL on completions the policy samples).
PREFERENCE_PANELS: tuple[Panel, ...] = (
    Panel("loss", ("loss",), ("loss",)),
    Panel("rewards", ("rewards/chosen", "rewards/rejected"), ("rewards/chosen", "rewards/rejected")),
    Panel("margin", ("rewards/margins",), ("rewards/margins",)),
    Panel("accuracy", ("rewards/accuracies",), ("heldout/preference_accuracy", "heldout/implicit_reward_accuracy")),
    Panel("KL to reference", ("kl",), ("heldout/kl",)),
)

# Metric names as TRL's GRPO/RLOO trainers log them (``clip_fraction`` for a stage that logs PPO's name).
RL_PANELS: tuple[Panel, ...] = (
    Panel("reward", ("reward", "reward_std"), ("reward",)),
    Panel("KL", ("kl",)),
    Panel("entropy", ("entropy",)),
    Panel("clip fraction", ("clip_ratio/region_mean", "clip_fraction")),
    Panel("completion length", ("completions/mean_length",)),
)


def _now() -> float:
    """The clock for throttling and tokens/s; a function so tests can replace it."""
    return time.perf_counter()


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (live or papermill), where displayed outputs reach a notebook."""
    import sys

    # Only look if IPython is already loaded: a plain script must not pay for importing it.
    if "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _display(obj: Any):
    """Display ``obj`` in the notebook and return its handle (``handle.update(new)`` replaces it)."""
    from IPython.display import display

    return display(obj, display_id=True)


class _StaticFigure(go.Figure):
    """A go.Figure that IPython displays through its mime bundle.

    go.Figure's ``_ipython_display_`` calls ``pio.show``, which opens a new output and ignores the
    display id, so ``handle.update(fig)`` would add a second picture instead of replacing the
    widget. Raising NotImplementedError there makes IPython fall back to ``_repr_mimebundle_``.
    """

    def _ipython_display_(self):
        raise NotImplementedError


def _panel_traces(panel: Panel) -> list[tuple[str, str]]:
    """(event, metric) for each trace of a panel, in drawing order: training lines, then eval markers."""
    return [("step", name) for name in panel.metrics] + [("eval", name) for name in panel.eval_metrics]


def _loss_like(metrics: dict[str, float]) -> tuple[str, float] | None:
    """The value to show beside the progress bar: ``loss``, else any ``*loss*``, else ``reward``."""
    if "loss" in metrics:
        return "loss", metrics["loss"]
    for key in metrics:
        if "loss" in key:
            return key, metrics[key]
    if "reward" in metrics:
        return "reward", metrics["reward"]
    return None


class LiveDashboard:
    """A callback that draws panels of metrics against step, live in Jupyter and static elsewhere.

    - ``panels``: :class:`Panel` objects, or bare metric names (a panel of that name for the train
      and eval series); default :data:`SFT_PANELS`.
    - ``log_path``: also log every event to this JSONL file through :class:`JsonlLogger`.
    - ``update_every_s``: redraw the widget at most this often on steps (always on eval and end).
    - ``progress``: show a ``tqdm.auto`` bar in a kernel (total from ``info["max_steps"]``).

    ``history`` is ``{"step": {name: {"step": [...], "value": [...]}}, "eval": {...}}`` with every
    numeric metric received, plus the derived ``tokens_per_s`` (from the cumulative ``num_tokens``
    and the wall-clock between steps). ``figure()`` returns a static figure of it at any time.
    A new ``on_start`` begins a new run: history and display start over.

    It observes and never drives: a non-numeric metric is skipped, and a failure to draw or log
    turns into a warning rather than an exception inside the training loop.
    """

    def __init__(
        self,
        panels: list[Panel | str] | tuple[Panel | str, ...] | None = None,
        *,
        title: str = "training",
        log_path: str | Path | None = None,
        update_every_s: float = 0.5,
        progress: bool = True,
    ):
        panels = SFT_PANELS if panels is None else panels
        self.panels: tuple[Panel, ...] = tuple(
            Panel(p, (p,), (p,)) if isinstance(p, str) else p for p in panels
        )
        if not self.panels or not all(isinstance(p, Panel) for p in self.panels):
            raise TypeError("panels must be a non-empty list of Panel objects or metric names")
        self.title = title
        self.update_every_s = float(update_every_s)
        self.progress = progress
        self.logger = JsonlLogger(log_path) if log_path is not None else None
        # (event, metric) for every trace, in the order the figure holds them.
        self._traces = [trace for panel in self.panels for trace in _panel_traces(panel)]
        self._warned: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.history: dict[str, dict[str, dict[str, list[float]]]] = {event: {} for event in EVENTS}
        self.info: dict = {}
        self.summary: dict | None = None
        self._widget: go.FigureWidget | None = None
        self._handle = None
        self._bar = None
        self._postfix: dict[str, str] = {}
        self._shown = False  # whether the live display has been set up (or found unavailable)
        self._last_draw = -math.inf
        # Reference point (time, cumulative tokens) for tokens/s; tokens None means "not known yet".
        self._ref_time: float | None = None
        self._ref_tokens: float | None = None

    # ---- the callback protocol -------------------------------------------------------------------

    def on_start(self, info: dict) -> None:
        self._reset()
        self.info = dict(info or {})
        self._ref_time = _now()
        # num_tokens is cumulative from the start of training; a resumed run starts above zero,
        # so its first rate would count every earlier token. Wait for a second reading instead.
        resumed = (self._step(self.info.get("global_step")) or 0) > 0
        self._ref_tokens = None if resumed else 0.0
        self._safely("log", self.logger and self.logger.on_start, self.info)
        self._show()

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        step_num = self._step(step)
        if step_num is None:
            return
        values = self._numbers(metrics)
        rate = self._tokens_per_s(values.get("num_tokens"))
        if rate is not None:
            values["tokens_per_s"] = rate
        self._record("step", step_num, values)
        self._safely("log", self.logger and self.logger.on_step, step_num, self._for_log(metrics, rate))
        self._show()
        self._advance_bar(step_num, values)
        if _now() - self._last_draw >= self.update_every_s:
            self._draw()

    def on_eval(self, step: int, metrics: dict[str, Any]) -> None:
        step_num = self._step(step)
        if step_num is None:
            return
        values = self._numbers(metrics)
        self._record("eval", step_num, values)
        self._safely("log", self.logger and self.logger.on_eval, step_num, dict(metrics))
        # Evaluation ran between the last step and now; restart the tokens/s clock so the next
        # rate measures training only.
        if self._ref_time is not None:
            self._ref_time = _now()
        self._show()
        if self._bar is not None and (loss := _loss_like(values)):
            self._postfix[f"eval {loss[0]}"] = f"{loss[1]:.4g}"
            self._safely("progress", self._bar.set_postfix, self._postfix)
        self._draw()

    def on_end(self, summary: dict) -> None:
        self.summary = dict(summary or {})
        self._safely("log", self.logger and self.logger.on_end, self.summary)
        self._show()
        self._draw()
        if self._bar is not None:
            final = self._step(self.summary.get("global_step"))
            if final is not None:
                self._advance_bar(final, {})
            self._safely("progress", self._bar.close)
        if self._handle is not None:
            # Replace the widget by a static picture: it survives a headless run and nbconvert.
            self._safely("display", self._handle.update, self._figure(_StaticFigure))

    # ---- data ------------------------------------------------------------------------------------

    @staticmethod
    def _step(step: Any) -> int | None:
        try:
            return int(step)
        except (TypeError, ValueError, OverflowError):
            return None

    @staticmethod
    def _numbers(metrics: Any) -> dict[str, float]:
        """The metrics that are scalar numbers, as floats; anything else is skipped."""
        out: dict[str, float] = {}
        if not isinstance(metrics, dict):
            return out
        for key, value in metrics.items():
            try:
                number = to_float(value)
            except Exception:  # an odd object whose .item() fails is as good as non-numeric
                number = None
            if number is not None:
                out[str(key)] = number
        return out

    @staticmethod
    def _for_log(metrics: Any, rate: float | None) -> dict:
        record = dict(metrics) if isinstance(metrics, dict) else {}
        if rate is not None:
            record["tokens_per_s"] = rate
        return record

    def _tokens_per_s(self, tokens: float | None) -> float | None:
        if tokens is None or not math.isfinite(tokens):  # a nan would poison every later rate
            return None
        now = _now()
        rate = None
        if self._ref_time is not None and self._ref_tokens is not None:
            elapsed = now - self._ref_time
            if elapsed > 0 and tokens >= self._ref_tokens:
                rate = (tokens - self._ref_tokens) / elapsed
        self._ref_time, self._ref_tokens = now, tokens
        return rate

    def _record(self, event: str, step: int, values: dict[str, float]) -> None:
        series = self.history[event]
        for name, value in values.items():
            column = series.setdefault(name, {"step": [], "value": []})
            column["step"].append(step)
            column["value"].append(value)

    # ---- drawing ---------------------------------------------------------------------------------

    def _grid(self) -> tuple[int, int]:
        cols = 1 if len(self.panels) == 1 else 2
        return -(-len(self.panels) // cols), cols

    def _cell(self, index: int) -> tuple[int, int]:
        cols = self._grid()[1]
        return index // cols + 1, index % cols + 1

    def _figure(self, cls: type = go.Figure):
        """A figure of class ``cls`` with one subplot per panel, one trace per series, current data."""
        rows, cols = self._grid()
        fig = make_subplots(
            rows=rows, cols=cols, subplot_titles=[p.title for p in self.panels],
            vertical_spacing=min(0.12, 0.5 / rows), horizontal_spacing=0.1,
        )
        # The template's colours, so a metric can keep one colour for its line and its eval markers.
        palette = list(fig.layout.template.layout.colorway or ()) or ["#636efa", "#ef553b", "#00cc96"]
        color_of: dict[str, str] = {}  # a metric keeps its colour across panels and train/eval
        for index, panel in enumerate(self.panels):
            row, col = self._cell(index)
            has_data = False
            for event, name in _panel_traces(panel):
                color = color_of.setdefault(name, palette[len(color_of) % len(palette)])
                x, y = self._series(event, name)
                has_data = has_data or bool(x)
                train = event == "step"
                fig.add_trace(
                    go.Scatter(
                        # Small markers on lines too: a series of one point draws no line.
                        x=x, y=y, name=name if train else f"eval {name}",
                        mode="lines+markers" if train else "markers",
                        line={"color": color}, marker={"color": color, "size": 3 if train else 8},
                        legendgroup=name,
                    ),
                    row=row, col=col,
                )
            if panel.log_y:
                fig.update_yaxes(type="log", row=row, col=col)
            # Not on the widget: the note would stay there once data arrives.
            if not has_data and cls is not go.FigureWidget:
                fig.add_annotation(text="no data", x=0.5, y=0.5, xref="x domain", yref="y domain",
                                   showarrow=False, font={"color": "gray"}, row=row, col=col)
        for index in range(max(0, len(self.panels) - cols), len(self.panels)):  # bottom of each column
            fig.update_xaxes(title_text="step", row=self._cell(index)[0], col=self._cell(index)[1])
        fig.update_layout(title=self.title, height=max(300, 260 * rows), margin={"t": 70, "b": 40})
        return fig if cls is go.Figure else cls(fig)

    def _series(self, event: str, name: str) -> tuple[list, list]:
        column = self.history[event].get(name)
        return (list(column["step"]), list(column["value"])) if column else ([], [])

    def figure(self) -> go.Figure:
        """A static plotly figure of the data so far: one subplot per panel, with a legend."""
        return self._figure(go.Figure)

    def _show(self) -> None:
        """On the first event in a kernel, display the progress bar and the live widget."""
        if self._shown:
            return
        self._shown = True
        if not _in_kernel():
            return
        if self.progress:
            self._safely("progress", self._open_bar)
        try:
            self._widget = self._figure(go.FigureWidget)
        except Exception as exc:  # e.g. anywidget missing: no live plot, the static one still comes
            self._warn("widget", f"no live plot ({type(exc).__name__}: {exc}); a static one comes at the end")
            self._widget = None
            self._handle = self._safely("display", _display, self._figure(_StaticFigure))
            return
        self._handle = self._safely("display", _display, self._widget)
        self._last_draw = _now()

    def _open_bar(self) -> None:
        from tqdm.auto import tqdm

        total = self._step(self.info.get("max_steps"))
        self._bar = tqdm(total=total if total and total > 0 else None, desc=self.title, unit="step")

    def _advance_bar(self, step: int, values: dict[str, float]) -> None:
        if self._bar is None:
            return

        def advance():
            # Steps jump by logging_steps; the bar counts optimiser steps.
            if step > self._bar.n:
                self._bar.update(step - self._bar.n)
            if loss := _loss_like(values):
                self._postfix[loss[0]] = f"{loss[1]:.4g}"
                self._bar.set_postfix(self._postfix)

        self._safely("progress", advance)

    def _draw(self) -> None:
        """Bring the widget's traces up to date in place, in one message to the front end."""
        widget = self._widget
        if widget is None:
            return
        self._last_draw = _now()

        def update():
            with widget.batch_update():
                for trace, (event, name) in zip(widget.data, self._traces):
                    x, y = self._series(event, name)
                    if len(trace.x or ()) != len(x):  # unchanged series: nothing to send
                        trace.x, trace.y = x, y

        self._safely("display", update)

    # ---- never let the observer break the run ----------------------------------------------------

    def _safely(self, what: str, fn, *args):
        if not fn:
            return None
        try:
            return fn(*args)
        except Exception as exc:
            self._warn(what, f"{what} failed ({type(exc).__name__}: {exc}); training goes on")
            return None

    def _warn(self, what: str, message: str) -> None:
        if what not in self._warned:  # once per kind, not once per step
            self._warned.add(what)
            warnings.warn(f"LiveDashboard: {message}", RuntimeWarning, stacklevel=3)
