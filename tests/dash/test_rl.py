"""Tests for labkit.dash.rl: rollout records, the rollout table and browser, the reward playground,
RL figures."""

from __future__ import annotations

import json
import math
import re

import plotly.graph_objects as go
import pytest

pytest.importorskip("ipywidgets")

from labkit.dash import rl  # noqa: E402
from labkit.errors import ConfigError, DataError  # noqa: E402
from labkit.runs.callbacks import JsonlLogger  # noqa: E402


def rollout(step, group, completion, reward, advantage, *, prompt=None, truncated=False, **rewards):
    return {"step": step, "group": group, "prompt": prompt or f"prompt {group}", "completion": completion,
            "rewards": rewards or {"correctness": reward}, "reward": reward, "advantage": advantage,
            "tokens": len(completion.split()), "truncated": truncated}


@pytest.fixture
def rollouts():
    """Two steps; step 2 has group 0 (a reward spread) and group 1 (all rewards equal)."""
    return [
        rollout(1, 0, "one", 0.0, -0.5),
        rollout(1, 0, "two", 1.0, 0.5),
        rollout(2, 0, "x = 3 <b>& y</b>\nso #### 7", 2.0, 1.5, prompt="What is 3 + 4?\nShow work.",
                correctness=1.0, format=1.0),
        rollout(2, 0, "seven", 1.0, 0.25, correctness=1.0, format=0.0),
        rollout(2, 0, "no idea " * 20, 0.0, -1.75, truncated=True, correctness=0.0, format=0.0),
        rollout(2, 1, "same A", 1.0, 0.0),
        rollout(2, 1, "same B", 1.0, 0.0),
    ]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def cells(html: str, cls: str) -> list[str]:
    """The style attribute of each <td class=cls>."""
    return re.findall(rf"<td style='([^']*)' class='{cls}'>", html)


# ---- records -----------------------------------------------------------------------------------------

def test_load_rollouts_from_list_path_and_directory(tmp_path, rollouts):
    from_list = rl.load_rollouts(rollouts)
    assert [r["completion"] for r in from_list] == [r["completion"] for r in rollouts]
    path = write_jsonl(tmp_path / "rollouts.jsonl", rollouts)
    with path.open("a") as f:
        f.write('{"step": 3, "group": 0, "prom')  # a line the run is still writing
    assert rl.load_rollouts(path) == from_list == rl.load_rollouts(tmp_path)
    sparse = rl.load_rollouts([{"step": 4, "group": 1.0, "prompt": "p", "completion": "c",
                                "rewards": {"f": None, "g": "nan"}, "extra": "kept"}])[0]
    assert sparse["step"] == 4 and sparse["group"] == 1 and sparse["extra"] == "kept"
    assert sparse["rewards"]["f"] is None and math.isnan(sparse["rewards"]["g"])
    assert sparse["reward"] is None and sparse["advantage"] is None and sparse["truncated"] is False


def test_load_rollouts_names_file_row_and_field(tmp_path, rollouts):
    bad = dict(rollouts[1])
    del bad["completion"]
    path = write_jsonl(tmp_path / "r.jsonl", [rollouts[0], bad])
    with pytest.raises(DataError, match=r"r\.jsonl, row 1, field 'completion': missing"):
        rl.load_rollouts(path)
    with pytest.raises(DataError, match=r"row 0, field 'rewards\.correctness': must be a number"):
        rl.load_rollouts([{**rollouts[0], "rewards": {"correctness": "high"}}])
    with pytest.raises(DataError, match="field 'step': must be an integer"):
        rl.load_rollouts([{**rollouts[0], "step": 1.5}])
    path.write_text("not json\n" + json.dumps(rollouts[0]) + "\n")
    with pytest.raises(DataError, match="row 0: not a JSON object"):
        rl.load_rollouts(path)
    with pytest.raises(DataError, match="no such file"):
        rl.load_rollouts(tmp_path / "missing.jsonl")


# ---- the table -------------------------------------------------------------------------------------

