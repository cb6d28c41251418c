"""Eval cards: `evaluate(model, tasks) -> EvalCard`, a tidy table of metrics by slice with sample outputs,
saved as JSON and rendered in a notebook; `compare(base, new)` flags per-slice regressions with a paired
bootstrap CI.

A card keeps every item's score, not only the means, so two cards can be compared item by item: the
difference of two means over the same items is far less noisy than the means' own confidence intervals
suggest, and that is what the bootstrap resamples.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from labkit.config import EvalConfig
from labkit.data.io import write_text_atomic
from labkit.errors import ConfigError, DataError
from labkit.eval.tasks import Scored, Task, TaskOutput, get_tasks

ALL = "all"


def slice_rows(task: Task, scores: list[Scored]) -> list[dict[str, Any]]:
    """The tidy rows of one task: each metric over all its items,
    then over each value of each slice family."""
    by_metric: dict[str, list[Scored]] = defaultdict(list)
    for s in scores:
        by_metric[s.metric].append(s)
    rows = []
    for metric, items in by_metric.items():
        try:
            higher = task.metric(metric).higher_is_better
        except KeyError:  # e.g. pass@5 when the task lists pass@1 only: counts are better higher
            higher = True
        groups: dict[str, list[float]] = {ALL: [s.score for s in items]}
        for s in items:
            for family, value in s.slices.items():
                groups.setdefault(f"{family}={value}", []).append(s.score)
        for name in [ALL, *sorted(k for k in groups if k != ALL)]:
            values = groups[name]
            rows.append({"task": task.name, "metric": metric, "slice": name, "value": float(np.mean(values)),
                         "n": len(values), "higher_is_better": higher})
    return rows


def scores_json(task: str, scores: list[Scored]) -> list[dict[str, Any]]:
    """One task's item scores as the card's JSON-ready `scores` rows (ids as strings, scores as floats)."""
    return [{"task": task, "metric": s.metric, "id": str(s.id), "score": float(s.score),
             "slices": dict(s.slices)}
            for s in scores]


@dataclasses.dataclass
class EvalCard:
    """What a model scored: `table` (task, metric, slice, value, n, higher_is_better), every item's score in
    `scores`, a few readable `samples` per task, and `meta` (model, adapter, config, seconds per task)."""

    model: str
    table: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    samples: dict[str, list[dict[str, Any]]]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def value(self, task: str, metric: str, slice: str = ALL) -> float:  # noqa: A002 - the card's own word
        """The table's value for one task, metric and slice; KeyError when the card has no such row."""
        for row in self.table:
            if (row["task"], row["metric"], row["slice"]) == (task, metric, slice):
                return row["value"]
        raise KeyError(f"card for {self.model} has no {task}/{metric} [{slice}]")

    def headline(self) -> dict[str, float]:
        """`task/metric` → value over all items, in table order."""
        return {f"{r['task']}/{r['metric']}": r["value"] for r in self.table if r["slice"] == ALL}

    def item_scores(self, task: str, metric: str, slice: str = ALL) -> dict[str, float]:  # noqa: A002
        """id → score for the items in one slice (`family=value`, or "all")."""
        family, _, value = slice.partition("=")
        return {s["id"]: s["score"] for s in self.scores if s["task"] == task and s["metric"] == metric
                and (slice == ALL or s["slices"].get(family) == value)}

    # ---- persistence ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready data, tagged with `kind` and `version` so `load` can recognise it."""
        return {"kind": "labkit.eval_card", "version": 1, **dataclasses.asdict(self)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the card as JSON atomically: a crash mid-write leaves the old file or none,
        never half of one."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalCard:
        """A card written by `save`; DataError when the file is unreadable, not a card or missing a key."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(str(path), None, None, f"cannot read an eval card: {exc}") from exc
        if not isinstance(data, dict) or data.get("kind") != "labkit.eval_card":
            raise DataError(str(path), None, "kind", "not a labkit eval card (written by EvalCard.save)")
        for key in ("model", "table", "scores", "samples"):
            if key not in data:
                raise DataError(str(path), None, key, "missing from the eval card")
        return cls(data["model"], data["table"], data["scores"], data["samples"], data.get("meta", {}))

    # ---- display -------------------------------------------------------------------------------------------

    def rows(self, *, slices: bool = True) -> list[dict[str, Any]]:
        """The table for display: value rounded, arrow for the better direction."""
        return [{"task": r["task"], "metric": r["metric"] + (" ↑" if r["higher_is_better"] else " ↓"),
                 "slice": r["slice"], "value": round(r["value"], 4), "n": r["n"]}
                for r in self.table if slices or r["slice"] == ALL]

    def figure(self):
        """Headline metrics as horizontal bars (all in [0, 1]), one colour per task."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for task in dict.fromkeys(r["task"] for r in self.table):
            rows = [r for r in self.table if r["task"] == task and r["slice"] == ALL]
            fig.add_bar(name=task, orientation="h", x=[r["value"] for r in rows],
                        y=[f"{task}/{r['metric']}" + ("" if r["higher_is_better"] else " (lower is better)")
                           for r in rows], text=[f"{r['value']:.0%}" for r in rows])
        fig.update_layout(title=f"eval card: {self.model}", xaxis={"range": [0, 1], "tickformat": ".0%"},
                          height=max(300, 28 * sum(r["slice"] == ALL for r in self.table)), showlegend=False,
                          margin={"l": 240, "r": 20, "t": 40, "b": 30})
        return fig

    def _repr_html_(self) -> str:
        seconds = self.meta.get("seconds", {})
        parts = [f"<h4>eval card: {html.escape(self.model)}</h4>",
                 html_table([{**r, "seconds": seconds.get(r["task"], "")} for r in self.rows(slices=False)])]
        for task, info in self.meta.get("info", {}).items():  # what untrusted code ran behind, e.g. HumanEval
            if isinstance(info, dict) and "sandbox_layers" in info:
                layers = info["sandbox_layers"]
                shown = ", ".join(map(str, layers)) if layers else "none recorded"
                warn = " (WEAK: no OS boundary)" if "weak" in layers else ""
                parts.append(f"<p>{html.escape(task)} sandbox layers{warn}: {html.escape(shown)}</p>")
        sliced = [r for r in self.rows() if r["slice"] != ALL]
        if sliced:
            parts.append(f"<details><summary>{len(sliced)} slices</summary>{html_table(sliced)}</details>")
        for task, items in self.samples.items():
            if items:
                parts.append(f"<details><summary>{html.escape(task)}: {len(items)} sample outputs</summary>"
                             f"{html_table(items)}</details>")
        return "\n".join(parts)


def html_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as an HTML table; columns in order of first appearance, long values cut short."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left;white-space:pre-wrap'>"
                                    f"{html.escape(_short(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(value: Any, limit: int = 400) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= limit else text[:limit] + " …"


# ---- evaluate ----------------------------------------------------------------------------------------------

def load_for_eval(cfg: EvalConfig):
    """The model named by cfg (with cfg.adapter on top when given) and its tokenizer, in eval mode."""
    from labkit.models import load_model

    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    if cfg.adapter:
        if not (Path(cfg.adapter) / "adapter_config.json").is_file():
            raise ConfigError("adapter",
                              f"{cfg.adapter!r} has no adapter_config.json: not a PEFT adapter directory",
                              config="EvalConfig")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.adapter)
        # Fold the LoRA deltas into the weights: generation then costs what the base costs (unmerged LoRA
        # adds ~40% on CPU). PEFT unmerges by itself inside disable_adapter(), which the judge uses.
        model.merge_adapter()
    return model.eval(), tok


