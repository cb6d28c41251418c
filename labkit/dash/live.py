"""The live training dashboard: a callback that plots a run's metrics against step, in Jupyter or headless.

``LiveDashboard`` implements the callback protocol of :mod:`labkit.runs.callbacks`. In a Jupyter
kernel it shows a plotly ``FigureWidget`` (one subplot per :class:`Panel`) and a ``tqdm`` bar, and
updates them in place as steps arrive. A headless run (papermill) keeps only a widget's initial,
empty state, so at ``on_end`` the widget's output is replaced by a static figure of the final state.
Outside a kernel it only collects data: ``history`` holds every series and ``figure()`` draws them.

    dash = LiveDashboard()                                  # SFT panels
    dash = LiveDashboard(PREFERENCE_PANELS, title="dpo")    # or RL_PANELS, or your own:
    dash = LiveDashboard([Panel("reward", ("reward", "reward_std")), "kl"])
    dash = LiveDashboard([Panel("reward per function", "rewards/*/mean")])  # one line per function
    train(cfg, callbacks=[dash])
"""

from __future__ import annotations

import functools
import math
import re
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

    A name with a ``*`` is a pattern: every metric that matches it gets its own trace, added when the
    metric first arrives and named by the part the ``*`` matched (``rewards/*/mean`` draws
    ``rewards/format/mean`` as "format"). Use it for series whose names are not known in advance,
    such as one reward per reward function.
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
    Panel("accuracy", ("rewards/accuracies",),
          ("heldout/preference_accuracy", "heldout/implicit_reward_accuracy")),
    Panel("KL to reference", ("kl",), ("heldout/kl",)),
)

# Metric names as TRL's GRPO/RLOO trainers log them; labkit's PPO logs ``clip_fraction`` and
# ``value_loss`` instead of or beside them. ``heldout/accuracy`` is the stages' greedy held-out eval.
RL_PANELS: tuple[Panel, ...] = (
    Panel("reward (mean, std over completions)", ("reward", "reward_std")),
    Panel("reward per function", ("rewards/*/mean",)),
    Panel("held-out accuracy", (), ("heldout/accuracy",)),
    Panel("KL to reference", ("kl",)),
    Panel("entropy", ("entropy",)),
    Panel("clip fraction", ("clip_ratio/region_mean", "clip_fraction")),
    Panel("completion length (tokens)", ("completions/mean_length",)),
    Panel("truncation rate", ("completions/clipped_ratio",)),
    # A group whose rewards are all equal has zero advantage everywhere: it teaches nothing.
    Panel("groups with zero reward variance", ("frac_reward_zero_std",)),
    Panel("loss", ("loss", "value_loss")),
)

# labkit.eval.InTrainingEval's metrics (`eval/<task>/<metric>`), one trace each; add it to any stage's panels.
EVAL_PANEL = Panel("in-training eval", (), ("eval/*",))


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


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern | None:
    """The regex for a metric pattern with ``*`` (each ``*`` one or more characters),
    or None for a plain name."""
    if "*" not in pattern:
        return None
    return re.compile("^" + "(.+?)".join(re.escape(part) for part in pattern.split("*")) + "$")


def _panel_traces(panel: Panel, history: dict | None = None) -> list[tuple[str, str, str]]:
    """(event, metric, legend name) for each trace of a panel: training lines, then eval markers.

    Plain names always have a trace; a pattern has one per metric in ``history`` that matches it, in
    order of first arrival, skipping metrics the panel already draws.
    """
    traces: list[tuple[str, str, str]] = []
    for event, names in (("step", panel.metrics), ("eval", panel.eval_metrics)):
        prefix = "" if event == "step" else "eval "
        plain = [name for name in names if _glob(name) is None]
        seen = set(plain)
        labels: set[str] = set()
        for name in names:
            regex = _glob(name)
            if regex is None:
                traces.append((event, name, prefix + name))
                labels.add(prefix + name)
                continue
            for metric in (history or {}).get(event, {}):
                match = regex.match(metric)
                if match is None or metric in seen:
                    continue
                seen.add(metric)
                label = prefix + "/".join(match.groups())
                # Two patterns in one panel (rewards/*/mean, rewards/*/std) would both say "format".
                label = prefix + metric if label in labels else label
                labels.add(label)
                traces.append((event, metric, label))
    return traces


