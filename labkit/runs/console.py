"""The console view of a run when no dashboard is attached: one progress bar and one short line per step.

A trainer left to itself prints a tqdm bar and, under it, every logged metric dict verbatim
(``{'loss': '1.345', 'grad_norm': '3.658', …}``), and its bar's total is ``max_steps`` even when a
wall-clock budget will end the run long before (a GRPO run under a 180 s budget showed "3/200
[2:05:14 left]"). :class:`ConsoleProgress` replaces both: its bar's total is the number of steps the
run will really make (``max_steps``, or the steps the remaining budget allows at the pace so far,
whichever is smaller), and each logged step is one line of the few metrics that matter for the stage.

``LABKIT_VERBOSE=1`` (``labkit --verbose``) turns labkit's quieting off: the trainer's own bar, its
raw dicts and the libraries' warnings come back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

# The metrics worth a glance, most telling first; a line shows the first few a stage logs.
KEY_METRICS = ("loss", "reward", "rewards/accuracy", "accuracy", "margin", "rewards/margins", "kl",
               "value_loss", "entropy", "grad_norm", "learning_rate")
# Bookkeeping a trainer logs beside its metrics: not worth a place on a line.
SKIP = ("epoch", "runtime", "samples_per_second", "steps_per_second", "num_tokens", "total_flos")
SHORT = {"rewards/accuracy": "acc", "rewards/margins": "margin", "learning_rate": "lr", "grad_norm": "grad",
         "mean_token_accuracy": "tok_acc"}


def fmt(value: float) -> str:
    """A metric value in at most ~6 characters: 1.345, 0.0002 → 2e-04, 1234.5 → 1234."""
    if value != value or math.isinf(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.0e}" if abs(value) < 1 else f"{value:.3g}"


def step_line(step: int, total: int | None, metrics: dict[str, float], keys: Sequence[str] = KEY_METRICS,
              most: int = 5) -> str:
    """One logged step as a line: "step 3/60  loss 1.133  acc 0.72  lr 1e-04"."""
    shown = [k for k in keys if k in metrics][:most]
    where = f"step {step}/{total}" if total else f"step {step}"
    return "  ".join([where, *(f"{SHORT.get(k, k)} {fmt(metrics[k])}" for k in shown)])


def expected_total(max_steps: int | None, done: int, elapsed: float, budget_s: float | None) -> int | None:
    """How many steps the run will make: max_steps, or fewer when the wall-clock budget runs out first at the
    pace so far. Before the first step there is no pace, so max_steps stands."""
    if not budget_s or done <= 0 or elapsed <= 0:
        return max_steps
    pace = elapsed / done
    in_budget = done + max(0, math.floor((budget_s - elapsed) / pace))
    return min(max_steps, in_budget) if max_steps else in_budget


class ConsoleProgress:
    """A labkit callback: a tqdm bar (a widget in a kernel) with the run's real total, and one line per step.

    ``budget_s`` is the run's wall-clock ceiling, when it has one: the bar's total shrinks to what the budget
    allows and the bar says so. ``write`` receives each line (tqdm.write by default, so lines land above the
    bar)."""

    def __init__(self, title: str = "", *, budget_s: float | None = None, keys: Sequence[str] = KEY_METRICS,
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.title, self.budget_s, self.keys = title, budget_s, tuple(keys)
        self._write, self._clock = write, clock
        self._bar: Any = None
        self.max_steps: int | None = None
        self.lines: list[str] = []

    def on_start(self, info: dict) -> None:
        """Open the bar: total from info["max_steps"], clock starts now."""
        from tqdm.auto import tqdm

        self.max_steps = int(info["max_steps"]) if info.get("max_steps") else None
        self._t0, self._done = self._clock(), int(info.get("global_step") or 0)
        self._bar = tqdm(total=self.max_steps, desc=self.title or None, unit="step", leave=True,
                         dynamic_ncols=True)
        if self.budget_s:
            self._bar.set_postfix_str(f"budget {self.budget_s:.0f} s")

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        if self._write is not None:
            self._write(line)
        elif self._bar is not None:
            self._bar.write(line)
        else:
            print(line)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        """Move the bar to `step`, re-estimate its total under the budget, and write the step's line."""
        total = expected_total(self.max_steps, step, self._clock() - self._t0, self.budget_s)
        if self._bar is not None:
            if total != self._bar.total:
                self._bar.total = total
                self._bar.set_postfix_str(f"budget {self.budget_s:.0f} s ends it at ~{total}")
            self._bar.update(step - self._done)
        self._done = step
        self._emit(step_line(step, total, metrics, self.keys))

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """One line for an evaluation, its metrics in sorted order."""
        kept = sorted((k, v) for k, v in metrics.items() if k.rsplit("/", 1)[-1] not in SKIP)
        shown = "  ".join(f"{SHORT.get(k, k)} {fmt(v)}" for k, v in kept[:6])
        self._emit(f"eval @ step {step}  {shown}")

    def on_end(self, summary: dict) -> None:
        """Close the bar at the steps really made (so it does not end at "3/200")."""
        if self._bar is not None:
            self._bar.total = self._done or self._bar.total
            self._bar.refresh()
            self._bar.close()
            self._bar = None
        seconds = self._clock() - getattr(self, "_t0", self._clock())
        self._emit(f"{self.title + ': ' if self.title else ''}{self._done} steps in {seconds:.0f} s")
