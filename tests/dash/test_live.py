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


# ---- metric patterns and the RL panels ---------------------------------------------------------------

def test_glob_panel_grows_one_trace_per_matching_metric(clock):
    panels = [Panel("reward", ("reward", "rewards/*/mean"), ("heldout/*",)), Panel("KL", "kl")]
    dash = LiveDashboard(panels, progress=False)
    fig = dash.figure()
    assert subplot_y(fig, 1, 1) == {"reward": ()}  # a pattern with no match yet draws nothing
    dash.on_start({})
    dash.on_step(1, {"reward": 0.2, "rewards/correctness/mean": 0.1, "rewards/correctness/std": 0.3})
    dash.on_step(2, {"reward": 0.4, "rewards/correctness/mean": 0.2})
    dash.on_step(3, {"reward": 0.9, "rewards/correctness/mean": 0.3, "rewards/format/mean": 0.6})
    dash.on_eval(3, {"heldout/accuracy": 0.5})

    fig = dash.figure()
    assert subplot_y(fig, 1, 1) == {"reward": (0.2, 0.4, 0.9), "correctness": (0.1, 0.2, 0.3),
                                    "format": (0.6,), "eval accuracy": (0.5,)}
    assert [t.name for t in fig.select_traces(row=1, col=1)] == ["reward", "correctness", "format",
                                                                 "eval accuracy"]
    assert tuple(next(fig.select_traces(selector={"name": "format"})).x) == (3,)
    assert subplot_y(fig, 1, 2) == {"kl": ()}  # the std series matches no pattern and is not drawn


def test_glob_labels_stay_distinct_and_a_metric_can_match_in_two_panels(clock):
    panels = [Panel("reward", ("rewards/*/mean", "rewards/*/std")), Panel("means", ("rewards/*/mean",)),
              Panel("explicit", ("rewards/a/mean", "rewards/*/mean"))]
    dash = LiveDashboard(panels, progress=False)
    dash.on_step(1, {"rewards/a/mean": 1.0, "rewards/a/std": 0.5, "rewards/b/mean": 2.0})
    fig = dash.figure()
    assert subplot_y(fig, 1, 1) == {"a": (1.0,), "rewards/a/std": (0.5,), "b": (2.0,)}
    assert subplot_y(fig, 1, 2) == {"a": (1.0,), "b": (2.0,)}
    # A metric named outright is not drawn a second time by the panel's pattern.
    assert [t.name for t in fig.select_traces(row=2, col=1)] == ["rewards/a/mean", "b"]


def test_live_widget_adds_pattern_traces_as_they_arrive(kernel, clock):
    shown, handles = kernel
    panels = [Panel("reward", ("reward",)), Panel("per function", ("rewards/*/mean",))]
    dash = LiveDashboard(panels, update_every_s=0.0, progress=False)
    dash.on_start({})
    widget = shown[0]
    assert [t.name for t in widget.data] == ["reward"]
    dash.on_step(1, {"reward": 0.1, "rewards/correctness/mean": 0.0})
    assert [t.name for t in widget.data] == ["reward", "correctness"]
    dash.on_step(2, {"reward": 0.2, "rewards/correctness/mean": 0.5})
    dash.on_step(3, {"reward": 0.3, "rewards/correctness/mean": 1.0, "rewards/format/mean": 0.25})
    assert [t.name for t in widget.data] == ["reward", "correctness", "format"]
    assert len(shown) == 1  # traces are added to the displayed widget, never a new display
    by_name = {t.name: t for t in widget.data}
    assert tuple(by_name["correctness"].y) == (0.0, 0.5, 1.0) and tuple(by_name["format"].x) == (3,)
    # Both expanded traces sit in the second subplot, beside the reward panel.
    assert by_name["correctness"].xaxis == by_name["format"].xaxis == "x2"
    assert by_name["reward"].xaxis == "x"
    dash.on_end({})
    (static,) = handles[0].updates
    assert subplot_y(static, 1, 2) == {"correctness": (0.0, 0.5, 1.0), "format": (0.25,)}


