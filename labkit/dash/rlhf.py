"""Static figures of the RLHF experiments: the over-optimisation curve (proxy reward and gold accuracy against
√KL, one line per KL coefficient, best-of-n beside them)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def overoptimisation_figure(out: dict[str, Any], *, title: str = "optimising a learned reward") -> go.Figure:
    """Left: proxy (learned) reward; right: gold accuracy; both against √KL(π ‖ π_ref), for every β of a
    labkit.stages.overoptimisation.sweep result, with best-of-n (dashed) on the same axes."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("proxy reward (reward model)", "gold accuracy"))
    betas = sorted({c["beta"] for c in out["curves"]})
    for i, beta in enumerate(betas):
        pts = sorted((c for c in out["curves"] if c["beta"] == beta), key=lambda c: c["step"])
        color = COLORS[i % len(COLORS)]
        for col, key in ((1, "proxy"), (2, "gold")):
            fig.add_scatter(x=[p["sqrt_kl"] for p in pts], y=[p[key] for p in pts], mode="lines+markers",
                            name=f"GRPO β={beta:g}", legendgroup=f"b{beta}", showlegend=col == 1,
                            line={"color": color}, text=[f"step {p['step']}" for p in pts], row=1, col=col)
    best = out.get("best_of_n") or []
    for col, key in ((1, "proxy"), (2, "gold")):
        if best:
            fig.add_scatter(x=[b["sqrt_kl"] for b in best], y=[b[key] for b in best], mode="lines+markers",
                            name="best-of-n", legendgroup="bon", showlegend=col == 1,
                            line={"color": "#7f7f7f", "dash": "dash"}, text=[f"n={b['n']}" for b in best],
                            row=1, col=col)
        fig.update_xaxes(title_text="√KL from the reference (nats)", row=1, col=col)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(title=title, height=360, margin={"l": 50, "r": 20, "t": 60, "b": 40})
    return fig
