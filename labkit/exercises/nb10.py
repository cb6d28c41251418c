"""Checks for notebook 10 (orchestration): what a blocked promotion leaves, and a nightly metric."""

from __future__ import annotations

from labkit.exercises import choice, close, exercise, wrong
from labkit.runs.nightly import Metric


@exercise("10.1", hints=["Look at `reg.channels()` after the worse model was blocked.",
                         "A channel moves only when a card passes its gate."])
def blocked(answer) -> str:
    return choice(answer, "b", {
        "a": "the gate exists so that a failing candidate never reaches production",
        "b": "a blocked promotion changes nothing: production keeps serving the last model that passed",
        "c": "production is never left empty by a failed promotion; rollback, not blocking, moves it back",
    })


@exercise("10.2", hints=["A loss is better when lower: labkit.runs.nightly.lower(value, tol=...).",
                         "A relative tolerance is a string: tol='10%'."])
def nightly_metric(answer) -> str:
    if not isinstance(answer, Metric):
        wrong(f"expected what higher()/lower()/near() return, got {type(answer).__name__}")
    if answer.direction == "higher":
        wrong("with higher() a falling loss would be the regression; a loss should be lower()")
    if answer.direction != "lower":
        wrong(f"direction {answer.direction!r}: a loss that must not rise is lower(...)")
    if not close(answer.value, 2.31):
        wrong(f"the value is {answer.value}; record this night's probe loss, 2.31")
    if not answer.relative:
        wrong(f"tol={answer.tol} is absolute (in loss units); 10 % of the last good night is tol='10%'")
    if not close(answer.tol, 0.10):
        wrong(f"a relative tolerance of {answer.tol:.0%}; the task asks for 10 %")
    return ("lower(2.31, tol='10%') flags a night whose probe loss rises more than 10 % above the last good "
            "night's; a relative tolerance follows the metric's scale as the recipe changes.")
