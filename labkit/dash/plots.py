"""Static plotly figures of finished runs, for notebooks and the tour's HTML report."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.runs.callbacks import metrics_frame, read_jsonl


def loss_curve(log_path, *, title: str = "training loss") -> go.Figure:
    """Train loss per step (and eval loss where logged) from a run's JSONL log."""
    events = read_jsonl(log_path)
    steps, evals = metrics_frame(events, "step"), metrics_frame(events, "eval")
    fig = go.Figure(go.Scatter(x=steps.get("step", []), y=steps.get("loss", []), mode="lines",
                               name="train loss"))
    if evals.get("loss"):
        fig.add_scatter(x=evals["step"], y=evals["loss"], mode="markers", name="eval loss")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=320,
                      margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return fig


def before_after(metrics: dict, *, title: str = "before and after training") -> go.Figure:
    """The task metrics next to the forgetting probe: what the stage taught vs what it cost.

    Left: accuracies (higher is better). Right: per-prompt probe loss on general questions (lower is
    better; a rise is forgetting).
    """
    before, after = metrics["before"], metrics["after"]
    accs = [k for k in ("format_accuracy", "answer_accuracy") if k in before and k in after]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.35, 0.65],
                        subplot_titles=("task (held-out accuracy)", "forgetting probe (loss per prompt)"))
    for name, src, color in (("before", before, "#9e9e9e"), ("after", after, "#1f77b4")):
        fig.add_bar(x=[a.replace("_", " ") for a in accs], y=[src[a] for a in accs], name=name,
                    marker_color=color, legendgroup=name, row=1, col=1)
    probe = metrics.get("probe_per_prompt", [])
    labels = [p["prompt"][:28] for p in probe]
    for name, color in (("before", "#9e9e9e"), ("after", "#1f77b4")):
        fig.add_bar(x=labels, y=[p[name] for p in probe], name=name, marker_color=color, legendgroup=name,
                    showlegend=False, row=1, col=2)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=title, barmode="group", height=380, margin={"l": 50, "r": 20, "t": 60, "b": 120})
    return fig
