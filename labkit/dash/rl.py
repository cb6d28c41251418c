"""RL lab views: a rollout browser, a reward playground, and static figures of RL runs and comparisons.

RL stages write every sampled completion to ``rollouts.jsonl`` in the run directory, one JSON object
per line (see :data:`ROLLOUT_FIELDS`)::

    {"step": 3, "group": 0, "prompt": "...", "completion": "...", "rewards": {"correctness": 1.0},
     "reward": 1.0, "advantage": 0.87, "tokens": 41, "truncated": false}

``rollout_html`` renders one step of them as a table; :class:`RolloutBrowser` puts a step slider and
a group dropdown over it. Both widgets here show the live controls in Jupyter and also carry a static
HTML copy in the same output (of the last step, of the initial answers): a headless papermill run
keeps only a widget's initial state, and nbconvert shows the HTML when that state is missing.

The figures take what the stages and bench scripts return (a metrics.jsonl, rows of timings, result
dicts) and give plotly figures for notebooks and the tour's HTML report.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from labkit.dash.live import _in_kernel
from labkit.errors import ConfigError, DataError
from labkit.runs.callbacks import metrics_frame, read_jsonl, to_float

# What a rollout record holds; the first four are required, the rest default to empty.
ROLLOUT_FIELDS = ("step", "group", "prompt", "completion", "rewards", "reward", "advantage", "tokens",
                  "truncated")
_REQUIRED = ROLLOUT_FIELDS[:4]
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}  # how labkit's JSONL writers store them

_CELL = "border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left"
_TEXT = "white-space:pre-wrap;word-break:break-word;font-family:monospace;font-size:12px"
_GREEN, _RED = (46, 160, 67), (218, 54, 51)


# ---- rollout records ------------------------------------------------------------------------------

def _number(value: Any, source: str, row: int | None, field: str) -> float | None:
    if value is None:
        return None  # TRL lets a reward function return None for a completion it does not score
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    number = to_float(value)
    if number is None:
        raise DataError(source, row, field,
                        f"must be a number or null, got {type(value).__name__}: {value!r:.60}")
    return number


def _integer(value: Any, source: str, row: int | None, field: str) -> int:
    number = to_float(value)
    if number is None or not math.isfinite(number) or number != int(number):
        raise DataError(source, row, field, f"must be an integer, got {type(value).__name__}: {value!r:.60}")
    return int(number)


def _normalise(raw: Any, source: str, row: int | None) -> dict:
    """One rollout record with typed fields; unknown extra fields are kept as they are."""
    if not isinstance(raw, Mapping):
        raise DataError(source, row, None, f"a rollout must be a JSON object with {', '.join(_REQUIRED)}, "
                                           f"got {type(raw).__name__}")
    for field in _REQUIRED:
        if field not in raw:
            raise DataError(source, row, field, f"missing; every rollout needs {', '.join(_REQUIRED)} "
                                                "(see labkit.dash.rl.ROLLOUT_FIELDS)")
    rewards = raw.get("rewards") or {}
    if not isinstance(rewards, Mapping):
        raise DataError(source, row, "rewards", f"must be an object {{reward function: score}}, "
                                                f"got {type(rewards).__name__}")
    tokens = raw.get("tokens")
    return {
        **raw,
        "step": _integer(raw["step"], source, row, "step"),
        "group": _integer(raw["group"], source, row, "group"),
        "rewards": {str(k): _number(v, source, row, f"rewards.{k}") for k, v in rewards.items()},
        "reward": _number(raw.get("reward"), source, row, "reward"),
        "advantage": _number(raw.get("advantage"), source, row, "advantage"),
        "tokens": None if tokens is None else _integer(tokens, source, row, "tokens"),
        "truncated": bool(raw.get("truncated", False)),
    }


def load_rollouts(source: str | Path | Iterable[Mapping]) -> list[dict]:
    """Rollout records from a rollouts.jsonl path (or the run directory holding one) or from a list.

    Checks every record (required fields, numeric rewards) and raises DataError naming the file, row
    and field. A last line cut short by a run that is still writing (or crashed) is skipped.
    """
    if not isinstance(source, (str, Path)):
        return [_normalise(raw, "rollouts", i) for i, raw in enumerate(source)]
    path = Path(source)
    if path.is_dir():
        path = path / "rollouts.jsonl"
    if not path.is_file():
        raise DataError(str(path), None, None,
                        "no such file; RL stages write rollouts.jsonl into their output "
                                               "directory when log_rollouts is on")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise DataError(str(path), i, None, f"not a JSON object ({exc.msg})") from exc
        records.append(_normalise(raw, str(path), i))
    return records


# ---- the rollout table ----------------------------------------------------------------------------

def _text(value: Any) -> str:
    """A prompt or completion as text: a string as is, a message list as `role: content` lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, (list, tuple)) and all(isinstance(m, Mapping) for m in value):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def advantage_color(advantage: float | None, scale: float) -> str | None:
    """Background for an advantage cell: green above zero, red below, stronger the larger |A| / scale."""
    if advantage is None or not math.isfinite(advantage) or advantage == 0 or scale <= 0:
        return None
    r, g, b = _GREEN if advantage > 0 else _RED
    alpha = 0.12 + 0.63 * min(1.0, abs(advantage) / scale)
    return f"rgba({r}, {g}, {b}, {alpha:.2f})"


