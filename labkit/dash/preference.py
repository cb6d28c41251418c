"""Static plots for the reward-model and preference notebooks: calibration, reward spread, method comparison,
and the best-of-n reward-hacking curves. Each takes the plain dicts the stages return and gives a plotly
figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.runs.callbacks import metrics_frame, read_jsonl

KIND_COLORS = {"slip": "#d62728", "guess": "#ff7f0e", "padded": "#1f77b4", "all": "#7f7f7f"}


def calibration_plot(table: Sequence[Mapping[str, Any]],
                     title: str = "Reward-model calibration") -> go.Figure:
    """Reliability diagram from labkit.metrics.reward_model.calibration: observed vs
    predicted P(A beats B)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect",
                             line={"dash": "dot", "color": "gray"}))
    fig.add_trace(go.Scatter(
        x=[r["predicted"] for r in table], y=[r["observed"] for r in table], mode="lines+markers",
        name="model",
        marker={"size": [6 + 20 * (r["count"] / max(t["count"] for t in table)) ** 0.5 for r in table]},
        text=[f"{r['count']} points" for r in table],
        hovertemplate="predicted %{x:.2f}<br>observed %{y:.2f}<br>%{text}"))
    fig.update_layout(title=title, xaxis_title="predicted P(A beats B) = σ(r_A − r_B)",
                      yaxis_title="share of those where A was chosen", height=380, width=460,
                      xaxis={"range": [0, 1]}, yaxis={"range": [0, 1]})
    return fig


def reward_spread(scored: Sequence[Mapping[str, Any]],
                  title: str = "Held-out rewards by pair kind") -> go.Figure:
    """Chosen vs rejected reward per held-out pair, coloured by kind: above the diagonal = ranked right."""
    fig = go.Figure()
    kinds = sorted({s["kind"] for s in scored})
    for kind in kinds:
        pts = [s for s in scored if s["kind"] == kind]
        fig.add_trace(go.Scatter(x=[s["rejected"] for s in pts], y=[s["chosen"] for s in pts], mode="markers",
                                 name=kind, marker={"color": KIND_COLORS.get(kind)},
                                 text=[s["prompt"] for s in pts]))
    lo = min(min(s["chosen"], s["rejected"]) for s in scored)
    hi = max(max(s["chosen"], s["rejected"]) for s in scored)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="tie",
                             line={"dash": "dot", "color": "gray"}))
    fig.update_layout(title=title, xaxis_title="reward of the rejected reply",
                      yaxis_title="reward of the chosen reply",
                      height=400, width=520)
    return fig


def results_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per method from {method: RunResult} of labkit.stages.preference, for display or a report."""
    rows = []
    for method, r in results.items():
        m = r.metrics
        b, a = m["before"], m["after"]
        row = {"method": method, "β": m["beta"], "steps": m["steps"], "seconds": round(m["train_seconds"], 1),
               "accuracy before": b.get("preference_accuracy"),
               "accuracy after": a.get("preference_accuracy"),
               "per-token acc. after": a.get("preference_accuracy_avg"),
               "implicit-reward acc.": a.get("implicit_reward_accuracy"), "KL (nats)": a.get("kl")}
        row.update({k.replace("accuracy/", "after: "): v for k, v in a.items() if k.startswith("accuracy/")})
        rows.append(row)
    return rows


def compare_methods(results: Mapping[str, Any], title: str = "Same data, same steps") -> go.Figure:
    """Overlaid curves per method: training loss, held-out preference accuracy,
    and sampled KL to the reference."""
    from labkit.dash.preference_math import COLORS

    fig = make_subplots(rows=1, cols=3, subplot_titles=("training loss", "held-out preference accuracy",
                                                        "KL(policy ‖ reference), nats"))
    for method, r in results.items():
        events = read_jsonl(r.log_path)
        steps, evals = metrics_frame(events, "step"), metrics_frame(events, "eval")
        color = COLORS.get(method)
        for col, frame, key in ((1, steps, "loss"), (2, evals, "heldout/preference_accuracy"),
                                (3, evals, "heldout/kl")):
            if key in frame:
                fig.add_trace(go.Scatter(x=frame["step"], y=frame[key],
                                         mode="lines+markers" if col > 1 else "lines",
                                         name=method, legendgroup=method, showlegend=col == 1,
                                         line={"color": color}), row=1, col=col)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=380)
    return fig


def best_of_n_plot(curves: Mapping[str, Sequence[Mapping[str, float]]],
                   title: str = "Best-of-n against two reward models") -> go.Figure:
    """For each reward model: what best-of-n buys as n grows (reward, length-controlled reward, tokens,
    correct)."""
    panels = (("reward", "reward (what is optimised)"),
              ("length_controlled_reward", "length-controlled reward"),
              ("tokens", "reply length (tokens)"), ("correct", "answer correct (true quality)"))
    fig = make_subplots(rows=1, cols=4, subplot_titles=[t for _, t in panels])
    palette = ["#d62728", "#2ca02c", "#1f77b4", "#9467bd"]
    for k, (name, rows) in enumerate(curves.items()):
        for col, (key, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(x=[r["n"] for r in rows], y=[r[key] for r in rows], mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=col == 1,
                                     line={"color": palette[k % len(palette)]}), row=1, col=col)
    fig.update_xaxes(title_text="n", type="log", dtick=0.30103)
    fig.update_layout(title=title, height=360)
    return fig
