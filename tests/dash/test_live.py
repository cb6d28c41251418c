"""Tests for labkit.dash.live: headless collection, the live widget path, custom panels, throttling."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import pytest

from labkit.dash import live
from labkit.dash.live import SFT_PANELS, LiveDashboard, Panel
from labkit.runs.callbacks import Callbacks, read_jsonl


class Clock:
    """A controllable stand-in for live._now."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeHandle:
    def __init__(self):
        self.updates: list = []

    def update(self, obj):
        self.updates.append(obj)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(live, "_now", c)
    return c


@pytest.fixture
def kernel(monkeypatch):
    """Pretend to be in a Jupyter kernel; record what is displayed and the handles returned."""
    shown: list = []
    handles: list[FakeHandle] = []

    def fake_display(obj):
        shown.append(obj)
        handles.append(FakeHandle())
        return handles[-1]

    monkeypatch.setattr(live, "_in_kernel", lambda: True)
    monkeypatch.setattr(live, "_display", fake_display)
    return shown, handles


def sft_run(dash: LiveDashboard, clock: Clock, steps: int = 5) -> None:
    """A fake SFT run: one step per 2 s, 100 tokens per step, one eval after step 4."""
    dash.on_start({"max_steps": steps})
    for step in range(1, steps + 1):
        clock.t += 2.0
        dash.on_step(step, {"loss": 3.0 - 0.5 * step, "learning_rate": 1e-4 * step,
                            "grad_norm": 1.0 + step, "num_tokens": 100.0 * step, "epoch": step / steps})
        if step == 4:
            clock.t += 10.0  # evaluation time must not count against tokens/s
            dash.on_eval(step, {"loss": 1.5, "runtime": 10.0})
    dash.on_end({"global_step": steps, "train_loss": 1.2})


def subplot_y(fig: go.Figure, row: int, col: int) -> dict[str, tuple]:
    """{trace name: y} for the traces drawn in one subplot."""
    return {t.name: tuple(t.y) for t in fig.select_traces(row=row, col=col)}


def test_headless_collects_history_tokens_per_s_figure_and_log(tmp_path, clock, monkeypatch):
    shown = []
    monkeypatch.setattr(live, "_display", lambda obj: shown.append(obj))
    log = tmp_path / "run" / "events.jsonl"
    dash = LiveDashboard(log_path=log)
    sft_run(dash, clock)

    assert shown == []  # not in a kernel: nothing displayed
    steps = dash.history["step"]
    assert steps["loss"] == {"step": [1, 2, 3, 4, 5], "value": [2.5, 2.0, 1.5, 1.0, 0.5]}
    assert steps["learning_rate"]["value"] == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4, 5e-4])
    assert dash.history["eval"] == {"loss": {"step": [4], "value": [1.5]},
                                    "runtime": {"step": [4], "value": [10.0]}}
    # 100 tokens every 2 s from on_start on, including step 5 right after the 10 s eval.
    assert steps["tokens_per_s"] == {"step": [1, 2, 3, 4, 5], "value": [50.0] * 5}
    assert dash.summary == {"global_step": 5, "train_loss": 1.2}

    fig = dash.figure()
    assert type(fig) is go.Figure
    assert [a.text for a in fig.layout.annotations][: len(SFT_PANELS)] == [p.title for p in SFT_PANELS]
    assert subplot_y(fig, 1, 1) == {"loss": (2.5, 2.0, 1.5, 1.0, 0.5), "eval loss": (1.5,)}
    assert subplot_y(fig, 1, 2)["learning_rate"] == pytest.approx((1e-4, 2e-4, 3e-4, 4e-4, 5e-4))
    assert subplot_y(fig, 2, 1) == {"grad_norm": (2.0, 3.0, 4.0, 5.0, 6.0)}
    assert subplot_y(fig, 2, 2) == {"tokens_per_s": (50.0,) * 5}
    assert len(fig.data) == 5  # loss, eval loss, lr, grad norm, tokens/s

    events = read_jsonl(log)
    assert [e["event"] for e in events] == ["start"] + ["step"] * 4 + ["eval", "step", "end"]
    assert events[0]["max_steps"] == 5
    assert events[1]["loss"] == 2.5 and events[1]["num_tokens"] == 100.0 and events[1]["tokens_per_s"] == 50.0
    assert events[5]["step"] == 4 and events[5]["loss"] == 1.5
    assert events[-1]["step"] == 5 and events[-1]["train_loss"] == 1.2


