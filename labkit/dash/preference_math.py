"""Preference-loss maths widget: each loss and its gradient weight as a function of the log-ratio gap Δ.

Sliders for β, Δ, SimPO's γ and the label-smoothing ε redraw two panels: the loss L(Δ) and the weight
w(Δ) = -dL/dΔ, i.e. how hard one more gradient step pushes the chosen reply above the rejected one
(w > 0: still pushing; w = 0: stopped; w < 0: pulling the pair back together). Every number comes from the
real functions in `labkit.losses.preference`, differentiated with autograd, so the picture is the code.

What a student should see (each claim is checked numerically in tests/dash/test_preference_math.py):

- DPO, L = -log σ(βΔ): the weight β·σ(-βΔ) decays smoothly but never reaches zero, so DPO keeps widening
  a pair it already ranks correctly (it can over-optimise). L(0) = log 2.
- Hinge (SLiC), L = max(0, 1 - βΔ): weight β until βΔ = 1, then stops dead: a pair past the margin is ignored.
- IPO, L = (Δ - 1/(2β))²: a regression onto Δ = 1/(2β). The weight -2(Δ - 1/(2β)) is zero there and
  negative beyond, so IPO pulls back: bounded margins, no over-fitting to deterministic preferences.
  IPO's Δ is per-token (average log-probs), and its loss is not β-scaled, so its curves run off the panels;
  the y-ranges follow the other methods (zoom out in plotly to see all of IPO).
- SimPO, L = -log σ(βΔ - γ): reference-free (Δ is the gap in average log-probs of the policy alone) and
  length-normalised; the DPO curve shifted right by γ/β, so it asks for a margin before it relaxes.
- cDPO (label smoothing ε): the weight β[(1-ε)σ(-βΔ) - εσ(βΔ)] crosses zero at βΔ = ln((1-ε)/ε) and goes
  negative beyond: it expects a fraction ε of labels to be flipped, so it refuses to be too sure.
- robust DPO (rDPO, ε): the weight never falls below βε/(1-2ε), and the loss is unbounded below (linear
  in Δ): an unbiased correction for flipped labels that pushes harder than DPO at every Δ.
- KTO (one desirable example with log-ratio Δ, reference point z₀ = 0): L = 1 - σ(βΔ), weight
  β·σ(βΔ)·σ(-βΔ), largest (β/4) at Δ = 0 and fading on both sides: it saturates on examples far either way.

ORPO is left out: its odds ratio depends on the absolute levels ā_w and ā_l (the odds of each reply), not on
their gap alone, and needs both log-probs < 0, which bounds the gap; no single Δ axis describes it.

Like the LoRA widgets this works headless (papermill keeps only the initial widget state): build it, set a
slider from code (`w.beta.value = 0.5`) and read `w.values` / `w.static_html()`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from labkit.errors import ConfigError
from labkit.losses import preference as P

Tensor = torch.Tensor

METHODS: tuple[str, ...] = ("dpo", "cdpo", "robust", "hinge", "ipo", "simpo", "kto")

LABELS: dict[str, str] = {"dpo": "DPO", "cdpo": "cDPO (ε)", "robust": "robust DPO (ε)",
                          "hinge": "hinge (SLiC)",
                          "ipo": "IPO", "simpo": "SimPO (γ)", "kto": "KTO (desirable)"}

# Fixed per method (plotly's default palette) so a method keeps its colour across panels and figures.
COLORS: dict[str, str] = {"dpo": "#636efa", "cdpo": "#ab63fa", "robust": "#19d3f3", "hinge": "#ef553b",
                          "ipo": "#00cc96", "simpo": "#ffa15a", "kto": "#ff6692"}

GAP_RANGE: tuple[float, float] = (-20.0, 40.0)

# IPO's quadratic, un-β-scaled loss dwarfs the rest; the panels' y-ranges ignore it unless it is alone.
_UNSCALED = frozenset({"ipo"})

# |weight| ≤ this × β counts as "stopped", only for methods that have a stop point (hinge is exactly 0; IPO
# and cDPO there up to rounding). DPO's weight at βΔ = 400 is ~1e-173 and is still, truthfully, "pushing".
_STOP_TOL = 1e-12


def default_gaps(n: int = 201, lo: float = GAP_RANGE[0], hi: float = GAP_RANGE[1]) -> list[float]:
    """n evenly spaced Δ values from lo to hi (the widget's Δ slider range)."""
    return torch.linspace(lo, hi, n, dtype=torch.float64).tolist()


def _check(beta: float, gamma: float, label_smoothing: float, methods: Sequence[str]) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ConfigError("beta", f"must be a finite number > 0, got {beta!r}")
    if not math.isfinite(gamma):
        raise ConfigError("gamma", f"must be finite, got {gamma!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ConfigError("label_smoothing", f"must satisfy 0 <= ε < 0.5 (robust DPO divides by 1 - 2ε), "
                                             f"got {label_smoothing!r}")
    if not methods:
        raise ConfigError("methods", "name at least one method")
    for m in methods:
        if m == "orpo":
            raise ConfigError("methods",
                              "ORPO depends on the absolute log-probs of both replies, not on their "
                                         "gap Δ alone, so it has no curve here")
        if m not in LABELS:
            raise ConfigError("methods", f"unknown method {m!r}; choose from {', '.join(LABELS)}")


def _loss_of_gap(method: str, beta: float, gamma: float, eps: float) -> Callable[[Tensor], Tensor]:
    """The real loss function as a function of Δ alone: d [1] -> scalar loss.

    Reference-based losses get policy_chosen = Δ and every other log-prob 0, so their log-ratio margin is Δ;
    SimPO gets average log-probs chosen = Δ, rejected = 0; KTO one desirable example with log-ratio Δ and no
    KL estimate (z₀ = 0) and no undesirable ones.
    """
    def zero(d: Tensor) -> Tensor:
        return torch.zeros_like(d)

    if method == "dpo":
        return lambda d: P.dpo_loss(d, zero(d), zero(d), zero(d), beta=beta)[0]
    if method == "cdpo":
        return lambda d: P.dpo_loss(d, zero(d), zero(d), zero(d), beta=beta, label_smoothing=eps)[0]
    if method == "robust":
        return lambda d: P.dpo_loss(d, zero(d), zero(d), zero(d), beta=beta, label_smoothing=eps,
                                    robust=True)[0]
    if method == "hinge":
        return lambda d: P.hinge_loss(d, zero(d), zero(d), zero(d), beta=beta)[0]
    if method == "ipo":
        return lambda d: P.ipo_loss(d, zero(d), zero(d), zero(d), beta=beta)[0]
    if method == "simpo":
        return lambda d: P.simpo_loss(d, zero(d), beta=beta, gamma=gamma)[0]
    if method == "kto":
        return lambda d: P.kto_loss(d, d[:0], zero(d), d[:0], beta=beta)[0]
    raise ConfigError("methods", f"unknown method {method!r}")


def _curve(fn: Callable[[Tensor], Tensor], gaps: Sequence[float]) -> tuple[list[float], list[float]]:
    """(loss, weight = -dL/dΔ) at each gap, one batch of size 1 per gap (the losses return a batch mean)."""
    losses, weights = [], []
    for g in gaps:
        # float64 so tiny weights (DPO's β·σ(-βΔ) at large Δ) stay visibly non-zero.
        d = torch.tensor([float(g)], dtype=torch.float64, requires_grad=True)
        loss = fn(d)
        (grad,) = torch.autograd.grad(loss, d)
        losses.append(float(loss.detach()))
        weights.append(-float(grad[0]))
    return losses, weights


def loss_curves(beta: float, *, gaps: Sequence[float] | None = None, methods: Sequence[str] = METHODS,
                gamma: float = 0.5, label_smoothing: float = 0.1) -> dict[str, dict[str, list[float]]]:
    """Each method's loss and weight -dL/dΔ over the gaps:
    {method: {"gap": [...], "loss": [...], "weight": [...]}}.

    Δ is the log-ratio gap (chosen - rejected, reference-corrected, summed log-probs) for DPO, cDPO, robust
    DPO and hinge; the per-token gap for IPO (its inputs are average log-probs); the gap in average policy
    log-probs for SimPO (reference-free, margin `gamma`); and the log-ratio of one desirable example for KTO
    (reference point z₀ = 0). `label_smoothing` is cDPO's and robust DPO's ε. `gaps` defaults to
    `default_gaps()` (201 points over GAP_RANGE).
    """
    _check(beta, gamma, label_smoothing, methods)
    gaps = default_gaps() if gaps is None else [float(g) for g in gaps]
    if not gaps:
        raise ConfigError("gaps", "need at least one Δ value")
    out = {}
    for m in methods:
        loss, weight = _curve(_loss_of_gap(m, beta, gamma, label_smoothing), gaps)
        out[m] = {"gap": list(gaps), "loss": loss, "weight": weight}
    return out


def stop_gap(method: str, beta: float, *, gamma: float = 0.5, label_smoothing: float = 0.1
             ) -> tuple[float | None, str]:
    """(Δ where the method's weight reaches zero or None if it never does, a one-line explanation)."""
    eps = label_smoothing
    if method == "dpo":
        return None, "never: β·σ(−βΔ) > 0 for every Δ (can over-optimise)"
    if method == "cdpo":
        if eps == 0:
            return None, "never: ε = 0 is plain DPO"
        x = math.log((1 - eps) / eps) / beta
        return x, f"weight 0 at βΔ = ln((1−ε)/ε), Δ = {x:.4g}; pulls back beyond (expects flipped labels)"
    if method == "robust":
        floor = beta * eps / (1 - 2 * eps)
        return None, f"never: weight → βε/(1−2ε) = {floor:.4g} as Δ → ∞; loss unbounded below"
    if method == "hinge":
        return 1 / beta, f"stops dead at βΔ = 1, Δ = {1 / beta:.4g}"
    if method == "ipo":
        x = 1 / (2 * beta)
        return x, f"minimum at Δ = 1/(2β) = {x:.4g} (per token); pulls back beyond"
    if method == "simpo":
        return None, f"never: β·σ(γ − βΔ) > 0; DPO shifted to βΔ = γ, Δ = {gamma / beta:.4g}"
    if method == "kto":
        return None, "never exactly: β·σ(βΔ)·σ(−βΔ) peaks (β/4) at Δ = 0 and fades both ways"
    raise ConfigError("methods", f"unknown method {method!r}")


def _state(weight: float, tol: float) -> str:
    if weight > tol:
        return "pushing"
    return "pulling back" if weight < -tol else "stopped"


def summary_at(beta: float, gap: float, *, methods: Sequence[str] = METHODS, gamma: float = 0.5,
               label_smoothing: float = 0.1) -> list[dict[str, Any]]:
    """One table row per method at a single Δ.

    Each row: {"method", "label", "gap", "loss", "weight" (-dL/dΔ), "state" ("pushing" / "stopped" /
    "pulling back"), "stop_gap" (Δ where the weight reaches 0, or None), "note" (where it stops pushing)}.
    """
    curves = loss_curves(beta, gaps=[gap], methods=methods, gamma=gamma, label_smoothing=label_smoothing)
    rows = []
    for m, c in curves.items():
        where, note = stop_gap(m, beta, gamma=gamma, label_smoothing=label_smoothing)
        rows.append({"method": m, "label": LABELS[m], "gap": float(gap), "loss": c["loss"][0],
                     "weight": c["weight"][0], "stop_gap": where,
                     "state": _state(c["weight"][0], 0.0 if where is None else _STOP_TOL * beta),
                     "note": note})
    return rows


def summary_html(rows: list[dict[str, Any]], beta: float | None = None) -> str:
    """An HTML table of `summary_at` rows, each method's name in its plot colour."""
    body = "".join(
        f"<tr><td style='color:{COLORS[r['method']]}'><b>{html.escape(r['label'])}</b></td>"
        f"<td style='text-align:right'>{r['loss']:.4g}</td><td style='text-align:right'>{r['weight']:.4g}"
        f"</td><td>{r['state']}</td><td>{html.escape(r['note'])}</td></tr>" for r in rows)
    head = f"Δ = {rows[0]['gap']:.4g}" + (f", β = {beta:.4g}" if beta is not None else "") if rows else ""
    return (f"<div style='font-family:sans-serif'><p><b>{head}</b></p><table>"
            "<tr><th>method</th><th>loss</th><th>weight −dL/dΔ</th><th>now</th><th>stops pushing</th></tr>"
            f"{body}</table></div>")


def _y_range(curves: dict[str, dict[str, list[float]]], key: str, include_zero: bool = False) -> list[float]:
    scaled = [m for m in curves if m not in _UNSCALED] or list(curves)
    ys = [y for m in scaled for y in curves[m][key]] + ([0.0] if include_zero else [])
    lo, hi = min(ys), max(ys)
    pad = 0.05 * (hi - lo) or 0.1 * max(abs(hi), 1.0)
    return [lo - pad, hi + pad]


def _gap_points(curves: dict[str, dict[str, list[float]]], rows: list[dict[str, Any]], key: str
                ) -> dict[str, Any]:
    """x, y and colours of the current-Δ dots on one panel."""
    return {"x": [r["gap"] for r in rows], "y": [r[key] for r in rows],
            "marker": {"color": [COLORS[r["method"]] for r in rows], "size": 8}}


def _figure(curves: dict[str, dict[str, list[float]]], rows: list[dict[str, Any]], beta: float) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("loss L(Δ)", "weight −dL/dΔ  (> 0 pushes, < 0 pulls back)"))
    # Trace order (the widget relies on it): loss lines, loss dots, weight lines, weight dots.
    for col, key in ((1, "loss"), (2, "weight")):
        for m, c in curves.items():
            fig.add_trace(go.Scatter(x=c["gap"], y=c[key], mode="lines", name=LABELS[m], legendgroup=m,
                                     showlegend=col == 1, line={"color": COLORS[m], "width": 2}),
                          row=1, col=col)
        fig.add_trace(go.Scatter(mode="markers", name=f"{key} at Δ", showlegend=False, hoverinfo="x+y",
                                 **_gap_points(curves, rows, key)), row=1, col=col)
        fig.add_vline(x=rows[0]["gap"], line={"color": "gray", "dash": "dash", "width": 1}, name="gap",
                      row=1, col=col)
        fig.update_xaxes(title_text="Δ  (log-ratio gap, chosen − rejected)", row=1, col=col)
    fig.add_hline(y=0, line={"color": "#bbb", "width": 1}, row=1, col=2)
    fig.update_yaxes(range=_y_range(curves, "loss"), row=1, col=1)
    fig.update_yaxes(range=_y_range(curves, "weight", include_zero=True), row=1, col=2)
    fig.update_layout(title=f"preference losses at β = {beta:.4g}", height=420, margin={"t": 70, "b": 40},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def figure(beta: float, gap: float, *, gaps: Sequence[float] | None = None, methods: Sequence[str] = METHODS,
           gamma: float = 0.5, label_smoothing: float = 0.1) -> go.Figure:
    """Loss vs Δ and weight vs Δ side by side, one line per method,
    a dashed line and dots at the current Δ."""
    kw = {"methods": methods, "gamma": gamma, "label_smoothing": label_smoothing}
    curves = loss_curves(beta, gaps=gaps, **kw)
    return _figure(curves, summary_at(beta, gap, **kw), beta)


class PreferenceMathWidget:
    """Sliders for β (log scale), Δ, SimPO's γ and ε over a live two-panel figure and a summary table.

    `values` holds the current `summary_at` rows; `static_html()` the table for a headless run; `fig` is the
    FigureWidget (updated in place) and `widget` the VBox to display.
    """

    def __init__(self, beta: float = 0.1, gap: float = 5.0, *, gamma: float = 0.5,
                 label_smoothing: float = 0.1,
                 methods: Sequence[str] = METHODS, gaps: Sequence[float] | None = None):
        self.methods = tuple(methods)
        self.gaps = default_gaps() if gaps is None else [float(g) for g in gaps]
        _check(beta, gamma, label_smoothing, self.methods)
        lo, hi = min(self.gaps), max(self.gaps)
        self.beta = widgets.FloatLogSlider(value=beta, base=10, min=-2, max=1, step=0.01, description="β",
                                           readout_format=".3g", continuous_update=False)
        self.gap = widgets.FloatSlider(value=min(max(gap, lo), hi), min=lo, max=hi, step=0.1, description="Δ")
        self.gamma = widgets.FloatSlider(value=gamma, min=0.0, max=5.0, step=0.05, description="SimPO γ",
                                         continuous_update=False)
        self.label_smoothing = widgets.FloatSlider(value=label_smoothing, min=0.0, max=0.45, step=0.01,
                                                   description="ε", continuous_update=False)
        self.table = widgets.HTML()
        self._curves = self._compute_curves()
        self.values: list[dict[str, Any]] = self._summary()
        self.fig = go.FigureWidget(_figure(self._curves, self.values, self.beta.value))
        self.beta.observe(self._on_curve_change, names="value")
        self.gamma.observe(self._on_curve_change, names="value")
        self.label_smoothing.observe(self._on_curve_change, names="value")
        self.gap.observe(self._on_gap_change, names="value")
        self.table.value = summary_html(self.values, self.beta.value)
        self.widget = widgets.VBox([widgets.HBox([self.beta, self.gap]),
                                    widgets.HBox([self.gamma, self.label_smoothing]), self.fig, self.table])

    def _kwargs(self) -> dict[str, Any]:
        return {"methods": self.methods, "gamma": self.gamma.value,
                "label_smoothing": self.label_smoothing.value}

    def _compute_curves(self) -> dict[str, dict[str, list[float]]]:
        return loss_curves(self.beta.value, gaps=self.gaps, **self._kwargs())

    def _summary(self) -> list[dict[str, Any]]:
        return summary_at(self.beta.value, self.gap.value, **self._kwargs())

    def _on_curve_change(self, _change: Any = None) -> None:
        # β, γ and ε reshape every curve; Δ alone only moves the marker, so it skips this recompute.
        self._curves = self._compute_curves()
        self._refresh(redraw_curves=True)

    def _on_gap_change(self, _change: Any = None) -> None:
        self._refresh(redraw_curves=False)

    def _refresh(self, redraw_curves: bool) -> None:
        self.values = self._summary()
        n = len(self.methods)
        with self.fig.batch_update():
            for offset, key in ((0, "loss"), (n + 1, "weight")):
                if redraw_curves:
                    for i, m in enumerate(self.methods):
                        self.fig.data[offset + i].y = self._curves[m][key]
                dots = _gap_points(self._curves, self.values, key)
                self.fig.data[offset + n].update(x=dots["x"], y=dots["y"])
            for shape in self.fig.layout.shapes:
                if shape.name == "gap":
                    shape.update(x0=self.gap.value, x1=self.gap.value)
            if redraw_curves:
                self.fig.layout.yaxis.range = _y_range(self._curves, "loss")
                self.fig.layout.yaxis2.range = _y_range(self._curves, "weight", include_zero=True)
                self.fig.layout.title.text = f"preference losses at β = {self.beta.value:.4g}"
        self.table.value = summary_html(self.values, self.beta.value)

    def static_html(self) -> str:
        """The current summary table as static HTML (what a headless run can keep)."""
        return self.table.value

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def preference_math_widget(beta: float = 0.1, gap: float = 5.0, **kwargs: Any) -> PreferenceMathWidget:
    """The preference-loss maths widget (kwargs: gamma, label_smoothing, methods, gaps)."""
    return PreferenceMathWidget(beta, gap, **kwargs)
