"""Preference accuracy without a judge: does the model put more probability on the chosen reply than the
rejected?

    scores = pair_logps(model, tok, rows)           # per pair: summed and per-token log-probs of both replies
    preference_accuracy(scores)                      # {"accuracy", "accuracy_avg", "by_kind", "pairs"}

`accuracy` ranks by summed log-prob log π(y|x), the quantity DPO moves; `accuracy_avg` by the per-token
average, the one SimPO, IPO and ORPO move. With reference scores too, `implicit_reward_accuracy` counts pairs
whose DPO reward β log π/π_ref is higher for the chosen reply (what TRL logs as `rewards/accuracies`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from labkit.data.tokenize import sft_example
from labkit.models.logprobs import masked_logps


def _encode(tok, prompt, reply, source: str, index: int) -> tuple[list[int], list[int]]:
    if isinstance(prompt, str):
        ex = sft_example(tok, {"prompt": prompt, "completion": reply}, source=source, index=index)
    else:
        ex = sft_example(tok, {"prompt": list(prompt), "completion": list(reply)}, source=source, index=index)
    return ex["input_ids"], ex["assistant_masks"]


def completion_logps(model, tok, pairs: Sequence[tuple[Any, Any]], *, batch_size: int = 16,
                     source: str = "pairs") -> list[tuple[float, float, int]]:
    """(summed log-prob, per-token log-prob, tokens) of each (prompt, completion) under the model.

    Prompts and completions are conversational message lists or plain strings.
    """
    encoded = [_encode(tok, p, c, source, i) for i, (p, c) in enumerate(pairs)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    scored = masked_logps(model, [ids for ids, _ in encoded], [mask for _, mask in encoded], pad_id=pad,
                          batch_size=batch_size)
    return [(total, total / max(n, 1), n) for total, n in scored]


def pair_logps(model, tok, rows: Sequence[dict], *, batch_size: int = 16,
               source: str = "pairs") -> list[dict]:
    """Log-probs of each preference row's chosen and rejected replies: one dict per row.

    Keys: chosen, rejected (summed), chosen_avg, rejected_avg (per token), chosen_tokens, rejected_tokens,
    kind (the row's `source_kind`, or "all").
    """
    flat = [(r["prompt"], r[key]) for r in rows for key in ("chosen", "rejected")]
    scored = completion_logps(model, tok, flat, batch_size=batch_size, source=source)
    out = []
    for k, r in enumerate(rows):
        (c, c_avg, c_n), (j, j_avg, j_n) = scored[2 * k], scored[2 * k + 1]
        out.append({"chosen": c, "rejected": j, "chosen_avg": c_avg, "rejected_avg": j_avg,
                    "chosen_tokens": c_n, "rejected_tokens": j_n, "kind": r.get("source_kind", "all")})
    return out


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def preference_accuracy(scores: Sequence[dict]) -> dict[str, Any]:
    """Share of pairs ranked chosen-over-rejected, overall and per `kind`,
    by summed and by per-token log-prob."""
    by_kind: dict[str, list[bool]] = defaultdict(list)
    by_kind_avg: dict[str, list[bool]] = defaultdict(list)
    for s in scores:
        by_kind[s["kind"]].append(s["chosen"] > s["rejected"])
        by_kind_avg[s["kind"]].append(s["chosen_avg"] > s["rejected_avg"])
    return {"accuracy": _share([s["chosen"] > s["rejected"] for s in scores]),
            "accuracy_avg": _share([s["chosen_avg"] > s["rejected_avg"] for s in scores]),
            "by_kind": {k: _share(v) for k, v in sorted(by_kind.items())},
            "by_kind_avg": {k: _share(v) for k, v in sorted(by_kind_avg.items())},
            "pairs": len(scores)}


def implicit_reward_accuracy(policy: Sequence[dict], reference: Sequence[dict]) -> float:
    """Share of pairs where log π/π_ref is larger for the chosen reply (ties count as wrong,
    as TRL counts them)."""
    wins = [(p["chosen"] - r["chosen"]) > (p["rejected"] - r["rejected"]) for p, r in zip(policy, reference)]
    return _share(wins)
