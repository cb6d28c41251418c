"""Rows to training tensors for SFT: token ids plus the mask of tokens the loss learns from.

labkit tokenises itself (instead of TRL's `assistant_only_loss`) because the embedded model's chat
template has no `{% generation %}` markers; TRL takes the pre-tokenised `input_ids` + `assistant_masks`
columns as they are and builds labels from them.
"""

from __future__ import annotations

from typing import Any

from labkit.data.chat import assistant_mask, encode, render
from labkit.data.types import Kind, detect_kind, is_conversational


def sft_example(tok: Any, row: dict[str, Any], *, loss_on: str = "assistant", source: str = "data",
                index: int | None = None) -> dict[str, list[int]]:
    """{"input_ids", "assistant_masks"} for one row of any SFT-able kind.

    conversational: every assistant turn is trained (multi-turn aware); prompt-completion: only the
    completion; language modeling: every token. loss_on="all" trains on every token of any kind.
    """
    kind = detect_kind(row, source=source, index=index)
    if kind == Kind.CONVERSATIONAL:
        ids, mask = assistant_mask(tok, row["messages"], source=source, row=index)
    elif kind == Kind.PROMPT_COMPLETION and is_conversational(row):
        ids, mask = assistant_mask(tok, [*row["prompt"], *row["completion"]], source=source, row=index)
        prompt_len = len(encode(tok, render(tok, row["prompt"], add_generation_prompt=True)))
        mask = [0] * prompt_len + mask[prompt_len:]  # assistant turns inside the prompt are context
    elif kind == Kind.PROMPT_COMPLETION:
        prompt = tok(row["prompt"])["input_ids"]
        completion = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids, mask = prompt + completion, [0] * len(prompt) + [1] * len(completion)
    elif kind == Kind.LANGUAGE_MODELING:
        ids = tok(row["text"])["input_ids"] + [tok.eos_token_id]
        mask = [1] * len(ids)
    else:
        from labkit.errors import DataError

        raise DataError(source, index, None, f"rows of kind '{kind.value}' are not SFT data; "
                        "use conversational, prompt-completion or language-modeling rows")
    if loss_on == "all":
        mask = [1] * len(ids)
    return {"input_ids": ids, "assistant_masks": mask}


def sft_dataset(tok: Any, rows, *, loss_on: str = "assistant", source: str = "data"):
    """A `datasets.Dataset` of sft_example rows (other columns dropped)."""
    from datasets import Dataset

    examples = [sft_example(tok, dict(r), loss_on=loss_on, source=source, index=i)
                for i, r in enumerate(rows)]
    return Dataset.from_list(examples)