def _note(message: str) -> str:
    return f"<div style='font-family:sans-serif;color:#666;font-style:italic'>{html.escape(message)}</div>"


def _steps_list(steps: Sequence[int]) -> str:
    shown = ", ".join(str(s) for s in steps[:20])
    return shown + (f", … ({len(steps)} steps)" if len(steps) > 20 else "")


def _step_html(records: Sequence[dict], step: int, group: int | None, steps: Sequence[int]) -> str:
    """The table for the given records, all of one step (already filtered to ``group`` when given)."""
    if not steps:
        return _note("no rollouts recorded")
    if not records:
        if group is None:
            return _note(f"no rollouts at step {step}; steps with rollouts: {_steps_list(steps)}")
        return _note(f"no rollouts for group {group} at step {step}")
    groups: dict[int, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], []).append(r)
    functions = list(dict.fromkeys(name for r in records for name in r["rewards"]))
    # Colour intensity is relative to the largest |advantage| shown, so the table reads at any scale.
    scale = max((abs(r["advantage"]) for r in records
                 if r["advantage"] is not None and math.isfinite(r["advantage"])), default=0.0)

    totals = [r["reward"] for r in records if r["reward"] is not None and math.isfinite(r["reward"])]
    truncated = sum(r["truncated"] for r in records)
    summary = (f"<b>step {step}</b>{'' if group is None else f', group {group}'} · {len(groups)} "
               f"group{'s' * (len(groups) != 1)} · {len(records)} completions"
               + (f" · mean reward {sum(totals) / len(totals):.3g}" if totals else "")
               + f" · {truncated} truncated")
    head = ["group", "prompt", "#", "completion", *functions, "total", "advantage", "tokens", "truncated"]
    out = [f"<div class='labkit-rollouts' style='font-family:sans-serif;font-size:13px'>"
           f"<div style='margin:4px 0'>{summary}</div>"
           "<table style='border-collapse:collapse;margin:0'><thead><tr>"
           + "".join(f"<th style='{_CELL};background:#f5f5f5'>{html.escape(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for g, rows in sorted(groups.items()):
        rewards = [r["reward"] for r in rows if r["reward"] is not None]
        stats = f"mean {sum(rewards) / len(rewards):.3g}" if rewards else ""
        if len(rewards) == len(rows) > 1 and max(rewards) - min(rewards) < 1e-12:
            # What frac_reward_zero_std counts: equal rewards give zero advantage, nothing to learn.
            stats += "<br><span style='color:#b35900'>all equal: no signal</span>"
        for i, r in enumerate(rows):
            cells = []
            if i == 0:
                span = f" rowspan='{len(rows)}'"
                cells.append(f"<td style='{_CELL}'{span}><b>{g}</b><br><small>{stats}</small></td>")
                cells.append(f"<td style='{_CELL};max-width:280px'{span}>"
                             f"<div style='{_TEXT}'>{html.escape(_text(r['prompt']))}</div></td>")
            cells.append(f"<td style='{_CELL}'>{i}</td>")
            cells.append(f"<td style='{_CELL};min-width:240px;max-width:560px'>"
                         f"<div style='{_TEXT}'>{html.escape(_text(r['completion']))}</div></td>")
            cells += [f"<td style='{_CELL}'>{_fmt(r['rewards'].get(name))}</td>" for name in functions]
            cells.append(f"<td style='{_CELL}'><b>{_fmt(r['reward'])}</b></td>")
            color = advantage_color(r["advantage"], scale)
            background = f";background:{color}" if color else ""
            cells.append(f"<td style='{_CELL}{background}' class='advantage'>{_fmt(r['advantage'], True)}"
                         "</td>")
            cells.append(f"<td style='{_CELL}'>{'—' if r['tokens'] is None else r['tokens']}</td>")
            cells.append(f"<td style='{_CELL}'>"
                         + ("<b style='color:#b35900'>yes</b>" if r["truncated"] else "no")
                         + "</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def rollout_html(rollouts: str | Path | Iterable[Mapping], step: int, group: int | None = None) -> str:
    """An HTML table of one step's rollouts (or one group of it): the prompt once per group, then each
    completion (escaped, newlines kept) with its per-function rewards, total, advantage (green above
    zero, red below, stronger for larger |A|), token count and truncation flag."""
    records = load_rollouts(rollouts)
    steps = sorted({r["step"] for r in records})
    chosen = [r for r in records if r["step"] == step and (group is None or r["group"] == group)]
    return _step_html(chosen, step, group, steps)


# ---- widgets --------------------------------------------------------------------------------------

def _display_with_static(widget: widgets.Widget, static: str) -> None:
    """Display ``widget`` with ``static`` HTML in the same output.

    JupyterLab prefers the widget view and draws the live controls. nbconvert, and a notebook opened
    after its kernel is gone, fall back to the HTML, so an executed headless notebook still shows the
    table. Outside a kernel there is no widget to talk to: the HTML alone.
    """
    from IPython.display import HTML, display

    bundle_of = getattr(widget, "_repr_mimebundle_", None)  # None once the widget is closed
    if not _in_kernel() or not callable(bundle_of):
        display(HTML(static))
        return
    display({**(bundle_of() or {}), "text/html": static}, raw=True)


class RolloutBrowser:
    """Browse what the policy sampled: a step slider over the steps present, a group dropdown ("all" or
    one prompt's group), and the :func:`rollout_html` table of the selection.

    Built from a list of records, a rollouts.jsonl path or the run directory. ``show(step, group)``
    returns the table as ``IPython.display.HTML``; ``static_html()`` is the last step's table, which
    the displayed output also carries for a headless run.
    """

    def __init__(self, rollouts_or_path: str | Path | Iterable[Mapping], *, max_height: str = "640px"):
        self.rollouts = load_rollouts(rollouts_or_path)
        if not self.rollouts:
            source = str(rollouts_or_path) if isinstance(rollouts_or_path, (str, Path)) else "rollouts"
            raise DataError(source, None, None,
                            "no rollout records to browse; has the run logged a step yet?")
        self._by_step: dict[int, list[dict]] = {}
        for r in self.rollouts:
            self._by_step.setdefault(r["step"], []).append(r)
        self.steps = sorted(self._by_step)
        self.step = widgets.SelectionSlider(options=self.steps, value=self.steps[-1], description="step",
                                            continuous_update=False)
        self.group = widgets.Dropdown(options=self._group_options(self.steps[-1]), value="all",
                                      description="group")
        self.out = widgets.HTML(layout=widgets.Layout(max_height=max_height, overflow="auto"))
        self._quiet = False  # set while the dropdown's options change, so one step change renders once
        self.step.observe(self._on_step, names="value")
        self.group.observe(self._on_group, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.step, self.group]), self.out])
        self._render()

    def _group_options(self, step: int) -> list[tuple[str, Any]]:
        groups = sorted({r["group"] for r in self._by_step.get(step, [])})
        return [("all", "all")] + [(str(g), g) for g in groups]

    def _on_step(self, _change: Any = None) -> None:
        keep = self.group.value
        options = self._group_options(self.step.value)
        self._quiet = True
        try:
            self.group.options = options
            self.group.value = keep if keep in [v for _, v in options] else "all"
        finally:
            self._quiet = False
        self._render()

    def _on_group(self, _change: Any = None) -> None:
        if not self._quiet:
            self._render()

    def html(self, step: int | None = None, group: int | str | None = None) -> str:
        """The table for ``step`` (default: the slider's) and ``group`` (None or "all": every group)."""
        step = self.step.value if step is None else int(step)
        group = None if group in (None, "all") else int(group)
        chosen = [r for r in self._by_step.get(step, []) if group is None or r["group"] == group]
        return _step_html(chosen, step, group, self.steps)

    def _render(self) -> None:
        self.out.value = self.html(self.step.value, self.group.value)

    def show(self, step: int | None = None, group: int | str | None = None):
        """The table for ``step`` (default: the slider's) as ``IPython.display.HTML``."""
        from IPython.display import HTML

        return HTML(self.html(step, group))

    def static_html(self) -> str:
        """The last step's table, every group: what a headless run can keep."""
        return self.html(self.steps[-1], None)

    def _ipython_display_(self) -> None:
        _display_with_static(self.widget, self.static_html())


