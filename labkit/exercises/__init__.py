"""Checked exercises for the notebooks: `check` says whether an answer is right and why, `hint` gives hints
one at a time, and the solutions live in a separate notebook so the student's copy never shows them.

In a notebook
-------------
Every notebook opens (a markdown cell before its parameters cell) with ``**Objectives.**`` and 3–5 numbered
items, ``**Requirements.**`` (CPU minutes in the smoke preset from the latest nightly report, GPU memory or
"not measured"), and ``**In the course:**`` (prerequisites, what comes next). Its ``record(...)`` cell
closes the teaching part, then a ``## Exercises`` markdown cell opens the exercises.

Every notebook ends with exercises in three tiers, each a markdown cell whose heading starts with its stars
and its id (``NN.k``: notebook number, exercise number)::

    ### ⭐ 05.1 · Advantages of one group          check your understanding: a number, a choice
    ### ⭐⭐ 05.2 · A format reward                 change the code: a value or a small function
    ### ⭐⭐⭐ 05.3 · Hack your own reward           open-ended: no check, the notebook's own tools

A ⭐ or ⭐⭐ exercise is followed by one code cell where the student writes the answer, then one check cell::

    answer_05_1 = ...  # your answer: a list of four numbers

    check("05.1", answer_05_1)          # shows ✓ right / ✗ not yet + why / … not answered yet
    hint("05.1")                        # on demand: the next hint each call

An answer is *not answered yet* while it is ``...`` (Ellipsis), or, for a function, while calling it
raises ``NotImplementedError`` (write its body as ``raise NotImplementedError("your code")``). So a
headless run of the untouched notebook (the nightly job) checks nothing and fails nothing. A check never
raises for a wrong answer: an answer that raises is reported as wrong, with the exception.
Some checks need what the notebook computed (``check("00.1", answer, n_params=n_params)``); the check's
keyword-only arguments say what.

Adding exercises for a notebook NN
----------------------------------
1. Write ``labkit/exercises/nbNN.py``: one function per ⭐/⭐⭐ exercise, registered with
   ``@exercise("NN.k", hints=[...])``. It takes the answer (and keyword-only context), calls
   ``wrong("why")`` for each mistake worth naming (the common wrong answers first, with what they
   mean), and returns one sentence saying why the right answer is right. ``close``, ``choice`` and
   ``cases`` below keep the checks short.
2. In tests/test_exercises.py, add a right answer and at least one wrong answer for each id.
3. Write ``notebooks/solutions/NN_<name>_solutions.py`` (jupytext percent, paired ``.ipynb``): one
   cell per exercise that sets the right answer and calls ``solved("NN.k", answer)`` (a ``check`` that
   raises unless the answer is right); ⭐⭐⭐ exercises get a sketch in markdown. tests/test_course.py
   executes it headless, and lints the student notebook: objectives, requirements, the three tiers, a
   check cell after each ⭐/⭐⭐ exercise. Also add the notebook to notebooks/README.md's course map.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import inspect
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from labkit.errors import ConfigError

ID_RE = re.compile(r"^(\d\d[a-z]?)\.(\d+)$")  # "05.1", "00b.2"

_REGISTRY: dict[str, Exercise] = {}
_HINTS_SHOWN: dict[str, int] = {}


class Wrong(Exception):
    """Raised inside a check (through `wrong`) to say what is wrong with the answer."""


def wrong(why: str) -> None:
    """Reject the answer, saying why; `check` turns this into a ✗ verdict."""
    raise Wrong(why)


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One checked exercise: its id ("05.1"), the check function and its hints, in order."""

    id: str
    fn: Callable[..., str]
    hints: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What `check` found: ok is True (right), False (wrong) or None (not answered yet)."""

    id: str
    ok: bool | None
    message: str

    @property
    def mark(self) -> str:
        # ✓ and ✗ are in every common font (emoji are not, e.g. in a headless browser)
        return {True: "✓ right", False: "✗ not yet", None: "… not answered yet"}[self.ok]

    def __str__(self) -> str:
        return f"{self.mark} ({self.id}): {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        color = {True: "#1a7f37", False: "#cf222e", None: "#6e7781"}[self.ok]
        return (f'<div class="labkit-check" data-ok="{str(self.ok).lower()}" style="border-left:4px solid '
                f'{color};padding:2px 8px"><b style="color:{color}">{self.mark}</b> ({self.id}): '
                f"{html.escape(self.message)}</div>")


def exercise(ex_id: str, *, hints: Sequence[str]) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a check function under `ex_id` ("NN.k") with its hints (at least one)."""
    if not ID_RE.match(ex_id):
        raise ConfigError("exercise id", f"{ex_id!r} is not of the form NN.k, e.g. '05.1'")
    if not hints:
        raise ConfigError(f"exercise {ex_id}", "give at least one hint")

    def register(fn: Callable[..., str]) -> Callable[..., str]:
        _REGISTRY[ex_id] = Exercise(ex_id, fn, tuple(hints))
        return fn

    return register


def get(ex_id: str) -> Exercise:
    """The registered exercise `ex_id`; its notebook's module (labkit.exercises.nbNN) loads on first use."""
    found = ID_RE.match(str(ex_id))
    if not found:
        raise ConfigError("exercise id", f"{ex_id!r} is not of the form NN.k, e.g. '05.1'")
    if ex_id not in _REGISTRY:
        try:
            importlib.import_module(f"{__name__}.nb{found[1]}")
        except ModuleNotFoundError:
            pass
    if ex_id not in _REGISTRY:
        raise ConfigError("exercise id", f"no exercise {ex_id!r}; notebook {found[1]} has: "
                                         f"{', '.join(ids(found[1])) or 'none'}")
    return _REGISTRY[ex_id]


