"""RL systems views: Gantt bars and utilisation from recorded events, sweep rows, the planner widget."""

from __future__ import annotations

from labkit.dash.rlsys import gantt, planner_widget, summary_rows, sweep_figure, sync_rows, utilisation
from labkit.rlsys.loop import RunLog
from labkit.rlsys.planner import plan


def fake_log(staleness: int) -> RunLog:
    log = RunLog({"mode": "disaggregated", "staleness": staleness})
    log.events = [
        {"lane": "worker 0", "kind": "generate", "start": 0.0, "end": 4.0},
        {"lane": "trainer", "kind": "train", "start": 4.0, "end": 6.0},
        {"lane": "worker 0", "kind": "generate", "start": 4.0, "end": 8.0},
        {"lane": "trainer", "kind": "sync", "start": 6.0, "end": 6.5},
        {"lane": "trainer", "kind": "train", "start": 8.0, "end": 10.0},
    ]
    log.steps = [{"step": i, "time": 6.0 + 4 * i, "reward_mean": 0.1 * i, "lags": [i], "tokens": 32,
                  "groups": [i], "versions": [{0: 32}]} for i in range(2)]
    log.evals = [{"step": 0, "time": 0.0, "accuracy": 0.1}, {"step": 2, "time": 10.0, "accuracy": 0.2}]
    log.syncs = [{"version": 1, "kind": "adapter", "bytes": 2 ** 20, "tensors": 4, "trainer_s": 0.5,
                  "worker_s": [0.25]}]
    log.wall_s = 10.0
    return log


def test_utilisation_is_busy_time_over_the_working_span():
    assert utilisation(fake_log(1)) == {"trainer": 0.4, "worker 0": 0.8}


def test_gantt_has_a_bar_per_event_on_its_lane():
    fig = gantt(fake_log(1))
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"generate", "train", "sync"}
    assert list(bars["generate"].base) == [0.0, 4.0] and list(bars["generate"].x) == [4.0, 4.0]
    assert set(bars["train"].y) == {"trainer"}


def test_sweep_rows_and_figure_carry_every_run():
    logs = [fake_log(0), fake_log(4)]
    rows = summary_rows(logs)
    assert [r["staleness"] for r in rows] == [0, 4]
    assert rows[0]["sync_MB"] == 1.0 and rows[0]["busy trainer"] == 0.4
    assert len(sweep_figure(logs).data) == 4       # accuracy and reward line per run
    assert sync_rows(logs)[0] | {"trainer_s": 0} == {"sync": "adapter", "version": 1, "tensors": 4, "MB": 1.0,
                                                     "trainer_s": 0, "worker_s": 0.25}


def test_planner_widget_follows_its_controls():
    w = planner_widget("qwen2.5-0.5b", method="lora", seq_len=256)
    before = w.current().total
    w.method.value = "qlora"
    assert w.current().total < before
    assert f"{w.current().total / 2 ** 30:.3f}" in w.static_html()
    assert w.current().total == plan("qwen2.5-0.5b", method="qlora", seq_len=256, gpu="l4").total
