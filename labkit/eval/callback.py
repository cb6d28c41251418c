"""In-training evaluation: a callback that runs a small eval every N steps on the model being trained and sends it
to the run's dashboard and log as `eval/<task>/<metric>` evals.

    ev = InTrainingEval("gsm8k,mmlu", every=10, cfg=EvalConfig(limit=16, source="fixture"))
    sft.train(cfg, callbacks=[LiveDashboard([*SFT_PANELS, EVAL_PANEL]), ev])
    ev.history   # [(step, {"gsm8k/accuracy": …, …}), …]

Rows are loaded (and checked) once, when training starts. The callback needs `info["handles"]` (a
RunHandles) from the stage; TRL-backed stages and labkit's PPO provide it.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from labkit.config import EvalConfig
from labkit.eval.card import ALL, slice_rows
from labkit.eval.tasks import get_tasks

PREFIX = "eval/"


class InTrainingEval:
    def __init__(self, tasks: str | list[str] = "gsm8k,mmlu", *, every: int = 10, cfg: EvalConfig | None = None,
                 at_start: bool = True):
        if every < 1:
            raise ValueError("every must be ≥ 1 step")
        self.tasks = get_tasks(tasks)
        self.every, self.at_start = every, at_start
        self.cfg = cfg or EvalConfig(limit=16, source="fixture", max_new_tokens=64)
        self.history: list[tuple[int, dict[str, float]]] = []
        self.seconds = 0.0
        self._handles = None
        self._rows: dict[str, list[dict]] = {}

    def on_start(self, info: dict) -> None:
        self.history, self.seconds = [], 0.0
        self._handles = info.get("handles")
        if self._handles is None or self._handles.model is None or self._handles.tokenizer is None:
            warnings.warn("InTrainingEval: this stage passes no model handles in on_start; no evals will run",
                          stacklevel=2)
            self._handles = None
            return
        self._rows = {t.name: t.load(self.cfg) for t in self.tasks}
        if self.at_start:
            self.run(int(info.get("global_step") or 0))

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if step % self.every == 0:
            self.run(step)

    def on_end(self, summary: dict) -> None:
        step = summary.get("global_step")
        if step is not None:
            self.run(int(step))  # the final point, unless that step was just evaluated

    def run(self, step: int) -> dict[str, float]:
        """Evaluate now and emit the metrics; a repeated step is skipped."""
        if self._handles is None or (self.history and self.history[-1][0] == step):
            return {}
        model, tok = self._handles.model, self._handles.tokenizer
        training = model.training
        model.eval()
        start = time.perf_counter()
        metrics: dict[str, Any] = {}
        try:
            for task in self.tasks:
                out = task.run(model, tok, self._rows[task.name], self.cfg)
                metrics |= {f"{task.name}/{r['metric']}": r["value"] for r in slice_rows(task, out.scores)
                            if r["slice"] == ALL}
        finally:
            model.train(training)
        self.seconds += time.perf_counter() - start
        self.history.append((step, metrics))
        self._handles.emit.on_eval(step, {PREFIX + k: v for k, v in metrics.items()})
        return metrics
