"""The console view: real totals under a wall-clock budget, one short line per step."""

from __future__ import annotations

from labkit.runs.console import ConsoleProgress, expected_total, fmt, step_line


def test_total_is_max_steps_without_a_budget_or_a_pace():
    assert expected_total(200, 0, 0.0, 180.0) == 200
    assert expected_total(200, 5, 50.0, None) == 200


def test_budget_shrinks_the_total_to_what_the_pace_allows():
    # 3 steps in 60 s, 120 s left at 20 s a step: 6 more
    assert expected_total(200, 3, 60.0, 180.0) == 9
    assert expected_total(5, 3, 60.0, 180.0) == 5  # the step limit still ends it first
    assert expected_total(200, 3, 200.0, 180.0) == 3  # over budget: nothing more


def test_a_step_is_one_short_line_of_the_metrics_that_matter():
    line = step_line(3, 60, {"loss": 1.1334, "grad_norm": 2.55, "learning_rate": 0.0001, "epoch": 0.06,
                             "num_tokens": 750.0})
    assert line == "step 3/60  loss 1.133  grad 2.55  lr 1e-04"
    assert "{" not in line and "epoch" not in line
    assert fmt(0.0) == "0" and fmt(12345.0) == "1.23e+04" and fmt(float("nan")) == "nan"


def test_progress_under_a_budget_ends_at_the_steps_really_made():
    now = [0.0]
    lines: list[str] = []
    cp = ConsoleProgress("grpo", budget_s=180.0, write=lines.append, clock=lambda: now[0])
    cp.on_start({"max_steps": 200, "global_step": 0})
    for step in (1, 2, 3):
        now[0] += 40.0
        cp.on_step(step, {"reward": 0.25 * step, "kl": 0.01})
    assert cp._bar.total == 4  # 120 s used at 40 s a step: one more fits in 180 s
    cp.on_eval(3, {"accuracy": 0.5})
    now[0] += 40.0
    cp.on_step(4, {"reward": 1.0})
    cp.on_end({})
    assert lines[0] == "step 1/4  reward 0.25  kl 0.01"  # 40 s a step: 4 steps fit in 180 s
    assert lines[2].startswith("step 3/4") and lines[3] == "eval @ step 3  accuracy 0.5"
    assert lines[-1] == "grpo: 4 steps in 160 s"
