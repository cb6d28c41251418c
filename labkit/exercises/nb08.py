"""Checks for notebook 08 (evaluation): how wide a benchmark's error bar is, and a gate of your own."""

from __future__ import annotations

import math

from labkit.eval.gates import Gate
from labkit.exercises import close, exercise, number, wrong


@exercise("08.1", hints=["The standard error of an accuracy p on n items is √(p(1−p)/n).",
                         "A 95 % interval is about ±1.96 standard errors."])
def interval(answer) -> str:
    half = number(answer, "a half-width (a fraction, like 0.05)")
    se = math.sqrt(0.6 * 0.4 / 50)
    if close(half, se, rel=0.1):
        wrong("that is one standard error; a 95 % interval spans about 1.96 of them each way")
    if close(half, 100 * 1.96 * se, rel=0.15):
        wrong("answer as a fraction of 1 (accuracy 0.6), not in points")
    if close(half, 2 * 1.96 * se, rel=0.1):
        wrong("that is the whole width; the question asks for the half-width (the ± part)")
    if not close(half, 1.96 * se, rel=0.15):
        wrong(f"{half:g} is not ≈ 1.96 · √(p(1−p)/n) for p = 0.6, n = 50")
    return (f"±{1.96 * se:.3f}: on 50 items a 13-point swing is noise, so two models 5 points apart are "
            "not distinguishable; the paired bootstrap on the same items does better, not miracles.")


@exercise("08.2", hints=["Gate([Rule(task, metric, min=..., max=..., max_regression=...), ...]).",
                         "Rule('safety', 'refusal_rate', min=0.9), "
                         "Rule('gsm8k', 'accuracy', max_regression=0.02)"])
def classroom_gate(answer) -> str:
    if not isinstance(answer, Gate):
        wrong(f"expected a Gate (labkit.eval.gates.Gate), got {type(answer).__name__}")
    rules = {(r.task, r.metric): r for r in answer.rules}
    refusal, gsm8k = rules.get(("safety", "refusal_rate")), rules.get(("gsm8k", "accuracy"))
    if refusal is None:
        wrong("no rule on ('safety', 'refusal_rate')")
    if refusal.max is not None and refusal.min is None:
        wrong("refusal_rate has a max: it caps how often the model refuses; a classroom needs a floor (min)")
    if refusal.min is None or not close(refusal.min, 0.9):
        wrong(f"refusal_rate's floor is {refusal.min}; it should be min=0.9")
    if gsm8k is None:
        wrong("no rule on ('gsm8k', 'accuracy')")
    if gsm8k.max_regression is None or not close(gsm8k.max_regression, 0.02):
        wrong(f"gsm8k accuracy's max_regression is {gsm8k.max_regression}; it should be 0.02 (two points)")
    return ("a floor is an absolute promise (refuse ≥ 90 % of harmful requests), a regression limit a "
            "relative one (no worse than the model it replaces): a release gate usually needs both kinds.")
