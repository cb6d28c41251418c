"""Reward-model measurements: the reward of a reply, pairwise accuracy per kind, and calibration.

    rewards = score(model, tok, prompts, replies)
    scored = score_pairs(model, tok, rows)       # per pair: chosen and rejected rewards
    pairwise_metrics(scored)["accuracy"], expected_calibration_error(calibration(scored))

`model` is a sequence-classification model with one output (labkit.stages.reward.load_reward_model).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch


def _score_head(model):
    """The module that maps the last hidden state to the reward (PEFT wraps it to keep it trainable)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "score":
            return module
    raise TypeError(f"{type(model).__name__} has no `score` head: load it with load_reward_model")


def _head_linear(head) -> torch.nn.Linear:
    if hasattr(head, "modules_to_save"):  # peft ModulesToSaveWrapper: the trained copy is the active one
        active = head.active_adapter if isinstance(head.active_adapter, str) else head.active_adapter[0]
        return head.modules_to_save[active]
    return head


@torch.inference_mode()
def score(model, tok, prompts: Sequence[Any], replies: Sequence[Any], *, batch_size: int = 16) -> list[float]:
    """The reward of each (prompt, reply): message lists (or a plain-string reply to a message-list prompt).

    The head is applied in float32 to the last token's hidden state: in bf16 the rewards of two replies that
    differ by one digit often round to the same value, and a tie would count as a wrong ranking.
    """
    from labkit.data.chat import encode, render

    texts = []
    for p, r in zip(prompts, replies):
        prompt = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        reply = [{"role": "assistant", "content": r}] if isinstance(r, str) else list(r)
        texts.append(encode(tok, render(tok, prompt + reply)))
    pad = model.config.pad_token_id
    head = _score_head(model)
    linear = _head_linear(head)
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda module, args, output: captured.__setitem__("hidden", args[0]))
    out = [0.0] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(texts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for row, i in enumerate(idx):
                ids[row, :len(texts[i])] = torch.tensor(texts[i])
                attn[row, :len(texts[i])] = 1
            model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device))
            # [b, H], right-padded
            last = captured["hidden"][torch.arange(len(idx)), attn.sum(-1) - 1]
            bias = linear.bias.float() if linear.bias is not None else None
            rewards = torch.nn.functional.linear(last.float(), linear.weight.float(), bias)[:, 0]  # [b]
            for row, i in enumerate(idx):
                out[i] = float(rewards[row])
    finally:
        hook.remove()
    return out


def score_pairs(model, tok, rows: Sequence[dict]) -> list[dict]:
    """Per pair: chosen and rejected rewards, their `source_kind`, and the prompt text."""
    rewards = score(model, tok, [r["prompt"] for r in rows for _ in (0, 1)],
                    [r[k] for r in rows for k in ("chosen", "rejected")])
    return [{"prompt": _text(r["prompt"]), "kind": r.get("source_kind", "all"), "chosen": rewards[2 * i],
             "rejected": rewards[2 * i + 1]} for i, r in enumerate(rows)]


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def pairwise_metrics(scored: Sequence[dict]) -> dict[str, Any]:
    """Accuracy (chosen scored higher), overall and per kind, and the mean margin r_c - r_r."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for s in scored:
        by_kind[s["kind"]].append(s["chosen"] > s["rejected"])
    wins = [s["chosen"] > s["rejected"] for s in scored]
    return {"accuracy": sum(wins) / len(wins),
            "margin": sum(s["chosen"] - s["rejected"] for s in scored) / len(scored),
            **{f"accuracy/{k}": sum(v) / len(v) for k, v in sorted(by_kind.items())}}


def calibration(scored: Sequence[dict], bins: int = 10) -> list[dict]:
    """Reliability table: predicted P(A beats B) = σ(r_A - r_B) against how often A was the chosen reply.

    Each pair is counted in both orders (chosen first: outcome 1; rejected first: outcome 0), so the table is
    symmetric about 0.5 and a perfectly calibrated model lies on the diagonal. `bins` must be even: a bin
    straddling 0.5 would hold both orders of the same pairs and always read 0.5 against 0.5.
    """
    if bins % 2:
        raise ValueError(f"bins must be even, got {bins}")
    points = []
    for s in scored:
        p = 1 / (1 + math.exp(-(s["chosen"] - s["rejected"])))
        points += [(p, 1.0), (1 - p, 0.0)]
    table = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            table.append({"bin": f"{lo:.1f}–{hi:.1f}", "predicted": sum(p for p, _ in inside) / len(inside),
                          "observed": sum(y for _, y in inside) / len(inside), "count": len(inside)})
    return table


def expected_calibration_error(table: Sequence[dict]) -> float:
    """Count-weighted mean |observed - predicted| over the calibration table's bins."""
    n = sum(row["count"] for row in table)
    return sum(row["count"] * abs(row["observed"] - row["predicted"])
               for row in table) / n if n else float("nan")
