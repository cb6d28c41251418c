"""Train–serve agreement: do the engine's log-probs equal the trainer's, and what does a gap do to GRPO?

An RL step samples completions with an inference engine and then scores the same tokens with the trainer's
forward pass. Policy-gradient losses take exp(logp_train - logp_engine) as an importance ratio (GRPO/PPO
clip it at 1 ± ε); on the first step after a weight sync it should be exactly 1. Any numerical gap between
the two forward passes (dtype, attention kernel, padding, batch composition) shows up as ratios away from 1
and as tokens clipped for no reason.

- `engine_vs_trainer`: any Engine's per-token log-probs against labkit.models.logprobs on the same tokens;
  max/mean |Δ|, KL estimates and importance-ratio statistics;
- `batch_invariance`: one prompt decoded alone and inside batches of other prompts;
- `agreement_sweep`: the same comparison under dtype, attention implementation and padding settings, to
  find the ones that agree (fp32 with right padding matches to ~1e-6; bf16 does not).

Every function returns plain rows (dicts) for a table; the `*_figure` helpers plot them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from labkit.errors import ConfigError
from labkit.infer.engine import Engine, Prompt, SamplingParams
from labkit.infer.hf import HFEngine, encode_prompts
from labkit.models.logprobs import IGNORE_INDEX, masked_token_logps, shift_for_next_token, token_logprobs

PADDING = ("right", "left")
# A sampled rollout: k1/k3 KL estimates assume the tokens are samples of the engine's distribution.
ROLLOUT = SamplingParams(temperature=1.0, max_new_tokens=32, seed=0, logprobs=True)


@torch.inference_mode()
def trainer_logprobs(model, sequences: list[list[int]], masks: list[list[int]], *, pad_id: int,
                     padding_side: str = "right", batch_size: int = 16) -> list[torch.Tensor]:
    """Per-token log-probs [n_i] of the masked tokens, as a trainer's forward pass computes them.

    padding_side "right" is labkit's own scoring (labkit.models.logprobs.masked_token_logps); "left" pads on
    the left and passes no position_ids, as trainers that left-pad prompts do, so every real token sits at a
    position shifted by the padding (rotary embeddings make that exact only in exact arithmetic).
    """
    if padding_side == "right":
        return masked_token_logps(model, sequences, masks, pad_id=pad_id, batch_size=batch_size)
    if padding_side != "left":
        raise ConfigError("padding_side", f"must be one of {PADDING}, got {padding_side!r}")
    out: list[torch.Tensor] = [torch.zeros(0)] * len(sequences)
    for start in range(0, len(sequences), batch_size):
        idx = list(range(start, min(start + batch_size, len(sequences))))
        width = max(len(sequences[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)            # [b, T]
        attn = torch.zeros_like(ids)                                               # [b, T]
        labels = torch.full_like(ids, IGNORE_INDEX)                                # [b, T]
        for row, i in enumerate(idx):
            seq, n = sequences[i], len(sequences[i])
            ids[row, width - n:] = torch.tensor(seq)
            attn[row, width - n:] = 1
            labels[row, width - n:] = torch.tensor([t if m else IGNORE_INDEX for t, m in zip(seq, masks[i])])
        logits = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device)).logits  # [b,T,V]
        logits, shifted = shift_for_next_token(logits, labels.to(model.device))
        lp = token_logprobs(logits, shifted).cpu()                                 # [b, T-1]
        keep = (shifted != IGNORE_INDEX).cpu()
        for row, i in enumerate(idx):
            out[i] = lp[row][keep[row]]
    return out


def agreement_stats(engine_lps: Sequence[Sequence[float]], trainer_lps: Sequence[torch.Tensor], *,
                    eps: float = 0.2) -> dict[str, Any]:
    """Summary of per-token log-prob gaps, pooled over all tokens of all sequences.

    max_abs / mean_abs: |logp_engine - logp_train|. kl_k1 = mean(logp_e - logp_t) and kl_k3 =
    mean(r - 1 - log r) with r = exp(logp_t - logp_e): estimates of KL(engine || trainer) that hold when the
    tokens were sampled from the engine (k3 is never negative and has lower variance). ratio_mean_dev /
    ratio_max_dev: mean and max |r - 1| of GRPO's importance ratio; clipped: the fraction of tokens with
    |r - 1| > eps, which PPO-style clipping takes out of the gradient.
    """
    e = torch.tensor([x for seq in engine_lps for x in seq], dtype=torch.float64)
    t = torch.cat([torch.as_tensor(s, dtype=torch.float64) for s in trainer_lps]) if trainer_lps else e[:0]
    if e.shape != t.shape:
        raise ConfigError("logprobs", f"{e.numel()} engine log-probs but {t.numel()} trainer log-probs")
    if e.numel() == 0:
        return {"tokens": 0, "max_abs": None, "mean_abs": None, "kl_k1": None, "kl_k3": None,
                "ratio_mean_dev": None, "ratio_max_dev": None, "clipped": None}
    log_r = t - e
    r = log_r.exp()
    return {"tokens": int(e.numel()), "max_abs": float(log_r.abs().max()),
            "mean_abs": float(log_r.abs().mean()),
            "kl_k1": float((-log_r).mean()), "kl_k3": float((r - 1 - log_r).mean()),
            "ratio_mean_dev": float((r - 1).abs().mean()), "ratio_max_dev": float((r - 1).abs().max()),
            "clipped": float(((r - 1).abs() > eps).double().mean())}


def engine_vs_trainer(engine: Engine, model, tok, prompts: Sequence[Prompt],
                      sampling: SamplingParams | None = None, *, padding_side: str = "right",
                      eps: float = 0.2, batch_size: int = 16) -> dict[str, Any]:
    """Generate with `engine` (log-probs on), score the same tokens with `model`'s forward pass, compare.

    Prompts go to the engine as token ids, so both sides see the same tokens whatever the engine's own
    tokenisation would do. Returns agreement_stats plus "per_token": [(logp_engine, logp_train)] pairs per
    sequence, for plots.
    """
    sampling = dataclasses.replace(sampling or ROLLOUT, logprobs=True)
    ids = encode_prompts(tok, prompts)
    out = engine.generate(ids, sampling)
    seqs = [ids[c.prompt_index] + c.token_ids for c in out]
    masks = [[0] * len(ids[c.prompt_index]) + [1] * c.num_tokens for c in out]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    train = trainer_logprobs(model, seqs, masks, pad_id=pad, padding_side=padding_side, batch_size=batch_size)
    stats = agreement_stats([c.logprobs for c in out], train, eps=eps)
    stats["per_token"] = [list(zip(c.logprobs, t.tolist())) for c, t in zip(out, train)]
    return stats


def batch_invariance(model, tok, prompt: Prompt, others: Sequence[Prompt], *,
                     sizes: Sequence[int] = (1, 2, 8, 32), max_new_tokens: int = 32) -> list[dict[str, Any]]:
    """Decode `prompt` greedily alone and as one of `size` prompts in a static batch (the rest from `others`,
    cycled); compare its tokens and log-probs with the size-1 run.

    Rows: batch_size, same_tokens, first_divergence (index of the first different token, None if none),
    max_abs and mean_abs log-prob difference over the tokens before it. Left padding and a different
    kernel shape per batch are what move the numbers.
    """
    if not others and any(s > 1 for s in sizes):
        raise ConfigError("others", "batches larger than 1 need other prompts to fill them")
    sampling = SamplingParams(max_new_tokens=max_new_tokens, logprobs=True)
    rows, ref = [], None
    for size in sorted(set([1, *sizes])):
        batch = [prompt] + [others[i % len(others)] for i in range(size - 1)]
        got = HFEngine(model, tok, batch_size=size).generate(batch, sampling)[0]
        if ref is None:
            ref = got
        diverge = next((i for i, (a, b) in enumerate(zip(got.token_ids, ref.token_ids)) if a != b), None)
        if diverge is None and len(got.token_ids) != len(ref.token_ids):
            diverge = min(len(got.token_ids), len(ref.token_ids))
        n = len(got.token_ids) if diverge is None else diverge
        gaps = [abs(a - b) for a, b in zip(got.logprobs[:n], ref.logprobs[:n])]
        if size in sizes:
            rows.append({"batch_size": size, "same_tokens": diverge is None, "first_divergence": diverge,
                         "max_abs": max(gaps, default=0.0),
                         "mean_abs": sum(gaps) / len(gaps) if gaps else 0.0})
    return rows


# The settings the sweep tries by default: the baseline, then one change at a time, then the usual RL mix
# (a bf16 engine feeding an fp32 trainer).
SETTINGS = (
    {"dtype": "float32", "attn": "sdpa", "padding": "right"},
    {"dtype": "float32", "attn": "eager", "padding": "right"},
    {"dtype": "float32", "attn": "sdpa", "padding": "left"},
    {"dtype": "bfloat16", "attn": "sdpa", "padding": "right"},
    {"dtype": "bfloat16", "attn": "sdpa", "padding": "right", "trainer_dtype": "float32"},
)


def _variant(model, dtype: str, attn: str):
    """A copy of `model` in `dtype` with attention implementation `attn` ("sdpa" or "eager")."""
    from labkit.models.device import resolve_dtype

    m = copy.deepcopy(model).to(resolve_dtype(dtype))
    m.set_attn_implementation(attn)
    m.eval()
    return m


def agreement_sweep(model, tok, prompts: Sequence[Prompt], settings: Sequence[dict[str, str]] = SETTINGS, *,
                    sampling: SamplingParams | None = None, eps: float = 0.2) -> list[dict[str, Any]]:
    """engine_vs_trainer under each setting: an HFEngine on a copy of `model` in `dtype` with attention
    `attn` samples; a trainer copy in `trainer_dtype` (default: the same) with the same attention scores,
    padded on `padding`. One row per setting: the setting's fields and agreement_stats (no per_token)."""
    rows = []
    for s in settings:
        engine_model = _variant(model, s["dtype"], s["attn"])
        trainer_dtype = s.get("trainer_dtype", s["dtype"])
        trainer = engine_model if trainer_dtype == s["dtype"] else _variant(model, trainer_dtype, s["attn"])
        stats = engine_vs_trainer(HFEngine(engine_model, tok), trainer, tok, prompts, sampling,
                                  padding_side=s["padding"], eps=eps)
        stats.pop("per_token")
        rows.append({"engine_dtype": s["dtype"], "trainer_dtype": trainer_dtype, "attn": s["attn"],
                     "padding": s["padding"], **stats})
    return rows


