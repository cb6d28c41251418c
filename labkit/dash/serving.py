"""Notebook 09's views of the inference engines: completions as rows, a sampling-parameter panel, the MMLU
scorer the quantisation table takes, and the GRPO-with-vLLM rollout timings as a figure."""

from __future__ import annotations

import html
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go

from labkit.dash.rl import _display_with_static
from labkit.infer import Completion, Engine, SamplingParams
from labkit.infer.serving import chat_prompts


def completion_rows(completions: Sequence[Completion], *, tokens_shown: int = 8) -> list[dict[str, Any]]:
    """One row per completion: prompt index, adapter, finish reason, token count, the first token ids, the
    mean log-prob (when asked for) and the text, i.e. every field of the engine interface's Completion."""
    rows = []
    for c in completions:
        lps = [x for x in (c.logprobs or []) if x == x]    # NaN: an EOS the engine put back
        rows.append({"prompt": c.prompt_index, "adapter": c.adapter or "base", "finish": c.finish_reason,
                     "tokens": c.num_tokens, "token_ids": c.token_ids[:tokens_shown],
                     "mean_logprob": round(statistics.fmean(lps), 3) if lps else None, "text": c.text})
    return rows


def mmlu_accuracy(items: int, *, seed: int = 0) -> Callable[[Any, Any], float]:
    """A scorer for labkit.infer.quant.quant_table's accuracy column: letter log-likelihood accuracy on
    `items` real MMLU questions (shipped with labkit, offline), the same items for every variant."""
    from labkit.config import EvalConfig
    from labkit.eval import mmlu

    rows = mmlu.load(EvalConfig(source="real", limit=items, seed=seed))

    def accuracy(model, tok) -> float:
        scored = mmlu.score_logprobs(rows, mmlu.letter_logprobs(model, tok, rows))
        return statistics.fmean(s.score for s in scored)

    return accuracy


def rollout_figure(per_batch: Sequence[dict[str, Any]], *, title: str = "GRPO rollouts from the engine"):
    """Seconds per rollout batch spent refitting the engine, generating and checking log-probs, stacked."""
    fig = go.Figure()
    steps = [f"step {r['step']}" for r in per_batch]
    for key, name in (("refit_seconds", "refit (policy pushed)"), ("generate_seconds", "generate"),
                      ("check_seconds", "log-prob check")):
        fig.add_bar(x=steps, y=[r.get(key, 0.0) for r in per_batch], name=name)
    fig.update_layout(title=title, barmode="stack", yaxis_title="seconds")
    return fig


class SamplingPanel:
    """Sliders for temperature, top-p, top-k, max tokens and seed, and an adapter picker: every change
    regenerates the answer to one question through `engine`.

    `panel` in a cell shows the live controls; headless (papermill) the widget state is not kept, so the
    panel also shows the answer under its starting settings as static HTML. `panel.generate(**settings)`
    does the same from code and returns the text.
    """

    def __init__(self, engine: Engine, question: str, *, adapters: Sequence[str | None] = (None,),
                 max_new_tokens: int = 48, seed: int = 0):
        self.engine = engine
        self.prompt = chat_prompts(engine.tokenizer, [question])[0]
        self.question = question
        self.adapters = list(adapters)
        self.settings: dict[str, Any] = {"temperature": 0.0, "top_p": 1.0, "top_k": 0,
                                         "max_new_tokens": max_new_tokens, "seed": seed,
                                         "adapter": self.adapters[0]}
        self.text = ""
        self._out = None

    def generate(self, **settings: Any) -> str:
        """Regenerate with these settings changed (temperature, top_p, top_k, max_new_tokens, seed, adapter);
        returns the answer."""
        unknown = set(settings) - set(self.settings)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(self.settings)}")
        self.settings.update(settings)
        s = dict(self.settings)
        adapter = s.pop("adapter")
        self.text = self.engine.generate([self.prompt], SamplingParams(**s), adapter=adapter)[0].text
        if self._out is not None:
            self._out.value = self._html()
        return self.text

    def _html(self) -> str:
        s = self.settings
        head = (f"{self.engine.name} · {s['adapter'] or 'base'} · T={s['temperature']:g} "
                f"top-p={s['top_p']:g} "
                f"top-k={s['top_k']} max={s['max_new_tokens']} seed={s['seed']}")
        return (f"<div><b>{html.escape(self.question)}</b><br><small>{html.escape(head)}</small>"
                f"<pre style='white-space:pre-wrap'>{html.escape(self.text)}</pre></div>")

    @property
    def widget(self):
        """The ipywidgets UI (built on first use)."""
        import ipywidgets as w

        s = self.settings
        controls = {
            "temperature": w.FloatSlider(s["temperature"], min=0.0, max=1.5, step=0.05,
                                         description="temperature"),
            "top_p": w.FloatSlider(s["top_p"], min=0.05, max=1.0, step=0.05, description="top-p"),
            "top_k": w.IntSlider(s["top_k"], min=0, max=200, step=1, description="top-k (0 off)"),
            "max_new_tokens": w.IntSlider(s["max_new_tokens"], min=1, max=256, description="max tokens"),
            "seed": w.IntText(s["seed"], description="seed"),
            "adapter": w.Dropdown(options=[("base" if a is None else a, a) for a in self.adapters],
                                  value=s["adapter"], description="adapter"),
        }
        self._out = w.HTML(self._html())
        for name, ctl in controls.items():
            ctl.continuous_update = False   # regenerate when a slider is released, not on every tick
            ctl.observe(lambda change, key=name: self.generate(**{key: change["new"]}), names="value")
        return w.VBox([*controls.values(), self._out])

    def _ipython_display_(self) -> None:
        if not self.text:
            self.generate()
        _display_with_static(self.widget, self._html())


__all__ = ["SamplingPanel", "completion_rows", "mmlu_accuracy", "rollout_figure"]
