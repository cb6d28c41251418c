"""RL systems views: Gantt timelines of rollout workers and trainer, staleness-sweep curves, weight-sync and
utilisation tables, and the memory planner as a widget."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.rlsys.loop import RunLog
from labkit.rlsys.planner import BUILTIN, GB, GPUS, LINEARS, Workload, plan

COLORS = {"generate": "#1f77b4", "train": "#d62728", "sync": "#2ca02c", "eval": "#9e9e9e", "load": "#c7c7c7",
          "sleep": "#9467bd", "wake": "#8c564b", "killed": "#000000"}


def gantt(log: RunLog, *, title: str = "") -> go.Figure:
    """One row per lane (trainer, each worker), one bar per recorded event, coloured by kind."""
    fig = go.Figure()
    lanes = sorted({e["lane"] for e in log.events}, key=lambda lane: (lane != "trainer", lane))
    for kind, color in COLORS.items():
        evs = [e for e in log.events if e["kind"] == kind]
        if not evs:
            continue
        hover = [", ".join(f"{k}={v}" for k, v in e.items() if k not in ("lane", "kind", "start", "end"))
                 for e in evs]
        fig.add_bar(y=[e["lane"] for e in evs], x=[max(e["end"] - e["start"], 0.02) for e in evs],
                    base=[e["start"] for e in evs], orientation="h", name=kind, marker_color=color,
                    hovertext=hover)
    cfg = log.config
    fig.update_layout(barmode="overlay", height=130 + 45 * len(lanes),
                      title=title or f"{cfg['mode']}, staleness {cfg['staleness']}: {log.wall_s:.0f} s",
                      xaxis_title="seconds since start", yaxis={"categoryorder": "array",
                                                                "categoryarray": lanes[::-1]},
                      margin={"l": 80, "r": 20, "t": 40, "b": 40})
    return fig


def utilisation(log: RunLog) -> dict[str, float]:
    """Share of the run (first generation to last step) each lane spent generating or training."""
    work = [e for e in log.events if e["kind"] in ("generate", "train")]
    if not work:
        return {}
    start, end = min(e["start"] for e in work), max(e["end"] for e in work)
    busy: dict[str, float] = {}
    for e in work:
        busy[e["lane"]] = busy.get(e["lane"], 0.0) + e["end"] - e["start"]
    return {lane: round(t / max(end - start, 1e-9), 3) for lane, t in sorted(busy.items())}


def summary_rows(logs: Sequence[RunLog]) -> list[dict[str, Any]]:
    """One row per run: its summary, utilisation per lane and weight-sync cost."""
    rows = []
    for log in logs:
        syncs = log.syncs
        rows.append({**log.summary(), **{f"busy {k}": v for k, v in utilisation(log).items()},
                     "sync_MB": round(sum(s["bytes"] for s in syncs) / max(len(syncs), 1) / 2 ** 20, 3)})
    return rows


def sweep_figure(logs: Sequence[RunLog], *, title: str = "staleness sweep") -> go.Figure:
    """Held-out accuracy and training reward against time (evaluation time excluded), one line per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("held-out accuracy vs time", "train reward vs time"))
    for i, log in enumerate(logs):
        name = f"staleness {log.config['staleness']}"
        color = f"hsl({int(220 * i / max(len(logs) - 1, 1))},70%,45%)"
        fig.add_scatter(x=[e["time"] for e in log.evals], y=[e["accuracy"] for e in log.evals], name=name,
                        mode="lines+markers", line_color=color, legendgroup=name, row=1, col=1)
        fig.add_scatter(x=[s["time"] for s in log.steps], y=[s["reward_mean"] for s in log.steps], name=name,
                        mode="lines+markers", line_color=color, legendgroup=name, showlegend=False,
                        row=1, col=2)
    fig.update_xaxes(title_text="seconds (without evaluation)")
    fig.update_layout(title=title, height=360, margin={"l": 50, "r": 20, "t": 60, "b": 40})
    return fig


def sync_rows(logs: Sequence[RunLog], per_run: int = 2) -> list[dict[str, Any]]:
    """The first `per_run` weight syncs of each run: kind, tensors, MB, seconds on the trainer and worker."""
    return [{"sync": s["kind"], "version": s["version"], "tensors": s["tensors"],
             "MB": round(s["bytes"] / 2 ** 20, 3), "trainer_s": round(s["trainer_s"], 4),
             "worker_s": round(sum(s["worker_s"]) / max(len(s["worker_s"]), 1), 4)}
            for log in logs for s in log.syncs[:per_run]]