def agreement_figure(rows: list[dict[str, Any]]):
    """Max and mean |Δ log p| per setting on a log scale, with the clipped fraction as hover text: fp32
    settings sit near 1e-6, bf16 ones orders of magnitude higher."""
    import plotly.graph_objects as go

    names = [f"{r['engine_dtype']}→{r['trainer_dtype']}, {r['attn']}, {r['padding']}" for r in rows]
    floor = 1e-9   # a log axis cannot show an exact 0
    fig = go.Figure()
    for key in ("max_abs", "mean_abs"):
        fig.add_bar(name=key, x=names, y=[max(r[key] or 0.0, floor) for r in rows],
                    hovertext=[f"clipped at ε: {r['clipped']:.1%}" for r in rows])
    fig.update_layout(title="Engine vs trainer log-probs", yaxis_type="log", yaxis_title="|Δ log p| (nats)",
                      barmode="group")
    return fig


def ratio_figure(result: dict[str, Any], eps: float = 0.2):
    """Histogram of GRPO's importance ratio exp(logp_train - logp_engine) over the tokens of one
    engine_vs_trainer result, with the clip range marked."""
    import plotly.graph_objects as go

    ratios = [math.exp(t - e) for seq in result["per_token"] for e, t in seq]
    fig = go.Figure(go.Histogram(x=ratios, nbinsx=60))
    for x in (1 - eps, 1 + eps):
        fig.add_vline(x=x, line_dash="dot")
    fig.update_layout(title="Importance ratio on the first step (ideal: all exactly 1)",
                      xaxis_title="exp(logp_train − logp_engine)", yaxis_title="tokens")
    return fig


def batch_invariance_figure(rows: list[dict[str, Any]]):
    """Log-prob drift of one prompt against the batch it was decoded in."""
    import plotly.graph_objects as go

    notes = ["same tokens" if r["same_tokens"] else f"diverges at {r['first_divergence']}" for r in rows]
    fig = go.Figure(go.Scatter(x=[r["batch_size"] for r in rows], y=[r["max_abs"] for r in rows],
                               mode="lines+markers", text=notes))
    fig.update_layout(title="Batch invariance: the same prompt in batches of other prompts", xaxis_type="log",
                      xaxis_title="batch size", yaxis_title="max |Δ log p| vs alone")
    return fig


__all__ = ["PADDING", "ROLLOUT", "SETTINGS", "agreement_figure", "agreement_stats", "agreement_sweep",
           "batch_invariance", "batch_invariance_figure", "engine_vs_trainer", "ratio_figure",
           "trainer_logprobs"]