def _legend_key(index: int) -> str:
    """Plotly's name for panel ``index``'s legend: ``legend``, ``legend2``, ``legend3``, …"""
    return "legend" if index == 0 else f"legend{index + 1}"


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
        self._warned: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.history: dict[str, dict[str, dict[str, list[float]]]] = {event: {} for event in EVENTS}
        self.info: dict = {}
        self.summary: dict | None = None
        self._widget: go.FigureWidget | None = None
        # (panel index, event, metric) for every trace of the widget, in the order it holds them;
        # patterns add more as metrics arrive.
        self._traces: list[tuple[int, str, str]] = []
        self._colors: dict[str, str] = {}  # a metric keeps its colour across panels, train/eval and redraws
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
        """Start over: clear the history, start the tokens/s clock and show the bar and widget."""
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
        """Record the numeric metrics and tokens/s, log them, advance the bar; redraw if not throttled."""
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
        """Record the eval metrics as markers, restart the tokens/s clock and redraw at once."""
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
        """Keep the summary, close the bar and replace the live widget by a static figure that survives."""
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

    def _color(self, name: str, palette: list[str]) -> str:
        return self._colors.setdefault(name, palette[len(self._colors) % len(palette)])

    @staticmethod
    def _palette(fig: go.Figure) -> list[str]:
        """The template's colours, so a metric can keep one colour for its line and its eval markers."""
        return list(fig.layout.template.layout.colorway or ()) or ["#636efa", "#ef553b", "#00cc96"]

    def _scatter(self, event: str, name: str, label: str, color: str, index: int) -> go.Scatter:
        x, y = self._series(event, name)
        train = event == "step"
        return go.Scatter(
            # Small markers on lines too: a series of one point draws no line.
            x=x, y=y, name=label, mode="lines+markers" if train else "markers",
            line={"color": color}, marker={"color": color, "size": 3 if train else 8},
            # Each panel has its own legend (one key listing every panel's traces misleads), and a
            # click hides a metric's line and eval markers in that panel only.
            legend=_legend_key(index), legendgroup=f"{index}/{name}",
        )

    def _place_legends(self, fig) -> None:
        """Put each panel's legend in its subplot's top-right corner."""
        for index in range(len(self.panels)):
            sub = fig.get_subplot(*self._cell(index))
            fig.update_layout({_legend_key(index): {
                "x": sub.xaxis.domain[1], "y": sub.yaxis.domain[1], "xanchor": "right", "yanchor": "top",
                "bgcolor": "rgba(255,255,255,0.6)", "font": {"size": 10}}})

    def _build(self, cls: type = go.Figure):
        """A figure of class ``cls`` with one subplot per panel and one trace per series, with the
        (panel index, event, metric) of each trace in figure order."""
        rows, cols = self._grid()
        fig = make_subplots(
            rows=rows, cols=cols, subplot_titles=[p.title for p in self.panels],
            vertical_spacing=min(0.12, 0.5 / rows), horizontal_spacing=0.1,
        )
        palette = self._palette(fig)
        keys: list[tuple[int, str, str]] = []
        for index, panel in enumerate(self.panels):
            row, col = self._cell(index)
            has_data = False
            for event, name, label in _panel_traces(panel, self.history):
                has_data = has_data or name in self.history[event]
                fig.add_trace(self._scatter(event, name, label, self._color(name, palette), index),
                              row=row, col=col)
                keys.append((index, event, name))
            if panel.log_y:
                fig.update_yaxes(type="log", row=row, col=col)
            # Not on the widget: the note would stay there once data arrives.
            if not has_data and cls is not go.FigureWidget:
                fig.add_annotation(text="no data", x=0.5, y=0.5, xref="x domain", yref="y domain",
                                   showarrow=False, font={"color": "gray"}, row=row, col=col)
        for index in range(max(0, len(self.panels) - cols), len(self.panels)):  # bottom of each column
            fig.update_xaxes(title_text="step", row=self._cell(index)[0], col=self._cell(index)[1])
        fig.update_layout(title=self.title, height=max(300, 260 * rows), margin={"t": 70, "b": 40},
                          showlegend=True)
        self._place_legends(fig)
        return (fig if cls is go.Figure else cls(fig)), keys

    def _figure(self, cls: type = go.Figure):
        """A figure of class ``cls`` with one subplot per panel, one trace per series, current data."""
        return self._build(cls)[0]

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
            self._widget, self._traces = self._build(go.FigureWidget)
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
            # Metrics that match a pattern for the first time get a trace of their own; plotly adds
            # traces one by one, outside batch_update.
            known = set(self._traces)
            palette = self._palette(widget)
            for index, panel in enumerate(self.panels):
                for event, name, label in _panel_traces(panel, self.history):
                    if (index, event, name) not in known:
                        row, col = self._cell(index)
                        widget.add_trace(self._scatter(event, name, label, self._color(name, palette), index),
                                         row=row, col=col)
                        self._traces.append((index, event, name))
                        known.add((index, event, name))
            with widget.batch_update():
                for trace, (_, event, name) in zip(widget.data, self._traces):
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