def trl_grpo_log(step: int) -> dict:
    """Every metric RL stages send on a step, with TRL's GRPO names and PPO's extra ones."""
    return {"loss": 0.01 * step, "reward": 0.5, "reward_std": 0.2, "rewards/correctness/mean": 0.4,
            "rewards/correctness/std": 0.49, "rewards/format/mean": 0.9, "rewards/format/std": 0.3,
            "kl": 0.002 * step, "entropy": 1.2, "clip_ratio/region_mean": 0.05,
            "completions/mean_length": 37.0,
            "completions/clipped_ratio": 0.25, "frac_reward_zero_std": 0.5, "learning_rate": 1e-5,
            "num_tokens": 1000.0 * step}


def test_rl_panels_draw_every_rl_metric(clock):
    dash = LiveDashboard(live.RL_PANELS, title="grpo", progress=False)
    dash.on_start({"max_steps": 2})
    for step in (1, 2):
        dash.on_step(step, trl_grpo_log(step))
    dash.on_eval(2, {"heldout/accuracy": 0.35})
    fig = dash.figure()

    drawn: dict[str, set[str]] = {}
    for index, panel in enumerate(dash.panels):
        traces = list(fig.select_traces(row=index // 2 + 1, col=index % 2 + 1))
        drawn[panel.title] = {t.name for t in traces if t.y}
        assert drawn[panel.title], f"panel {panel.title!r} got no data"
    assert "no data" not in [a.text for a in fig.layout.annotations]
    assert drawn["reward per function"] == {"correctness", "format"}
    assert {"reward", "reward_std"} <= drawn["reward (mean, std over completions)"]
    assert drawn["held-out accuracy"] == {"eval heldout/accuracy"}
    names = {name for panel in live.RL_PANELS for name in panel.metrics + panel.eval_metrics}
    for metric in ("kl", "entropy", "clip_ratio/region_mean", "clip_fraction", "completions/mean_length",
                   "completions/clipped_ratio", "frac_reward_zero_std", "loss", "value_loss"):
        assert metric in names


def test_rl_panels_take_ppo_names(clock):
    dash = LiveDashboard(live.RL_PANELS, progress=False)
    dash.on_step(1, {"reward": 0.1, "kl": 0.01, "clip_fraction": 0.12, "value_loss": 0.7, "kl_coef": 0.05})
    fig = dash.figure()
    titles = [p.title for p in live.RL_PANELS]
    clip = titles.index("clip fraction")
    loss = titles.index("loss")
    assert subplot_y(fig, clip // 2 + 1, clip % 2 + 1)["clip_fraction"] == (0.12,)
    assert subplot_y(fig, loss // 2 + 1, loss % 2 + 1)["value_loss"] == (0.7,)


def test_each_panel_has_its_own_legend_inside_its_subplot(clock, kernel):
    panels = [Panel("loss", ("loss",), ("loss",)), Panel("reward per function", "rewards/*/mean")]
    dash = LiveDashboard(panels, update_every_s=0.0, progress=False)
    dash.on_start({})
    dash.on_step(1, {"loss": 2.0, "rewards/format/mean": 0.5})
    dash.on_eval(1, {"loss": 2.5})
    dash.on_step(2, {"loss": 1.5, "rewards/format/mean": 0.6, "rewards/answer/mean": 0.1})
    for fig in (dash.figure(), dash._widget):
        by_legend = {}
        for trace in fig.data:
            by_legend.setdefault(trace.legend, []).append(trace.name)
        assert by_legend == {"legend": ["loss", "eval loss"], "legend2": ["format", "answer"]}
        # Each key sits at its own subplot's top-right corner, not in one list beside the figure.
        assert fig.layout.legend2.x == fig.layout.xaxis2.domain[1]
        assert fig.layout.legend.x == fig.layout.xaxis.domain[1] != fig.layout.legend2.x