def test_rollout_html_escapes_keeps_newlines_and_shows_one_step(rollouts):
    page = rl.rollout_html(rollouts, step=2)
    assert "<b>& y</b>" not in page and "x = 3 &lt;b&gt;&amp; y&lt;/b&gt;\nso #### 7" in page
    assert "white-space:pre-wrap" in page
    assert page.count("What is 3 + 4?\nShow work.") == 1  # the prompt once for its group of three
    assert "rowspan='3'" in page and "rowspan='2'" in page
    assert "one" not in re.sub(r"<[^>]+>", " ", page).split()  # step 1's completions are not shown
    for header in ("correctness", "format", "total", "advantage", "tokens", "truncated"):
        assert f">{header}</th>" in page
    assert "2 groups · 5 completions" in page and "1 truncated" in page
    assert page.count(">yes</b>") == 1
    assert "all equal: no signal" in page  # group 1: every reward 1.0


def test_rollout_html_colours_advantages_by_sign_and_magnitude(rollouts):
    page = rl.rollout_html(rollouts, step=2, group=0)
    styles = cells(page, "advantage")
    assert len(styles) == 3
    big_pos, small_pos, big_neg = styles  # advantages +1.5, +0.25, -1.75 in table order
    assert "rgba(46, 160, 67" in big_pos and "rgba(46, 160, 67" in small_pos and "rgba(218, 54, 51" in big_neg

    def alpha(style):
        return float(re.search(r"rgba\(\d+, \d+, \d+, ([\d.]+)\)", style)[1])

    assert alpha(big_neg) > alpha(big_pos) > alpha(small_pos)
    assert ">+1.5<" in page and ">-1.75<" in page
    # A zero advantage gets no colour at all.
    assert all("background" not in s for s in cells(rl.rollout_html(rollouts, 2, group=1), "advantage"))
    assert rl.advantage_color(1.0, 1.0) == "rgba(46, 160, 67, 0.75)"
    assert rl.advantage_color(math.nan, 1.0) is None


def test_rollout_html_filters_groups_and_explains_missing_selections(rollouts):
    group1 = rl.rollout_html(rollouts, 2, group=1)
    assert "same A" in group1 and "seven" not in group1 and "group 1" in group1
    missing = rl.rollout_html(rollouts, 9)
    assert "no rollouts at step 9" in missing and "1, 2" in missing
    assert "no rollouts for group 5" in rl.rollout_html(rollouts, 2, group=5)
    assert "no rollouts recorded" in rl.rollout_html([], 1)


# ---- the browser -----------------------------------------------------------------------------------

def test_browser_from_list_starts_on_last_step_and_rerenders(monkeypatch, rollouts):
    b = rl.RolloutBrowser(rollouts)
    assert list(b.step.options) == [1, 2] and b.step.value == 2
    assert [label for label, _ in b.group.options] == ["all", "0", "1"] and b.group.value == "all"
    assert "seven" in b.out.value and "same A" in b.out.value
    assert b.static_html() == b.out.value

    b.group.value = 1
    assert "same A" in b.out.value and "seven" not in b.out.value
    renders = []
    step_html = rl._step_html
    monkeypatch.setattr(rl, "_step_html", lambda *a: renders.append(a[1:3]) or step_html(*a))
    b.step.value = 1
    assert renders == [(1, None)]  # one step change renders once, even though the group list changed too
    assert "two" in b.out.value and "seven" not in b.out.value
    assert [label for label, _ in b.group.options] == ["all", "0"] and b.group.value == "all"
    b.group.value = 0
    b.step.value = 2
    assert b.group.value == 0 and "seven" in b.out.value and "same A" not in b.out.value
    # The static copy is always the last step, whatever the controls show.
    assert "same A" in b.static_html()

    shown = b.show(1)
    assert type(shown).__name__ == "HTML" and "two" in shown.data and "seven" not in shown.data


