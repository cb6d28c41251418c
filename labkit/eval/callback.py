"""In-training evaluation: benchmark tasks run every N steps on the model being trained, sent to the run's
dashboard and log as `eval/<task>/<metric>` evals.

    ev = InTrainingEval("gsm8k,mmlu", every=10, cfg=EvalConfig(limit=16, source="fixture"))
    sft.train(cfg, callbacks=[LiveDashboard([*SFT_PANELS, EVAL_PANEL]), ev])
    ev.history   # [(step, {"gsm8k/accuracy": …, …}), …]

It is labkit.metrics.periodic.PeriodicEval with the eval suite as its measurement. Rows are loaded (and
checked) once, at the first evaluation. The model comes from `info["handles"]` (a RunHandles), which every
labkit stage passes to its callbacks.
"""

from __future__ import annotations

from labkit.config import EvalConfig
from labkit.eval.card import ALL, slice_rows
from labkit.eval.tasks import get_tasks
from labkit.metrics.periodic import PeriodicEval

PREFIX = "eval/"


class InTrainingEval(PeriodicEval):
    """Evaluates `tasks` every `every` steps, at the start (unless at_start=False) and at the end.

    Args:
        tasks: task names, comma-separated or a list (see labkit.eval.tasks.TASKS).
        every: steps between evaluations (≥ 1).
        cfg: the eval settings; by default 16 fixture rows per task and 64 new tokens.

    Its `history` holds (step, {"<task>/<metric>": value}) per evaluation and `seconds` the time spent
    evaluating.
    """

    def __init__(self, tasks: str | list[str] = "gsm8k,mmlu", *, every: int = 10,
                 cfg: EvalConfig | None = None, at_start: bool = True):
        if every < 1:
            raise ValueError("every must be ≥ 1 step")
        self.tasks = get_tasks(tasks)
        self.cfg = cfg or EvalConfig(limit=16, source="fixture", max_new_tokens=64)
        self._rows: dict[str, list[dict]] = {}
        super().__init__(self._measure, every, prefix=PREFIX, at_start=at_start)

    def _measure(self, model, tok, step: int) -> tuple[dict[str, float], list[dict]]:
        if not self._rows:
            self._rows = {t.name: t.load(self.cfg) for t in self.tasks}
        metrics: dict[str, float] = {}
        for task in self.tasks:
            out = task.run(model, tok, self._rows[task.name], self.cfg)
            metrics |= {f"{task.name}/{r['metric']}": r["value"] for r in slice_rows(task, out.scores)
                        if r["slice"] == ALL}
        return metrics, []