def ids(book: str | None = None) -> list[str]:
    """The registered exercise ids, of one notebook ("05") or, by default, of every notebook module."""
    from importlib import resources

    names = [book] if book else sorted(p.name[2:-3] for p in resources.files(__name__).iterdir()
                                       if re.match(r"nb\d\d[a-z]?\.py$", p.name))
    for nb in names:
        try:
            importlib.import_module(f"{__name__}.nb{nb}")
        except ModuleNotFoundError:
            pass
    return sorted((i for i in _REGISTRY if not book or i.startswith(f"{book}.")),
                  key=lambda i: (i.split(".")[0], int(i.split(".")[1])))


def _not_answered(answer: Any) -> bool:
    return answer is ...


def check(ex_id: str, answer: Any = ..., **context: Any) -> Verdict:
    """Check an answer to exercise `ex_id` and return the verdict (a notebook shows it).

    Never raises for the student's answer: not answered yet (``...`` or a function that raises
    NotImplementedError), wrong (with why), or right (with why). A wrong id or missing context is the
    notebook's bug and raises ConfigError.
    """
    ex = get(ex_id)
    try:
        inspect.signature(ex.fn).bind(answer, **context)
    except TypeError as err:
        raise ConfigError(f"check({ex_id!r})", f"wrong context for this check: {err}") from None
    if _not_answered(answer):
        return Verdict(ex_id, None, "replace the `...` with your answer, then run this cell again "
                                    f"(hint({ex_id!r}) for a hint)")
    try:
        return Verdict(ex_id, True, ex.fn(answer, **context))
    except Wrong as why:
        return Verdict(ex_id, False, f"{why} (hint({ex_id!r}) for a hint)")
    except NotImplementedError:
        return Verdict(ex_id, None, "your function still raises NotImplementedError: write its body, "
                                    "then run this cell again")
    except Exception as err:  # the student's code failed: say how, never break the notebook
        return Verdict(ex_id, False, f"your answer raised {type(err).__name__}: {err}")


def solved(ex_id: str, answer: Any, **context: Any) -> Verdict:
    """`check` for a solutions notebook: the verdict when right, else an AssertionError with the verdict, so a
    solution that stops passing its own check fails the notebook run (and CI)."""
    verdict = check(ex_id, answer, **context)
    if verdict.ok is not True:
        raise AssertionError(str(verdict))
    return verdict


def hint(ex_id: str) -> None:
    """Print the next hint for `ex_id`: the first, then the second…; the last one repeats."""
    ex = get(ex_id)
    n = min(_HINTS_SHOWN.get(ex_id, 0), len(ex.hints) - 1)
    _HINTS_SHOWN[ex_id] = n + 1
    print(f"💡 hint {n + 1} of {len(ex.hints)} ({ex_id}): {ex.hints[n]}")


# ---- small helpers that keep each check readable ---------------------------------------------------------

def number(answer: Any, what: str = "a number") -> float:
    """The answer as a float, or a ✗ saying a number was expected."""
    if isinstance(answer, bool):
        wrong(f"expected {what}, got a bool")
    try:
        value = float(answer)
    except (TypeError, ValueError):
        wrong(f"expected {what}, got {type(answer).__name__} {answer!r}")
    if not math.isfinite(value):
        wrong(f"expected a finite number, got {value}")
    return value


def close(answer: Any, expected: float, rel: float = 0.02, abs_: float = 1e-9) -> bool:
    """Whether a numeric answer is within `rel` (relative) or `abs_` of `expected`; False for a non-number."""
    try:
        return math.isclose(float(answer), expected, rel_tol=rel, abs_tol=abs_)
    except (TypeError, ValueError):
        return False


def numbers(answer: Any, n: int, what: str) -> list[float]:
    """The answer as a list of n floats (a list, tuple, tensor or array), or a ✗."""
    if hasattr(answer, "tolist"):
        answer = answer.tolist()
    if not isinstance(answer, (list, tuple)) or len(answer) != n:
        wrong(f"expected {what}: a list of {n} numbers, got {answer!r}")
    return [number(a, what) for a in answer]


def choice(answer: Any, right: str, options: dict[str, str]) -> str:
    """A multiple-choice answer: `options` maps each letter to why it is right or wrong.

    Returns the right option's explanation, or calls `wrong` with the chosen option's explanation."""
    picked = str(answer).strip().lower().strip("()")
    if picked not in options:
        wrong(f"answer with one of {', '.join(repr(k) for k in options)}, got {answer!r}")
    if picked != right:
        wrong(options[picked])
    return options[right]


def cases(fn: Any, examples: Iterable[tuple[tuple, Any, str]],
          same: Callable[[Any, Any], bool] = lambda a, b: a == b) -> None:
    """Call the student's function on each (args, expected, what the case tests); ✗ on the first miss."""
    if not callable(fn):
        wrong(f"expected a function, got {type(fn).__name__}")
    for args, expected, about in examples:
        got = fn(*args)
        if not same(got, expected):
            shown = ", ".join(repr(a) if len(repr(a)) < 60 else repr(a)[:57] + "..." for a in args)
            wrong(f"{about}: for ({shown}) it returned {got!r}, expected {expected!r}")