def test_browser_from_jsonl_path(tmp_path, rollouts):
    path = write_jsonl(tmp_path / "rollouts.jsonl", rollouts)
    b = rl.RolloutBrowser(str(path))
    assert list(b.step.options) == [1, 2] and "seven" in b.out.value
    b.step.value = 1
    assert "two" in b.out.value
    with pytest.raises(DataError, match="no rollout records"):
        rl.RolloutBrowser(write_jsonl(tmp_path / "empty.jsonl", []))


@pytest.fixture
def displayed(monkeypatch):
    """Capture what IPython would display: (object, raw flag)."""
    import IPython.display

    out: list = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, **kw: out.append((obj, raw)))
    return out


def test_browser_display_carries_widget_and_static_html(monkeypatch, displayed, rollouts):
    b = rl.RolloutBrowser(rollouts)
    b.step.value = 1
    monkeypatch.setattr(rl, "_in_kernel", lambda: True)
    b._ipython_display_()
    (bundle, raw), = displayed
    assert raw and bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == b.widget.model_id
    assert bundle["text/html"] == b.static_html() and "seven" in bundle["text/html"]

    monkeypatch.setattr(rl, "_in_kernel", lambda: False)  # no front end: the table alone
    b._ipython_display_()
    assert type(displayed[1][0]).__name__ == "HTML" and displayed[1][0].data == b.static_html()


# ---- the reward playground ---------------------------------------------------------------------------

def hashes(prompts, completions, **kwargs):
    return [float("####" in c) for c in completions]


def matches(prompts, completions, answer, **kwargs):
    return [float(c.strip().endswith(a)) for c, a in zip(completions, answer)]


def test_reward_playground_scores_initial_and_edited_answers(monkeypatch, displayed):
    p = rl.reward_playground([hashes, matches], "What is 40 + 14?", ["54", "#### 54", "It is\n45"],
                             answer="54")
    assert p.text.value == "54\n---\n#### 54\n---\nIt is\n45"
    assert [(r["hashes"], r["matches"], r["total"]) for r in p.rows] == [(0, 1, 1), (1, 1, 2), (0, 0, 0)]
    static = p.static_html()
    assert "It is\n45" in static and ">hashes</th>" in static and ">matches</th>" in static

    p.text.value = "#### 54\n---\n  \n---\n<i>54</i>"
    assert p.candidates() == ["#### 54", "<i>54</i>"]  # empty blocks dropped
    p.button.click()
    assert [r["completion"] for r in p.rows] == ["#### 54", "<i>54</i>"]
    assert [r["total"] for r in p.rows] == [2.0, 0.0]
    assert "&lt;i&gt;54&lt;/i&gt;" in p.out.value and "<i>54</i>" not in p.out.value
    assert p.static_html() == static  # the headless copy stays the initial answers

    monkeypatch.setattr(rl, "_in_kernel", lambda: True)
    p._ipython_display_()
    assert displayed[0][0]["text/html"] == static


def test_reward_playground_reports_errors_in_the_output():
    p = rl.reward_playground([matches], "q", ["1", "2"], answer=["1", "2"])
    assert [r["matches"] for r in p.rows] == [1.0, 1.0]
    p.text.value = "1\n---\n2\n---\n3"
    with pytest.raises(ConfigError, match="answer.*one value per initial answer"):
        p.score()
    p.button.click()  # the button shows the reason instead of raising into the front end
    assert "ConfigError" in p.out.value
    assert p.score("") == [] and "no candidate answers" in p.out.value


# ---- figures -----------------------------------------------------------------------------------------

def rl_events():
    events = [{"event": "start", "step": 0}]
    for step in (1, 2, 3):
        events.append({"event": "step", "step": step, "reward": 0.2 * step,
                       "rewards/correctness/mean": 0.1 * step,
                       "rewards/format/mean": 0.5, "kl": 0.01 * step, "completions/mean_length": 30.0 + step,
                       "completions/clipped_ratio": 0.1})
    events += [{"event": "eval", "step": 0, "heldout/accuracy": 0.2},
               {"event": "eval", "step": 3, "heldout/accuracy": 0.45}, {"event": "end", "step": 3}]
    return events


