"""Accuracy and Cohen's kappa on hand-made labels."""

from __future__ import annotations

import math

import pytest

from labkit.metrics.agreement import cohen_kappa, label_agreement


def test_kappa_by_hand():
    # 10 items: the two agree on 7 (4 "a", 3 "b"); a says a 6 times, b says a 5 times.
    a = list("aaaaaabbbb")
    b = list("aaaabbabbb")
    # p_o = 0.7; p_e = 0.6·0.5 + 0.4·0.5 = 0.5; κ = 0.2 / 0.5 = 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    m = label_agreement(a, b)
    assert m == pytest.approx({"accuracy": 0.7, "kappa": 0.4, "expected": 0.5, "n": 10})


def test_kappa_extremes():
    gold = ["first", "second"] * 5
    assert cohen_kappa(gold, gold) == 1.0
    flipped = ["second" if g == "first" else "first" for g in gold]
    assert cohen_kappa(flipped, gold) == -1.0
    # a judge that always says "first" agrees half the time on balanced gold: chance, κ = 0
    assert cohen_kappa(["first"] * 10, gold) == pytest.approx(0.0)
    # ties are a third label: they count against agreement
    with_ties = ["tie"] * 2 + gold[2:]
    assert label_agreement(with_ties, gold)["accuracy"] == 0.8
    assert 0 < cohen_kappa(with_ties, gold) < 1


def test_degenerate_inputs():
    assert cohen_kappa(["a"] * 3, ["a"] * 3) == 1.0
    assert math.isnan(cohen_kappa([], []))
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["a"], ["a", "b"])
