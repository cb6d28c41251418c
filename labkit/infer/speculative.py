"""Speculative decoding: prompt lookup (n-gram) and draft-model assisted generation, with acceptance counts.

Both run through transformers' assisted generation: a cheap proposer guesses the next few tokens, the target
model scores all of them in one forward pass, and the longest prefix that greedy decoding would also have
picked is kept (plus the target's own next token). Greedy output is therefore the target's greedy output;
only the number of target forward passes changes.

- prompt lookup (`prompt_lookup_num_tokens`): the proposer copies the tokens that followed the last n-gram
  the last time it appeared in the context. Free, and good when the reply repeats its prompt (editing,
  extraction, code).
- draft model (`assistant_model`): a smaller model proposes. `truncated_draft(model, k)` builds one from the
  target itself, its first k decoder layers with the same embeddings, norm and head (no training, so it
  proposes what an early exit of the target would say).

transformers does not report how many proposed tokens were accepted, so `count_acceptance` wraps the
candidate generator of one `generate` call and counts proposals and matches per verification step.

    rows = compare_speculative(model, tok, prompts, draft_layers=(4, 8))
    speedup_figure(rows).show()
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

from labkit.errors import ConfigError
from labkit.infer.engine import Prompt, SamplingParams
from labkit.infer.hf import HFEngine, encode_prompts


def truncated_draft(model, layers: int):
    """A draft model made of `model`'s first `layers` decoder layers, sharing every weight with it.

    Embeddings, the final norm and the LM head are the target's own tensors (no copy, no extra memory), so
    the draft reads and writes the same token space and needs no tokenizer of its own. Works for decoder-only
    models whose config has `num_hidden_layers` (Llama, Qwen, Mistral...).
    """
    total = getattr(model.config, "num_hidden_layers", None)
    if total is None:
        raise ConfigError("draft_layers", f"{type(model).__name__} has no num_hidden_layers to truncate")
    if not 1 <= layers <= total:
        raise ConfigError("draft_layers", f"must be between 1 and {total}, got {layers}")
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:layers]
    draft = type(model)(cfg)
    # Point every parameter and buffer of the draft at the target's tensor of the same name; the randomly
    # initialised ones are dropped. Tied weights stay tied because both names resolve to one tensor.
    source = dict(model.named_parameters(remove_duplicate=False))
    source.update(model.named_buffers(remove_duplicate=False))
    names = [n for n, _ in draft.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in draft.named_buffers(remove_duplicate=False)]
    for name in names:
        owner, _, attr = name.rpartition(".")
        module = draft.get_submodule(owner)
        slot = module._parameters if attr in module._parameters else module._buffers
        slot[attr] = source[name]
    # Assisted generation tunes the draft's generation_config (num_assistant_tokens) as it goes: give the
    # draft its own copy so the target's is never touched.
    draft.generation_config = copy.deepcopy(model.generation_config)
    draft.eval()
    return draft


@dataclasses.dataclass
class Acceptance:
    """Counts from assisted generation: each verification step proposes some tokens and accepts a prefix."""

    steps: int = 0        # target forward passes that verified proposals (one per step)
    proposed: int = 0     # draft tokens proposed, summed over steps
    accepted: int = 0     # proposed tokens that matched what the target would pick

    @property
    def rate(self) -> float | None:
        """accepted / proposed; None when nothing was proposed."""
        return self.accepted / self.proposed if self.proposed else None

    @property
    def tokens_per_step(self) -> float | None:
        """Tokens produced per target forward pass: accepted + the target's own one, per step."""
        return (self.accepted + self.steps) / self.steps if self.steps else None


@contextlib.contextmanager
def count_acceptance(model) -> Iterator[Acceptance]:
    """Count proposed and accepted tokens of every assisted `generate` call on `model` inside the block.

    transformers builds the candidate generator inside `generate` and calls get_candidates (the proposal)
    then update_candidate_strategy(..., n_matches) once per step; an instance-level wrapper of
    `_get_candidate_generator` wraps both on the generator it returns. Restored on exit.
    """
    counts = Acceptance()
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    shadowed = target.__dict__.get("_get_candidate_generator")   # an outer count_acceptance's wrapper
    original = target._get_candidate_generator

    def wrapped(*args: Any, **kwargs: Any):
        gen = original(*args, **kwargs)
        get_candidates, update = gen.get_candidates, gen.update_candidate_strategy
        pending = {"n": 0}

        def get(input_ids, *a: Any, **k: Any):
            cand, logits = get_candidates(input_ids, *a, **k)
            pending["n"] = cand.shape[1] - input_ids.shape[1]
            return cand, logits

        def update_strategy(input_ids, scores, num_matches):
            counts.steps += 1
            counts.proposed += pending["n"]
            counts.accepted += int(num_matches)
            return update(input_ids, scores, num_matches)

        gen.get_candidates, gen.update_candidate_strategy = get, update_strategy
        return gen

    target._get_candidate_generator = wrapped
    try:
        yield counts
    finally:
        if shadowed is None:
            del target._get_candidate_generator   # the class method shows through again
        else:
            target._get_candidate_generator = shadowed