def version_mix_rows(log: RunLog) -> list[dict[str, Any]]:
    """Per consumed group: the step, its lag and how many tokens each policy version wrote."""
    return [{"step": s["step"], "group": g, "lag": lag, "versions": mix}
            for s in log.steps for g, lag, mix in zip(s["groups"], s["lags"], s["versions"])]


# -- the planner widget ------------------------------------------------------------------------------------

def plan_html(p) -> str:
    """A plan as an HTML table: parts in GiB, the total, fits per card, throughput when a GPU was given."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{v / GB:.3f}</td></tr>"
                   for k, v in p.parts.items())
    fits = " ".join(f"<span style='color:{'#2e7d32' if ok else '#c62828'}'>{c} GB {'✓' if ok else '✗'}</span>"
                    for c, ok in p.fits().items())
    speed = ""
    if p.train_tokens_per_s:
        speed = (f"<div>training ≈ {p.train_tokens_per_s:,.0f} tokens/s; decoding ≈ "
                 f"{p.decode_tokens_per_s:,.0f} tokens/s</div>")
    return (f"<div><b>{html.escape(p.model)}</b>: {p.params / 1e9:.2f} B parameters, "
            f"{p.trainable / 1e6:.1f} M trainable, {p.tokens_per_step:,} tokens per micro-batch"
            f"<table>{rows}<tr><td><b>peak</b></td>"
            f"<td style='text-align:right'><b>{p.total / GB:.3f}</b></td></tr></table>"
            f"<div>fits (90% of the card): {fits}</div>{speed}</div>")


class PlannerWidget(widgets.VBox):
    """Dropdowns and sliders over the planner's inputs; the table below updates on every change."""

    def __init__(self, model: str = "qwen2.5-1.5b", **workload: Any):
        w = self.workload = Workload(**workload)
        self.model = widgets.Dropdown(options=list(BUILTIN), value=model, description="model")
        self.method = widgets.ToggleButtons(options=["full", "lora", "qlora"], value=w.method)
        self.objective = widgets.ToggleButtons(options=["sft", "grpo", "dpo"], value=w.objective)
        self.seq_len = widgets.IntSlider(value=w.seq_len, min=64, max=8192, step=64, description="seq len")
        self.batch = widgets.IntSlider(value=w.batch, min=1, max=64, description="batch")
        self.k = widgets.IntSlider(value=w.k, min=2, max=32, description="GRPO k")
        self.precision = widgets.Dropdown(options=["bf16", "fp32", "mixed"], value=w.precision,
                                          description="precision")
        self.optimizer = widgets.Dropdown(options=["adamw", "adamw8bit", "sgd"], value=w.optimizer,
                                          description="optimizer")
        self.checkpointing = widgets.Checkbox(value=w.checkpointing, description="checkpointing")
        self.gpu = widgets.Dropdown(options=list(GPUS), value="l4", description="GPU")
        self.out = widgets.HTML()
        controls = [self.model, self.method, self.objective, self.seq_len, self.batch, self.k, self.precision,
                    self.optimizer, self.checkpointing, self.gpu]
        for c in controls:
            c.observe(self._update, names="value")
        super().__init__([widgets.HBox(controls[:3]), widgets.HBox(controls[3:6]),
                          widgets.HBox(controls[6:]), self.out])
        self._update()

    def current(self):
        """The plan for the widget's current settings."""
        return plan(self.model.value, method=self.method.value, objective=self.objective.value,
                    seq_len=self.seq_len.value, batch=self.batch.value, k=self.k.value,
                    precision=self.precision.value, optimizer=self.optimizer.value,
                    checkpointing=self.checkpointing.value, lora_targets=LINEARS, gpu=self.gpu.value,
                    prompt_len=self.workload.prompt_len, lora_r=self.workload.lora_r)

    def _update(self, _change: Any = None) -> None:
        self.out.value = plan_html(self.current())

    def static_html(self) -> str:
        """The current view as HTML, for a headless run where the widget's updates are not kept."""
        return self.out.value


def planner_widget(model: str = "qwen2.5-1.5b", **workload: Any) -> PlannerWidget:
    """The memory planner as a widget, starting from `model` and the Workload fields given."""
    return PlannerWidget(model, **workload)

