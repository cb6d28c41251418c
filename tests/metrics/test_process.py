"""Outcome against process: the share of right answers reached through a wrong step, on hand-made replies."""

from __future__ import annotations

import math

import pytest

from labkit.errors import DataError
from labkit.metrics.process import process_metrics


def test_process_metrics_by_hand():
    replies = [
        "40 + 30 = 70\n7 + 8 = 15\n70 + 15 = 85\n#### 85",    # right answer, right steps
        "40 + 30 = 70\n7 + 8 = 16\n70 + 15 = 85\n#### 85",    # right answer, one wrong step
        "#### 85",                                            # right answer, no steps
        "40 + 30 = 70\n7 + 8 = 15\n70 + 15 = 85\n#### 58",    # wrong answer, right steps
    ]
    m = process_metrics(replies, ["85"] * 4)
    assert m["accuracy"] == 0.75
    assert m["right_via_wrong_steps"] == pytest.approx(1 / 3)
    assert m["right_without_steps"] == pytest.approx(1 / 3)
    assert m["step_accuracy"] == pytest.approx(8 / 9)
    assert m["n"] == 4


def test_empty_denominators_are_nan_and_lengths_must_match():
    m = process_metrics(["#### 1"], ["2"])
    assert m["accuracy"] == 0 and math.isnan(m["right_via_wrong_steps"]) and math.isnan(m["step_accuracy"])
    with pytest.raises(DataError, match="answers"):
        process_metrics(["#### 1"], ["1", "2"])