def evaluate(model: Any = None, tasks: str | list[str] | None = None, cfg: EvalConfig | None = None, *,
             tokenizer: Any = None, name: str | None = None, progress: bool = True) -> EvalCard:
    """Run `tasks` (default cfg.tasks) on `model` and return its EvalCard.

    `model` is a loaded model (pass `tokenizer` too), or None to load cfg.model (+ cfg.adapter). Every task's
    rows are loaded and checked before the first generation, so a bad row fails in seconds, not minutes in.
    """
    cfg = cfg or EvalConfig()
    task_list = get_tasks(tasks if tasks is not None else cfg.tasks)
    rows = {t.name: t.load(cfg) for t in task_list}
    if model is None:
        model, tokenizer = load_for_eval(cfg)
        name = name or (f"{cfg.model} + {cfg.adapter}" if cfg.adapter else cfg.model)
    elif tokenizer is None:
        raise ConfigError("tokenizer", "evaluate(model, …) with a loaded model needs tokenizer=",
                          config="evaluate")
    training = model.training
    model.eval()
    table, scores, samples, seconds, info = [], [], {}, {}, {}
    try:
        for task in task_list:
            if progress:
                print(f"[eval] {task.name}: {len(rows[task.name])} rows …", flush=True)
            start = time.perf_counter()
            out: TaskOutput = task.run(model, tokenizer, rows[task.name], cfg)
            seconds[task.name] = round(time.perf_counter() - start, 1)
            table += slice_rows(task, out.scores)
            scores += scores_json(task.name, out.scores)
            samples[task.name] = out.samples[:cfg.samples_per_task]
            info[task.name] = out.info
    finally:
        model.train(training)
    meta = {"created": datetime.now().astimezone().isoformat(timespec="seconds"), "seconds": seconds,
            "rows": {t: len(r) for t, r in rows.items()}, "info": info, "config": cfg.to_dict()}
    return EvalCard(name or getattr(model, "name_or_path", type(model).__name__), table, scores, samples,
                    meta)


