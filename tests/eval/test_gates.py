"""Gates: min / max / max_regression per metric and slice, the reasons they give, and the default gate."""

from __future__ import annotations

import pytest

from labkit.errors import ConfigError
from labkit.eval.card import EvalCard, scores_json, slice_rows
from labkit.eval.gates import DEFAULT_GATE, Gate, Rule
from labkit.eval.tasks import Metric, Scored, Task

MMLU = Task("mmlu", (Metric("accuracy_loglik"),), lambda cfg: [], lambda *a: None)
SAFETY = Task("safety", (Metric("refusal_rate"), Metric("over_refusal_rate", higher_is_better=False)),
              lambda cfg: [], lambda *a: None)


def card(mmlu: list[float], over_refusal: list[float] | None = None) -> EvalCard:
    m = [Scored("accuracy_loglik", str(i), v, {"subject": "bio" if i % 2 else "geo"})
         for i, v in enumerate(mmlu)]
    s = [Scored("over_refusal_rate", str(i), v) for i, v in enumerate(over_refusal or [])]
    table = slice_rows(MMLU, m) + (slice_rows(SAFETY, s) if s else [])
    return EvalCard("m", table, scores_json("mmlu", m) + scores_json("safety", s), {})


def test_min_and_max_with_reasons():
    gate = Gate([Rule("mmlu", "accuracy_loglik", min=0.6), Rule("safety", "over_refusal_rate", max=0.2)])
    good = gate.check(card([1, 1, 1, 0], over_refusal=[0, 0, 0, 0, 1]))
    assert good.passed and bool(good) and not good.reasons and len(good.checks) == 2
    bad = gate.check(card([1, 0, 0, 0], over_refusal=[1, 1, 0, 0]))
    assert not bad.passed
    assert bad.reasons == ["mmlu/accuracy_loglik = 0.250, below the minimum 0.6",
                           "safety/over_refusal_rate = 0.500, above the maximum 0.2"]
    assert "gate failed" in bad._repr_html_()


def test_max_regression_is_direction_aware_and_gives_a_ci():
    base = card([1] * 10, over_refusal=[0] * 10)
    gate = Gate([Rule("mmlu", "accuracy_loglik", max_regression=0.1),
                 Rule("safety", "over_refusal_rate", max_regression=0.1)])
    # exactly 0.1 worse
    assert gate.check(card([1] * 9 + [0], over_refusal=[1] + [0] * 9), baseline=base).passed
    result = gate.check(card([1] * 5 + [0] * 5, over_refusal=[1] * 3 + [0] * 7), baseline=base)
    assert not result.passed and len(result.reasons) == 2
    assert result.reasons[0].startswith("mmlu/accuracy_loglik regressed by 0.500 "
                                        "(1.000 → 0.500; change 95% CI [")
    assert "over_refusal_rate regressed by 0.300 (0.000 → 0.300" in result.reasons[1]
    # a fall of a ↓ metric is an improvement, not a regression
    assert gate.check(base, baseline=card([1] * 10, over_refusal=[1] * 10)).passed


def test_slice_star_checks_every_slice_and_missing_things_fail_loudly():
    base = card([1, 1, 1, 1])
    new = card([1, 0, 1, 0])  # every odd id is subject=bio: that slice collapses, geo holds
    result = Gate([Rule("mmlu", "accuracy_loglik", slice="*", max_regression=0.2)]).check(new, baseline=base)
    failed = [c["rule"] for c in result.checks if not c["passed"]]
    assert failed == ["mmlu/accuracy_loglik", "mmlu/accuracy_loglik [subject=bio]"]
    no_base = Gate([Rule("mmlu", "accuracy_loglik", max_regression=0.1)]).check(new)
    assert "needs a baseline card" in no_base.reasons[0]
    missing = Gate([Rule("gsm8k", "accuracy", min=0.1)]).check(new)
    assert not missing.passed and "not on the card (the rule requires it" in missing.reasons[0]
    assert Gate([Rule("gsm8k", "accuracy", min=0.1, required=False)]).check(new).passed


def test_gate_from_dict_round_trip_and_bad_rules(tmp_path):
    gate = Gate.from_dict({"name": "release",
                           "rules": [{"task": "mmlu", "metric": "accuracy_loglik", "min": 0.3}]})
    assert gate.name == "release" and gate.rules == [Rule("mmlu", "accuracy_loglik", min=0.3)]
    assert Gate.from_dict(gate.to_dict()) == gate
    (tmp_path / "g.json").write_text('[{"task": "mmlu", "metric": "accuracy_loglik", '
                                     '"max_regression": 0.02}]')
    assert Gate.load(tmp_path / "g.json").rules[0].max_regression == 0.02
    with pytest.raises(ConfigError, match="rules\\[0\\].*unknown key.*minimum"):
        Gate.from_dict([{"task": "mmlu", "metric": "acc", "minimum": 0.3}])
    with pytest.raises(ConfigError, match="needs `task` and `metric`"):
        Gate.from_dict([{"metric": "acc", "min": 0.3}])
    with pytest.raises(ConfigError, match="give at least one of"):
        Rule("mmlu", "acc")


def test_default_gate_fails_a_worse_card_and_passes_the_same_one():
    base = card([1, 1, 0, 1, 1, 0, 1, 1], over_refusal=[0] * 8)
    assert DEFAULT_GATE.check(base, baseline=base).passed  # tasks missing from the card are not required
    worse = card([0, 1, 0, 0, 1, 0, 0, 1], over_refusal=[0] * 8)
    result = DEFAULT_GATE.check(worse, baseline=base)
    assert not result.passed and result.reasons[0].startswith("mmlu/accuracy_loglik regressed by 0.375")


def test_default_gate_judges_every_mmlu_mode():
    # A mode the gate has no rule for lets any regression through (a model pruned to half its layers fell
    # from 65% to 29% MMLU-cloze and was still promoted before the cloze rule existed).
    from labkit.eval.gates import DEFAULT_GATE
    from labkit.eval.tasks import get_tasks

    (mmlu,) = get_tasks("mmlu")
    ruled = {r.metric for r in DEFAULT_GATE.rules if r.task == "mmlu" and r.max_regression is not None}
    assert {m.name for m in mmlu.metrics} <= ruled