def test_tokens_per_s_absent_without_num_tokens_and_on_resume(clock):
    dash = LiveDashboard()
    dash.on_start({})
    clock.t += 1
    dash.on_step(1, {"loss": 1.0})
    assert "tokens_per_s" not in dash.history["step"]
    fig = dash.figure()
    assert subplot_y(fig, 2, 2) == {"tokens_per_s": ()}
    assert "no data" in [a.text for a in fig.layout.annotations]

    # A resumed run's cumulative count includes earlier tokens: the first reading only sets the base.
    dash.on_start({"global_step": 50})
    clock.t += 1
    dash.on_step(51, {"num_tokens": 5000.0})
    clock.t += 4
    dash.on_step(52, {"num_tokens": 5200.0})
    assert dash.history["step"]["tokens_per_s"] == {"step": [52], "value": [50.0]}
    assert dash.history["step"]["num_tokens"]["step"] == [51, 52]  # history restarted at on_start
    clock.t += 2
    dash.on_step(53, {"num_tokens": math.nan})  # skipped for the rate, not taken as the new base
    clock.t += 2
    dash.on_step(54, {"num_tokens": 5400.0})
    assert dash.history["step"]["tokens_per_s"] == {"step": [52, 54], "value": [50.0, 50.0]}


def test_live_widget_updates_in_place_and_ends_static(kernel, clock):
    shown, handles = kernel
    dash = LiveDashboard(update_every_s=0.0, progress=False)
    dash.on_start({"max_steps": 3})
    assert len(shown) == 1 and isinstance(shown[0], go.FigureWidget)
    widget = shown[0]
    loss_trace = widget.data[0]
    assert loss_trace.name == "loss" and tuple(loss_trace.x or ()) == ()

    lengths = []
    for step in (1, 2, 3):
        clock.t += 1.0
        dash.on_step(step, {"loss": 1.0 / step, "num_tokens": 10.0 * step})
        lengths.append(len(widget.data[0].x))
    assert lengths == [1, 2, 3]
    assert widget.data[0] is loss_trace and tuple(loss_trace.y) == pytest.approx((1.0, 0.5, 1 / 3))
    assert tuple(widget.data[-1].y) == (10.0, 10.0, 10.0)  # tokens/s

    dash.on_eval(3, {"loss": 0.4})
    assert tuple(widget.data[1].y) == (0.4,)
    assert widget.data[1].mode == "markers"
    dash.on_end({"global_step": 3})

    assert len(shown) == 1  # displayed once, never re-displayed
    (static,) = handles[0].updates
    assert isinstance(static, go.Figure) and not isinstance(static, go.FigureWidget)
    assert tuple(static.data[0].y) == tuple(loss_trace.y)


def test_static_figure_displays_through_its_mime_bundle():
    """handle.update(fig) replaces the widget only if IPython formats fig rather than fig showing itself."""
    from IPython.core.formatters import DisplayFormatter

    dash = LiveDashboard()
    dash.on_step(1, {"loss": 1.0})
    static = dash._figure(live._StaticFigure)
    assert isinstance(static, go.Figure)
    data, _ = DisplayFormatter().format(static)
    assert "text/plain" in data and len(data) > 1  # a real bundle, not {} from _ipython_display_