# ---- comparing two cards -----------------------------------------------------------------------------------

def bootstrap_delta(base: dict[str, float], new: dict[str, float], *, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float, bool]:
    """mean(new) - mean(base) with a percentile bootstrap CI: (delta, low, high, paired).

    Items present in both cards are resampled together (a paired bootstrap: each draw picks item ids and
    takes both models' scores on them); otherwise each side is resampled on its own.
    """
    rng = np.random.default_rng(seed)
    common = sorted(set(base) & set(new))
    paired = len(common) >= 2 and len(common) == len(base) == len(new)
    if paired:
        diff = np.array([new[i] - base[i] for i in common])  # [N]
        draws = rng.integers(0, len(diff), size=(n_boot, len(diff)))
        stats = diff[draws].mean(axis=1)
        delta = float(diff.mean())
    else:
        a, b = np.array(list(base.values())), np.array(list(new.values()))
        if not len(a) or not len(b):
            return math.nan, math.nan, math.nan, False
        stats = (b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
                 - a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1))
        delta = float(b.mean() - a.mean())
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return delta, float(low), float(high), paired


def compare(base: EvalCard, new: EvalCard, *, n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> list[dict]:
    """Per task, metric and slice in both cards: base and new values, the change with its bootstrap CI, and a
    verdict: "regression" / "improvement" when the whole CI lies on the worse / better side of zero."""
    new_rows = {(r["task"], r["metric"], r["slice"]): r for r in new.table}
    out = []
    for r in base.table:
        key = (r["task"], r["metric"], r["slice"])
        if key not in new_rows:
            continue
        delta, low, high, paired = bootstrap_delta(base.item_scores(*key), new.item_scores(*key),
                                                   n_boot=n_boot, seed=seed, level=level)
        sign = 1 if r["higher_is_better"] else -1
        worse, better = (high < 0, low > 0) if sign > 0 else (low > 0, high < 0)
        out.append({"task": key[0], "metric": key[1], "slice": key[2], "base": r["value"],
                    "new": new_rows[key]["value"], "delta": delta, "ci_low": low, "ci_high": high,
                    "n": new_rows[key]["n"], "paired": paired, "higher_is_better": r["higher_is_better"],
                    "verdict": "regression" if worse else "improvement" if better else "no clear change"})
    return out


def comparison_figure(rows: list[dict], *, slices: bool = False,
                      title: str = "new − base, with 95% bootstrap CI"):
    """The change per metric (and slice) as points with CI bars, coloured by verdict."""
    import plotly.graph_objects as go

    rows = [r for r in rows if slices or r["slice"] == ALL]
    colours = {"regression": "#cf222e", "improvement": "#1a7f37", "no clear change": "#8c959f"}
    fig = go.Figure()
    for verdict, colour in colours.items():
        pick = [r for r in rows if r["verdict"] == verdict]
        if not pick:
            continue
        fig.add_scatter(
            name=verdict, mode="markers", marker={"color": colour, "size": 9},
            x=[r["delta"] for r in pick],
            y=[f"{r['task']}/{r['metric']}" + ("" if r["slice"] == ALL else f" [{r['slice']}]")
               + ("" if r["higher_is_better"] else " ↓") for r in pick],
            error_x={"type": "data", "symmetric": False, "array": [r["ci_high"] - r["delta"] for r in pick],
                     "arrayminus": [r["delta"] - r["ci_low"] for r in pick]})
    fig.add_vline(x=0, line_dash="dot")
    fig.update_layout(title=title, height=max(300, 26 * len(rows)),
                      margin={"l": 300, "r": 20, "t": 40, "b": 30},
                      xaxis_title="change (↓ metrics: a rise is a regression)")
    return fig
