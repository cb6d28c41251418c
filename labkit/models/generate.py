"""Batched generation with transformers `generate`: the CPU engine behind chat boxes, samples and evals."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from labkit.data.chat import render

Messages = list[dict[str, str]]


@dataclasses.dataclass
class Generation:
    """One completion from `generate`, with the prompt as templated and whether it ended on EOS."""

    prompt: str            # the templated text the model saw
    text: str              # the decoded completion, special tokens removed
    token_ids: list[int]   # the completion's tokens, up to and including EOS when it stopped
    finished: bool         # stopped on EOS rather than on max_new_tokens


def as_prompt_text(tokenizer, prompt: str | Messages, *, chat: bool = True) -> str:
    """A message list, or a plain string wrapped as one user turn when chat=True, templated for generation."""
    if isinstance(prompt, str) and not chat:
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return render(tokenizer, messages, add_generation_prompt=True)  # raises if there is no chat template


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[str | Messages], *, max_new_tokens: int = 64,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 8,
             chat: bool = True, seed: int | None = None, **generate_kwargs: Any) -> list[Generation]:
    """Generate one completion per prompt, in left-padded batches (greedy unless do_sample)."""
    if seed is not None:
        torch.manual_seed(seed)
    texts = [as_prompt_text(tokenizer, p, chat=chat) for p in prompts]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    out: list[Generation] = []
    try:
        for i in range(0, len(texts), batch_size):
            chunk = texts[i:i + batch_size]
            # The chat template already wrote BOS/special tokens into the text.
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=not chat)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
            seqs = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                  pad_token_id=pad, eos_token_id=eos, **sampling, **generate_kwargs)
            new = seqs[:, enc["input_ids"].shape[1]:]  # [B, T_new]
            for text, row in zip(chunk, new.tolist()):
                finished = eos in row
                ids = row[:row.index(eos) + 1] if finished else row
                out.append(Generation(text, tokenizer.decode(ids, skip_special_tokens=True), ids, finished))
    finally:
        tokenizer.padding_side = side
    return out


def chat(model, tokenizer, history: Messages, *, max_new_tokens: int = 128, **kwargs: Any) -> str:
    """One assistant reply to a conversation (greedy by default)."""
    return generate(model, tokenizer, [history], max_new_tokens=max_new_tokens, **kwargs)[0].text