def _method_kwargs(method: str, model, *, lookup_tokens: int, draft_layers: int | None, draft=None,
                   draft_tokens: int | None) -> dict[str, Any]:
    if method == "greedy":
        return {}
    if method == "prompt_lookup":
        return {"prompt_lookup_num_tokens": lookup_tokens}
    if method == "draft":
        if draft is None:
            if draft_layers is None:
                raise ConfigError("draft_layers", "method 'draft' needs draft= or draft_layers=")
            draft = truncated_draft(model, draft_layers)
        if draft_tokens is not None:
            draft.generation_config.num_assistant_tokens = draft_tokens
        return {"assistant_model": draft}
    raise ConfigError("method", f"must be one of greedy, prompt_lookup, draft; got {method!r}")


def speculative_run(model, tok, prompts: Sequence[Prompt], *, method: str = "prompt_lookup",
                    max_new_tokens: int = 64, lookup_tokens: int = 10, draft=None,
                    draft_layers: int | None = None, draft_tokens: int | None = None) -> dict[str, Any]:
    """Greedy-decode each prompt on its own (batch 1: assisted generation's limit) with one method.

    method: "greedy" (the baseline), "prompt_lookup" (`lookup_tokens` proposed per step) or "draft" (a draft
    model: `draft`, or `truncated_draft(model, draft_layers)`; `draft_tokens` caps its proposals per step).
    Returns {"method", "token_ids" (per prompt), "seconds" (per prompt), "tokens", "acceptance"}.
    """
    kwargs = _method_kwargs(method, model, lookup_tokens=lookup_tokens, draft_layers=draft_layers,
                            draft=draft, draft_tokens=draft_tokens)
    engine = HFEngine(model, tok, batch_size=1, generate_kwargs=kwargs)
    sampling = SamplingParams(max_new_tokens=max_new_tokens)
    ids, seconds = [], []
    with count_acceptance(model) as counts:
        for p in encode_prompts(tok, prompts):
            t0 = time.perf_counter()
            ids.append(engine.generate([p], sampling)[0].token_ids)
            seconds.append(time.perf_counter() - t0)
    return {"method": method, "token_ids": ids, "seconds": seconds, "tokens": sum(map(len, ids)),
            "acceptance": counts}


def compare_speculative(model, tok, prompts: Sequence[Prompt], *, max_new_tokens: int = 64,
                        lookup_tokens: int = 10, draft_layers: Sequence[int] = (), drafts: dict | None = None,
                        draft_tokens: int | None = None, repeats: int = 1) -> list[dict[str, Any]]:
    """Plain greedy vs prompt lookup vs each draft, on the same prompts: one row per method.

    drafts: extra draft models by name ({"smollm-360m": model}); draft_layers: truncated drafts of the
    target to build. With repeats > 1 each method runs that many times, in alternating order, and its median
    time counts.
    Row fields: method, tokens, seconds, tokens_per_s, speedup (vs greedy), acceptance (accepted/proposed),
    tokens_per_step (per target forward), target_forwards, same_as_greedy (token-identical outputs).
    """
    runs: list[tuple[str, dict[str, Any]]] = [("greedy", {"method": "greedy"}),
                                              ("prompt_lookup", {"method": "prompt_lookup"})]
    runs += [(f"draft ({k} layers)", {"method": "draft", "draft": truncated_draft(model, k)})
             for k in draft_layers]
    runs += [(f"draft ({name})", {"method": "draft", "draft": d}) for name, d in (drafts or {}).items()]
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in runs}
    for rep in range(max(1, repeats)):
        # Alternate the order each round so drifting machine load does not favour one method.
        for label, kw in (runs if rep % 2 == 0 else runs[::-1]):
            results[label].append(speculative_run(
                model, tok, prompts, max_new_tokens=max_new_tokens, lookup_tokens=lookup_tokens,
                draft_tokens=draft_tokens, **kw))
    rows, base = [], None
    for label, _ in runs:
        seconds = statistics.median(sum(r["seconds"]) for r in results[label])
        res = results[label][0]
        if base is None:
            base = {"ids": res["token_ids"], "seconds": seconds}
        acc: Acceptance = res["acceptance"]
        forwards = acc.steps if label != "greedy" else res["tokens"]
        rows.append({
            "method": label, "tokens": res["tokens"], "seconds": round(seconds, 3),
            "tokens_per_s": round(res["tokens"] / seconds, 1), "speedup": round(base["seconds"] / seconds, 2),
            "acceptance": None if acc.rate is None else round(acc.rate, 3),
            "tokens_per_step": round(res["tokens"] / forwards, 2) if forwards else None,
            "target_forwards": forwards, "same_as_greedy": res["token_ids"] == base["ids"],
        })
    return rows


def speedup_figure(rows: list[dict[str, Any]]):
    """Bars of speed-up over greedy per method, labelled with the acceptance rate: a high acceptance that
    buys no speed-up means the proposer costs about what it saves."""
    import plotly.graph_objects as go

    labels = [f"{r['acceptance']:.0%} accepted" if r["acceptance"] is not None else "" for r in rows]
    fig = go.Figure(go.Bar(x=[r["method"] for r in rows], y=[r["speedup"] for r in rows], text=labels))
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="plain greedy")
    fig.update_layout(title="Speculative decoding: speed-up over greedy (batch 1)", yaxis_title="speed-up ×",
                      xaxis_title="method")
    return fig


__all__ = ["Acceptance", "compare_speculative", "count_acceptance", "speculative_run", "speedup_figure",
           "truncated_draft"]