def test_throttle_skips_intermediate_redraws_but_not_eval_or_end(kernel, clock):
    shown, handles = kernel
    dash = LiveDashboard(update_every_s=1000.0, progress=False)
    dash.on_start({})
    widget = shown[0]
    for step in range(1, 6):
        clock.t += 1.0
        dash.on_step(step, {"loss": float(step)})
    assert tuple(widget.data[0].x or ()) == ()  # data collected, not drawn
    assert len(dash.history["step"]["loss"]["step"]) == 5
    dash.on_eval(5, {"loss": 2.0})
    assert len(widget.data[0].x) == 5
    clock.t += 1.0
    dash.on_step(6, {"loss": 6.0})
    assert len(widget.data[0].x) == 5
    dash.on_end({})
    assert len(widget.data[0].x) == 6 and len(handles[0].updates) == 1
    clock.t += 2000.0  # once the interval has passed a step redraws by itself
    dash.on_start({})
    clock.t += 2000.0
    dash.on_step(1, {"loss": 1.0})
    assert len(shown[1].data[0].x) == 1


def test_custom_panels_missing_and_non_numeric_metrics(clock, kernel):
    shown, handles = kernel
    panels = [Panel("rewards", ["rewards/chosen", "rewards/rejected"], "rewards/chosen"),
              Panel("KL", "kl", log_y=True), "accuracy"]
    dash = LiveDashboard(panels, title="dpo", update_every_s=0.0, progress=False)
    assert dash.panels[1] == Panel("KL", ("kl",), (), True)
    assert dash.panels[2] == Panel("accuracy", ("accuracy",), ("accuracy",))
    dash.on_start({})
    dash.on_step(1, {"rewards/chosen": 0.5, "rewards/rejected": "n/a", "kl": [1, 2], "accuracy": None,
                     "note": object(), "margin": 0.25})
    dash.on_step(2, {"rewards/chosen": 0.75, "kl": 0.01})
    dash.on_step("not a step", {"kl": 1.0})  # a malformed step is skipped too
    dash.on_eval(2, {"rewards/chosen": 0.6, "accuracy": math.nan})
    dash.on_end({})

    assert set(dash.history["step"]) == {"rewards/chosen", "kl", "margin"}
    assert dash.history["step"]["kl"] == {"step": [2], "value": [0.01]}
    assert math.isnan(dash.history["eval"]["accuracy"]["value"][0])
    fig = dash.figure()
    assert fig.layout.title.text == "dpo"
    assert fig.layout.yaxis2.type == "log"
    assert subplot_y(fig, 1, 1) == {"rewards/chosen": (0.5, 0.75), "rewards/rejected": (),
                                    "eval rewards/chosen": (0.6,)}
    assert subplot_y(fig, 1, 2) == {"kl": (0.01,)}
    assert len(shown) == 1 and len(handles[0].updates) == 1


def test_works_behind_callbacks_dispatcher_and_rejects_bad_panels(clock):
    dash = LiveDashboard()
    cbs = Callbacks([dash])
    cbs.on_start({"max_steps": 2})
    cbs.on_step(1, {"loss": 2.0})
    cbs.on_end({"global_step": 1})
    assert dash.history["step"]["loss"]["value"] == [2.0]
    with pytest.raises(TypeError):
        LiveDashboard([])
    with pytest.raises(TypeError):
        LiveDashboard([("loss",)])


def test_drawing_failure_warns_once_and_never_raises(kernel, clock, monkeypatch):
    shown, handles = kernel
    dash = LiveDashboard(update_every_s=0.0)
    dash.on_start({"max_steps": 3})

    def broken(*args, **kwargs):
        raise RuntimeError("comm closed")

    monkeypatch.setattr(shown[0], "batch_update", broken)
    with pytest.warns(RuntimeWarning, match="comm closed"):
        dash.on_step(1, {"loss": 1.0})
        dash.on_step(2, {"loss": 0.5})
        dash.on_end({"global_step": 2})
    assert dash.history["step"]["loss"]["value"] == [1.0, 0.5]
    assert len(handles[0].updates) == 1  # the static figure still replaces the broken widget