def test_rl_curves_from_events_and_from_a_log(tmp_path):
    fig = rl.rl_curves(rl_events())
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"reward", "correctness", "format", "held-out accuracy", "kl", "completion length",
                            "truncation rate"}
    assert tuple(by_name["correctness"].y) == pytest.approx((0.1, 0.2, 0.3))
    assert tuple(by_name["held-out accuracy"].x) == (0, 3) and by_name["held-out accuracy"].mode == "markers"
    assert "not logged" not in [a.text for a in fig.layout.annotations]

    log = tmp_path / "metrics.jsonl"
    logger = JsonlLogger(log)
    logger.on_step(1, {"reward": 0.5, "loss": 0.1})
    logger.on_step(2, {"loss": 0.2})  # reward missing here: no gap point drawn
    logger.on_eval(2, {"heldout/accuracy": 0.3})
    fig = rl.rl_curves(tmp_path)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"reward", "held-out accuracy"} and tuple(by_name["reward"].x) == (1,)
    assert [a.text for a in fig.layout.annotations].count("not logged") == 4


def test_accuracy_vs_time_one_sorted_line_per_method():
    rows = [{"method": "grpo", "seconds": 30, "step": 10, "accuracy": 0.4},
            {"method": "grpo", "seconds": 0, "step": 0, "accuracy": 0.1},
            {"method": "rloo", "seconds": 25, "step": 10, "accuracy": 0.3}]
    fig = rl.accuracy_vs_time(rows)
    assert [t.name for t in fig.data] == ["grpo", "rloo"]
    assert tuple(fig.data[0].x) == (0, 30) and tuple(fig.data[0].y) == (0.1, 0.4)
    assert fig.layout.xaxis.title.text == "wall-clock seconds"
    assert [t.name for t in rl.accuracy_vs_time([{"seconds": 1, "accuracy": 0.5}]).data] == ["run"]
    with pytest.raises(DataError, match="row 1, field 'seconds'"):
        rl.accuracy_vs_time([rows[0], {"accuracy": 0.2}])


def test_compare_rl_bars_and_optional_kl():
    results = {"grpo": {"before": {"accuracy": 0.1}, "after": {"accuracy": 0.5, "kl": 0.03},
                        "train_seconds": 60.0},
               "rloo": {"before": {"accuracy": 0.1}, "after": {"accuracy": 0.4}, "train_seconds": 50.0}}
    fig = rl.compare_rl(results)
    assert [t.name for t in fig.data] == ["before", "after", "train seconds", "KL"]
    assert tuple(fig.data[1].y) == (0.5, 0.4) and tuple(fig.data[2].y) == (60.0, 50.0)
    assert tuple(fig.data[3].y) == (0.03, None)
    assert fig.layout.barmode == "group"
    del results["grpo"]["after"]["kl"]
    assert [t.name for t in rl.compare_rl(results).data] == ["before", "after", "train seconds"]
    with pytest.raises(DataError, match="rloo.before.accuracy"):
        rl.compare_rl({"rloo": {"before": {}, "after": {"accuracy": 0.4}}})


def test_rounds_plot_rates_and_kept_on_a_second_axis():
    rounds = [{"round": 2, "verified_rate": 0.5, "heldout_accuracy": 0.4, "kept": 20},
              {"round": 0, "heldout_accuracy": 0.1},
              {"round": 1, "verified_rate": 0.25, "heldout_accuracy": 0.3, "kept": 9}]
    fig = rl.rounds_plot(rounds)
    kept, verified, heldout = fig.data
    assert isinstance(kept, go.Bar) and kept.yaxis == "y2" and verified.yaxis == heldout.yaxis == "y"
    assert tuple(kept.x) == (0, 1, 2) and tuple(kept.y) == (None, 9, 20)
    assert tuple(verified.y) == (None, 0.25, 0.5) and tuple(heldout.y) == (0.1, 0.3, 0.4)
    with pytest.raises(DataError, match="row 0, field 'round'"):
        rl.rounds_plot([{"kept": 1}])