def _split_candidates(text: str) -> list[str]:
    """Candidate answers from the playground's text box: blocks separated by a line that is just ``---``."""
    blocks, current = [], []
    for line in text.split("\n"):
        if line.strip() == "---":
            blocks.append("\n".join(current))
            current = []
        else:
            current.append(line)
    blocks.append("\n".join(current))
    return [b.strip("\n") for b in blocks if b.strip()]


def playground_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The playground's rows ({"completion", <function>: score…, "total", "extracted"}) as an HTML table."""
    if not rows:
        return _note("no candidate answers: write one per block, blocks separated by a line '---'")
    fixed = ("completion", "total", "extracted")
    functions = list(dict.fromkeys(k for r in rows for k in r if k not in fixed))
    totals = [to_float(r.get("total")) for r in rows]
    best = max((t for t in totals if t is not None and math.isfinite(t)), default=None)
    head = ["#", "completion", "extracted", *functions, "total"]
    out = ["<table style='border-collapse:collapse;font-family:sans-serif;font-size:13px'><thead><tr>"
           + "".join(f"<th style='{_CELL};background:#f5f5f5'>{html.escape(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for i, (r, total) in enumerate(zip(rows, totals)):
        extracted = r.get("extracted")
        cells = [f"<td style='{_CELL}'>{i}</td>",
                 f"<td style='{_CELL};max-width:520px'><div style='{_TEXT}'>"
                 f"{html.escape(_text(r.get('completion', '')))}</div></td>",
                 f"<td style='{_CELL}'>{'—' if extracted is None else html.escape(str(extracted))}</td>"]
        cells += [f"<td style='{_CELL}'>{_fmt(to_float(r.get(name)))}</td>" for name in functions]
        top = best is not None and total == best
        cells.append(f"<td style='{_CELL}{';background:#e6f4ea' if top else ''}'><b>{_fmt(total)}</b></td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class RewardPlayground:
    """Score hand-written answers with reward functions before training on them.

    A text box holds one candidate answer per block (blocks separated by a line ``---``); the "score"
    button runs :func:`labkit.rewards.playground` on them and shows one row per candidate. ``score()``
    does the same from code and returns the rows; ``static_html()`` is the table of the initial
    answers, which the displayed output also carries for a headless run.
    """

    def __init__(self, funcs: Sequence[Any], prompt: Any, answers: Sequence[str], **columns: Any):
        self.funcs, self.prompt, self.columns = list(funcs), prompt, dict(columns)
        self._n_initial = len(answers)
        self.text = widgets.Textarea(value="\n---\n".join(_text(a) for a in answers),
                                     rows=min(16, max(4, 2 * len(answers) + 2)),
                                     layout=widgets.Layout(width="100%"))
        self.button = widgets.Button(description="score", button_style="primary")
        self.out = widgets.HTML()
        self.rows: list[dict] = []
        self.rows = self.score()
        self._static = self.out.value
        self.button.on_click(self._on_click)
        header = widgets.HTML(f"<div style='font-family:sans-serif'><b>prompt</b>: "
                              f"<span style='{_TEXT}'>{html.escape(_text(prompt))}</span><br><small>one "
                              "answer per block, blocks separated by a line <code>---</code></small></div>")
        self.widget = widgets.VBox([header, self.text, self.button, self.out])

    def candidates(self) -> list[str]:
        """The answers now in the text box, one per ``---``-separated block, blank blocks dropped."""
        return _split_candidates(self.text.value)

    def _columns(self, n: int) -> dict[str, Any]:
        for name, value in self.columns.items():
            # A per-answer list written for the initial answers cannot follow a changed list of answers.
            if isinstance(value, (list, tuple)) and len(value) == self._n_initial != n:
                raise ConfigError(name,
                                  f"has one value per initial answer ({self._n_initial}) but there are now "
                                  f"{n} candidates; pass a single value for every answer, e.g. "
                                  f"{name}=\"54\"",
                                  config="reward_playground")
        return self.columns

    def score(self, text: str | None = None) -> list[dict]:
        """Score the candidates in the text box (after setting it to ``text`` when given);
        returns the rows."""
        from labkit.rewards import playground

        if text is not None:
            self.text.value = text
        answers = self.candidates()
        self.rows = playground(self.funcs, self.prompt, answers,
                               **self._columns(len(answers))) if answers else []
        self.out.value = playground_html(self.rows)
        return self.rows

    def _on_click(self, _button: Any = None) -> None:
        try:
            self.score()
        except Exception as exc:  # a button callback has nowhere to raise to: show the reason instead
            self.out.value = (f"<div style='color:#b00020;font-family:sans-serif'>{type(exc).__name__}: "
                              f"{html.escape(str(exc))}</div>")

    def static_html(self) -> str:
        """The table of the initial answers' scores, fixed at construction, for a headless output."""
        return self._static

    def _ipython_display_(self) -> None:
        _display_with_static(self.widget, self.static_html())


def reward_playground(funcs: Sequence[Any], prompt: Any, answers: Sequence[str],
                      **columns: Any) -> RewardPlayground:
    """A text box of candidate answers, a "score" button and a table of what each reward function pays.

    ``columns`` are dataset columns the rewards need, e.g. ``answer="54"`` for correctness.
    """
    return RewardPlayground(funcs, prompt, answers, **columns)


# ---- static figures -------------------------------------------------------------------------------

def _points(frame: Mapping[str, list[float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one column, without the nan gaps metrics_frame leaves where a metric was absent."""
    pairs = [(s, v) for s, v in zip(frame.get("step", []), frame.get(key, []))
             if v is not None and math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


_PER_FUNCTION = re.compile(r"^rewards/(.+)/mean$")


def rl_curves(log_path_or_events: str | Path | Iterable[Mapping], *, title: str = "RL run") -> go.Figure:
    """A run's RL curves against step from its metrics.jsonl (or events): reward and each reward
    function, held-out accuracy (eval markers), KL to the reference, completion length, truncation rate."""
    if isinstance(log_path_or_events, (str, Path)):
        path = Path(log_path_or_events)
        events = read_jsonl(path / "metrics.jsonl" if path.is_dir() else path)
    else:
        events = list(log_path_or_events)
    steps, evals = metrics_frame(events, "step"), metrics_frame(events, "eval")
    panels = [
        ("reward", [("reward", "reward")]),
        ("reward per function", [(key, m[1]) for key in steps if (m := _PER_FUNCTION.match(key))]),
        ("held-out accuracy", [("heldout/accuracy", "held-out accuracy")]),
        ("KL to reference", [("kl", "kl")]),
        ("completion length (tokens)", [("completions/mean_length", "completion length")]),
        ("truncation rate", [("completions/clipped_ratio", "truncation rate")]),
    ]
    fig = make_subplots(rows=2, cols=3, subplot_titles=[p[0] for p in panels], vertical_spacing=0.16)
    for index, (panel, series) in enumerate(panels):
        row, col = index // 3 + 1, index % 3 + 1
        is_eval = panel == "held-out accuracy"
        drawn = False
        for key, name in series:
            x, y = _points(evals if is_eval else steps, key)
            if not x:
                continue
            drawn = True
            fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="markers" if is_eval else "lines+markers",
                                     marker={"size": 9 if is_eval else 3}), row=row, col=col)
        if is_eval:
            fig.update_yaxes(range=[-0.02, 1.02], row=row, col=col)
        if not drawn:
            fig.add_annotation(text="not logged", x=0.5, y=0.5, xref="x domain", yref="y domain",
                               showarrow=False,
                               font={"color": "gray"}, row=row, col=col)
    fig.update_xaxes(title_text="step", row=2)
    fig.update_layout(title=title, height=560, margin={"t": 70, "b": 40})
    return fig


def _field(row: Mapping, i: int, name: str, source: str) -> float:
    if name not in row:
        raise DataError(source, i, name, "missing")
    value = to_float(row[name])
    if value is None:
        raise DataError(source, i, name, f"must be a number, got {row[name]!r:.40}")
    return value


def accuracy_vs_time(rows: Sequence[Mapping[str, Any]], *,
                     title: str = "held-out accuracy against wall-clock time"
                     ) -> go.Figure:
    """Held-out accuracy against wall-clock seconds, one line per method (rows: method, seconds, step,
    accuracy)."""
    methods: dict[str, list[tuple[float, float, Any]]] = {}
    for i, row in enumerate(rows):
        seconds = _field(row, i, "seconds", "accuracy_vs_time rows")
        accuracy = _field(row, i, "accuracy", "accuracy_vs_time rows")
        methods.setdefault(str(row.get("method", "run")), []).append((seconds, accuracy, row.get("step")))
    fig = go.Figure()
    for method, points in methods.items():
        points.sort(key=lambda p: p[0])
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], name=method, mode="lines+markers",
            customdata=[["—" if p[2] is None else p[2]] for p in points],
            hovertemplate=f"{html.escape(method)}<br>%{{x:.0f}} s, step %{{customdata[0]}}<br>"
                          "accuracy %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="wall-clock seconds", yaxis_title="held-out accuracy",
                      yaxis={"range": [-0.02, 1.02]}, height=380)
    return fig


def compare_rl(results: Mapping[str, Any], *, title: str = "RL methods: accuracy and cost") -> go.Figure:
    """Per method: held-out accuracy before and after (grouped bars), training seconds, and the final KL
    to the reference where the method reports one. Values are metrics dicts or RunResults."""
    metrics = {name: getattr(r, "metrics", r) for name, r in results.items()}
    names = list(metrics)
    for name, m in metrics.items():
        for part in ("before", "after"):
            if not isinstance(m.get(part), Mapping) or "accuracy" not in m[part]:
                raise DataError("compare_rl results", None, f"{name}.{part}.accuracy",
                                "missing; each method needs before/after held-out accuracy")
    kls = [to_float(m["after"].get("kl")) for m in metrics.values()]
    with_kl = any(k is not None for k in kls)
    titles = ["held-out accuracy", "training seconds"] + (["KL to reference after"] if with_kl else [])
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles,
                        column_widths=[0.5, 0.25, 0.25] if with_kl else [0.6, 0.4])
    for part, color in (("before", "#9e9e9e"), ("after", "#1f77b4")):
        fig.add_bar(x=names, y=[to_float(metrics[n][part]["accuracy"]) for n in names], name=part,
                    marker_color=color, row=1, col=1)
    fig.add_bar(x=names, y=[to_float(metrics[n].get("train_seconds")) for n in names], name="train seconds",
                marker_color="#ff7f0e", showlegend=False, row=1, col=2)
    if with_kl:
        fig.add_bar(x=names, y=kls, name="KL", marker_color="#9467bd", showlegend=False, row=1, col=3)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=title, barmode="group", height=380)
    return fig


def rounds_plot(rounds: Sequence[Mapping[str, Any]], *, title: str = "rejection sampling, round by round"
                ) -> go.Figure:
    """Verified rate and held-out accuracy per round (lines) with the samples kept (bars, right axis).

    Round 0 usually has only held-out accuracy (before training); missing values leave gaps.
    """
    numbered = sorted((_field(r, i, "round", "rounds_plot rounds"), i) for i, r in enumerate(rounds))
    rows = [rounds[i] for _, i in numbered]
    x = [int(n) for n, _ in numbered]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=x, y=[to_float(r.get("kept")) for r in rows], name="kept samples", marker_color="#c7c7c7",
                opacity=0.6, secondary_y=True)
    for key, name, color in (("verified_rate", "verified rate (train prompts)", "#ff7f0e"),
                             ("heldout_accuracy", "held-out accuracy", "#1f77b4")):
        fig.add_trace(go.Scatter(x=x, y=[to_float(r.get(key)) for r in rows], name=name, mode="lines+markers",
                                 line={"color": color}), secondary_y=False)
    fig.update_yaxes(title_text="rate", range=[-0.02, 1.02], secondary_y=False)
    fig.update_yaxes(title_text="kept samples", secondary_y=True, showgrid=False)
    fig.update_xaxes(title_text="round", dtick=1)
    fig.update_layout(title=title, height=380)
    return fig
