"""Tests for the preference-loss maths widget (labkit.dash.preference_math): closed forms, the module
docstring's claims about where each loss stops pushing, the figure, and the widget driven headless."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from labkit.dash import preference_math as M  # noqa: E402
from labkit.errors import ConfigError  # noqa: E402

GAPS = [-20.0, -7.5, -1.0, 0.0, 0.3, 2.0, 4.0, 9.0, 15.0, 25.0, 40.0]


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def curves(beta: float, **kw):
    return M.loss_curves(beta, gaps=GAPS, **kw)


def close(a, b, tol=1e-9):
    return a == pytest.approx(b, rel=tol, abs=tol)


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0])
def test_dpo_closed_form_and_never_stops(beta):
    c = curves(beta)["dpo"]
    assert c["gap"] == GAPS
    for d, loss, w in zip(c["gap"], c["loss"], c["weight"]):
        assert close(loss, -math.log(sig(beta * d)))
        assert close(w, beta * sig(-beta * d))
    # Decays smoothly but stays strictly positive, even far past any sensible margin.
    assert all(w > 0 for w in c["weight"])
    assert all(a > b for a, b in zip(c["weight"], c["weight"][1:]))


def test_dpo_at_zero_gap_is_log_two():
    row = next(r for r in M.summary_at(0.3, 0.0) if r["method"] == "dpo")
    assert close(row["loss"], math.log(2)) and close(row["weight"], 0.3 / 2)


def test_dpo_weight_positive_at_large_beta_gap():
    # βΔ = 400: σ(-400) ~ 1e-174, still > 0 in float64.
    (row,) = M.summary_at(10.0, 40.0, methods=("dpo",))
    assert 0 < row["weight"] < 1e-150 and row["state"] == "pushing" and row["stop_gap"] is None


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_hinge_stops_dead_at_beta_gap_one(beta):
    c = curves(beta)["hinge"]
    for d, loss, w in zip(c["gap"], c["loss"], c["weight"]):
        assert close(loss, max(0.0, 1 - beta * d))
        if beta * d < 1 - 1e-9:
            assert close(w, beta)
        elif beta * d > 1 + 1e-9:
            assert w == 0.0
    (row,) = M.summary_at(beta, 1 / beta + 1, methods=("hinge",))
    assert row["state"] == "stopped" and close(row["stop_gap"], 1 / beta)


@pytest.mark.parametrize("beta", [0.1, 0.25])
def test_ipo_regresses_to_half_inverse_beta_and_pulls_back(beta):
    target = 1 / (2 * beta)
    c = curves(beta)["ipo"]
    for d, loss, w in zip(c["gap"], c["loss"], c["weight"]):
        assert close(loss, (d - target) ** 2)
        assert close(w, -2 * (d - target))
    rows = {r["method"]: r for r in M.summary_at(beta, target)}
    assert abs(rows["ipo"]["weight"]) < 1e-9 and close(rows["ipo"]["loss"], 0.0)
    assert close(rows["ipo"]["stop_gap"], target)
    (beyond,) = M.summary_at(beta, target + 1, methods=("ipo",))
    assert beyond["weight"] < 0 and beyond["state"] == "pulling back"


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_simpo_is_dpo_shifted_by_gamma(gamma):
    beta = 0.2
    c = curves(beta, gamma=gamma)["simpo"]
    for d, loss, w in zip(c["gap"], c["loss"], c["weight"]):
        assert close(loss, -math.log(sig(beta * d - gamma)))
        assert close(w, beta * sig(gamma - beta * d))
    shifted = M.loss_curves(beta, gaps=[g - gamma / beta for g in GAPS], methods=("dpo",))["dpo"]
    assert c["weight"] == pytest.approx(shifted["weight"], rel=1e-9)
    assert all(w > 0 for w in c["weight"])


def test_cdpo_weight_crosses_zero_and_goes_negative():
    beta, eps = 0.1, 0.1
    c = curves(beta, label_smoothing=eps)["cdpo"]
    for d, w in zip(c["gap"], c["weight"]):
        z = beta * d
        assert close(w, beta * ((1 - eps) * sig(-z) - eps * sig(z)))
    cross = math.log((1 - eps) / eps) / beta
    rows = {r["method"]: r for r in M.summary_at(beta, cross, label_smoothing=eps)}
    assert close(rows["cdpo"]["stop_gap"], cross) and abs(rows["cdpo"]["weight"]) < 1e-12
    before = M.summary_at(beta, cross - 1, methods=("cdpo",), label_smoothing=eps)[0]
    after = M.summary_at(beta, cross + 1, methods=("cdpo",), label_smoothing=eps)[0]
    assert before["weight"] > 0 and after["weight"] < 0 and after["state"] == "pulling back"
    # With ε = 0 cDPO is DPO.
    plain = curves(beta, label_smoothing=0.0)
    assert plain["cdpo"]["loss"] == pytest.approx(plain["dpo"]["loss"], rel=1e-12)


def test_robust_dpo_never_stops_and_loss_unbounded_below():
    beta, eps = 0.1, 0.2
    floor = beta * eps / (1 - 2 * eps)
    both = curves(beta, label_smoothing=eps)
    c = both["robust"]
    assert all(r > d for r, d in zip(c["weight"], both["dpo"]["weight"]))  # harder than DPO everywhere
    for d, loss, w in zip(c["gap"], c["loss"], c["weight"]):
        z = beta * d
        assert close(loss, (-(1 - eps) * math.log(sig(z)) + eps * math.log(sig(-z))) / (1 - 2 * eps))
        assert w > floor
    far = M.loss_curves(beta, gaps=[400.0, 500.0], methods=("robust",), label_smoothing=eps)["robust"]
    assert far["weight"][1] == pytest.approx(floor, rel=1e-9)
    # Linear in Δ with slope -floor: no lower bound.
    assert far["loss"][1] < far["loss"][0] < 0
    assert (far["loss"][1] - far["loss"][0]) / 100 == pytest.approx(-floor, rel=1e-9)
    (row,) = M.summary_at(beta, 40.0, methods=("robust",), label_smoothing=eps)
    assert row["state"] == "pushing" and row["stop_gap"] is None and f"{floor:.4g}" in row["note"]


def test_kto_desirable_weight_peaks_at_zero_and_fades_both_ways():
    beta = 0.1
    c = curves(beta)["kto"]
    for d, loss, w in zip(c["gap"], c["loss"], c["weight"]):
        assert close(loss, 1 - sig(beta * d)) and 0 < loss < 1
        assert close(w, beta * sig(beta * d) * sig(-beta * d))
    (at0,) = M.summary_at(beta, 0.0, methods=("kto",))
    assert close(at0["weight"], beta / 4) and max(c["weight"]) == pytest.approx(beta / 4)
    left, right = M.loss_curves(beta, gaps=[-30.0, 30.0], methods=("kto",))["kto"]["weight"]
    assert close(left, right) and 0 < left < beta / 20


def test_summary_rows_have_one_per_method_with_fields():
    rows = M.summary_at(0.1, 5.0)
    assert [r["method"] for r in rows] == list(M.METHODS)
    for r in rows:
        assert set(r) == {"method", "label", "gap", "loss", "weight", "state", "stop_gap", "note"}
        assert r["gap"] == 5.0 and r["state"] in {"pushing", "stopped", "pulling back"}
    html = M.summary_html(rows, 0.1)
    assert all(M.LABELS[m].split()[0] in html for m in M.METHODS)


def test_figure_has_a_line_per_method_in_both_panels_and_a_gap_marker():
    fig = M.figure(0.1, 5.0)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 2 * len(M.METHODS)
    for axis in ("x", "x2"):
        panel = [t for t in lines if t.xaxis == axis]
        assert [t.name for t in panel] == [M.LABELS[m] for m in M.METHODS]
        assert [t.line.color for t in panel] == [M.COLORS[m] for m in M.METHODS]
    markers = [s for s in fig.layout.shapes if s.name == "gap"]
    assert len(markers) == 2 and all(s.x0 == s.x1 == 5.0 for s in markers)
    assert {s.xref for s in markers} == {"x", "x2"}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_beta_raises_config_error_naming_the_field(bad):
    for call in (lambda: M.loss_curves(bad), lambda: M.summary_at(bad, 1.0), lambda: M.figure(bad, 1.0),
                 lambda: M.PreferenceMathWidget(beta=bad)):
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.field == "beta" and "beta" in str(err.value)


def test_other_bad_inputs_name_their_field():
    with pytest.raises(ConfigError) as err:
        M.loss_curves(0.1, label_smoothing=0.5)
    assert err.value.field == "label_smoothing"
    with pytest.raises(ConfigError) as err:
        M.loss_curves(0.1, methods=("orpo",))
    assert err.value.field == "methods" and "ORPO" in str(err.value)
    with pytest.raises(ConfigError) as err:
        M.loss_curves(0.1, methods=("nope",))
    assert err.value.field == "methods"
    with pytest.raises(ConfigError) as err:
        M.loss_curves(0.1, gaps=[])
    assert err.value.field == "gaps"


def test_widget_updates_values_and_figure_headless():
    w = M.PreferenceMathWidget(gaps=M.default_gaps(41))
    assert w.beta.value == pytest.approx(0.1) and w.gap.value == 5.0
    assert [r["method"] for r in w.values] == list(M.METHODS)
    assert f"{w.values[0]['loss']:.4g}" in w.static_html()
    n = len(M.METHODS)

    w.beta.value = 0.5
    dpo = next(r for r in w.values if r["method"] == "dpo")
    assert close(dpo["loss"], -math.log(sig(0.5 * 5.0)))
    expected = M.loss_curves(0.5, gaps=w.gaps)
    for i, m in enumerate(M.METHODS):
        assert list(w.fig.data[i].y) == pytest.approx(expected[m]["loss"])
        assert list(w.fig.data[n + 1 + i].y) == pytest.approx(expected[m]["weight"])
    assert "β = 0.5" in w.static_html() and f"{dpo['loss']:.4g}" in w.static_html()

    w.gap.value = 12.0
    assert all(r["gap"] == 12.0 for r in w.values)
    assert all(s.x0 == 12.0 for s in w.fig.layout.shapes if s.name == "gap")
    assert list(w.fig.data[n].x) == [12.0] * n
    hinge = next(r for r in w.values if r["method"] == "hinge")
    assert hinge["state"] == "stopped"  # βΔ = 6 ≥ 1

    w.gamma.value = 2.0
    simpo = next(r for r in w.values if r["method"] == "simpo")
    assert close(simpo["loss"], -math.log(sig(0.5 * 12.0 - 2.0)))
    assert isinstance(w.widget, M.widgets.VBox) and w.fig in w.widget.children
