"""Small, fast evaluations that stages run before and after training: format accuracy and forgetting."""

from __future__ import annotations

import torch

from labkit.data.chat import assistant_mask
from labkit.data.samples import extract_answer, format_ok, load_sample
from labkit.models.generate import generate
from labkit.models.logprobs import IGNORE_INDEX, sequence_logprobs, shift_for_next_token


def conversation(row: dict) -> list[dict]:
    """The full conversation of a conversational row: `messages`, or `prompt` + `completion` lists."""
    return row["messages"] if "messages" in row else [*row["prompt"], *row["completion"]]


@torch.inference_mode()
def probe_losses(model, tok, rows: list[dict]) -> list[dict]:
    """Per-token loss of each row's assistant turns given the turns before them."""
    out = []
    for row in rows:
        msgs = conversation(row)
        ids, mask = assistant_mask(tok, msgs)
        input_ids = torch.tensor([ids], device=model.device)
        labels = input_ids.masked_fill(torch.tensor([mask], device=model.device) == 0, IGNORE_INDEX)
        logits, labels = shift_for_next_token(model(input_ids).logits, labels)
        out.append({"prompt": msgs[-2]["content"],
                    "loss": -sequence_logprobs(logits, labels, average=True).item()})
    return out


def forgetting_probe(model, tok, rows: list[dict] | None = None) -> dict:
    """Mean per-token loss on held-out general questions' reference answers (lower = remembers more).

    Scored before and after a stage, a rise is what catastrophic forgetting looks like on this scale.
    """
    per_prompt = probe_losses(model, tok, rows if rows is not None else load_sample("general_prompts"))
    return {"probe_loss": sum(p["loss"] for p in per_prompt) / len(per_prompt), "per_prompt": per_prompt}


def format_eval(model, tok, rows: list[dict], *, max_new_tokens: int = 32, batch_size: int = 16) -> dict:
    """Greedy replies to held-out questions, scored for the `#### n` format and for the right answer."""
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    outs = generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    samples = [{"prompt": p[-1]["content"], "reply": o.text, "target": r["messages"][-1]["content"],
                "format_ok": format_ok(o.text), "correct": extract_answer(o.text) == r["answer"]}
               for p, o, r in zip(prompts, outs, rows)]
    n = max(len(samples), 1)
    return {"format_accuracy": sum(s["format_ok"] for s in samples) / n,
            "answer_accuracy": sum(s["correct"] for s in samples) / n, "samples": samples}
