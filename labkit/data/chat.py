"""Chat templates: render conversations and mark which tokens come from assistant turns (the SFT loss
mask)."""

from __future__ import annotations

from typing import Any

from labkit.errors import DataError

Messages = list[dict[str, Any]]


def tokenizer_name(tokenizer: Any) -> str:
    """A short name for a tokenizer in error messages."""
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def require_chat_template(tokenizer: Any, source: str) -> None:
    """Raise DataError (field 'chat_template') when the tokenizer cannot template conversations."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            source,
            None,
            "chat_template",
            f"tokenizer '{tokenizer_name(tokenizer)}' has no chat template, so conversational rows cannot be "
            "rendered; use a chat model's tokenizer (labkit.models.load_tokenizer() has one) "
            "or set tokenizer.chat_template",
        )


def render(tokenizer: Any, messages: Messages, add_generation_prompt: bool = False) -> str:
    """The conversation as the text the model sees, through the tokenizer's chat template."""
    require_chat_template(tokenizer, f"tokenizer '{tokenizer_name(tokenizer)}'")
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of already-templated text; the template wrote the special tokens, so add none."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assistant_mask(
    tokenizer: Any, messages: Messages, *, source: str = "messages", row: int | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of the templated conversation and a mask that is 1 exactly on assistant-produced tokens.

    Assistant-produced means the reply text and its end-of-turn token (eos, `<|im_end|>` for ChatML),
    not the `<|im_start|>assistant\\n` header the template writes before it, and not the separator
    after the end-of-turn token: generation stops at eos, so the model never has to produce it.

    SmolLM2's template has no `{% generation %}` markers, so transformers' own
    `return_assistant_tokens_mask` cannot be used; the mask is found by rendering prefixes instead.
    For assistant turn i, the tokens of messages[:i] with the generation prompt must be a prefix of
    the tokens of messages[:i+1], which must be a prefix of the whole conversation; the turn's tokens
    are the difference. A template that breaks this (e.g. one that injects text into the generation
    prompt only) raises rather than producing a silently wrong mask.
    """
    ids = encode(tokenizer, render(tokenizer, messages))
    mask = [0] * len(ids)
    eos_id = tokenizer.eos_token_id
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        field = f"messages[{i}]"
        if i == 0:
            raise DataError(
                source,
                row,
                field,
                "the conversation opens with an assistant turn; "
                "the mask needs a system or user turn before it",
            )
        before = encode(tokenizer, render(tokenizer, messages[:i], add_generation_prompt=True))
        through = encode(tokenizer, render(tokenizer, messages[: i + 1]))
        for shorter, longer, what in (
            (before, through, f"messages[:{i + 1}]"),
            (through, ids, "the whole conversation"),
        ):
            if longer[: len(shorter)] != shorter:
                at = next(
                    (k for k, (a, b) in enumerate(zip(shorter, longer, strict=False)) if a != b), len(longer)
                )
                raise DataError(
                    source,
                    row,
                    field,
                    f"the chat template of tokenizer '{tokenizer_name(tokenizer)}' does not tokenise "
                    f"a prefix of the conversation into a prefix of {what} (they differ at token {at}), "
                    "so the assistant mask cannot be computed by prefixes",
                )
        start, end = len(before), len(through)
        turn = through[start:end]
        if eos_id in turn:
            # Keep up to and including the last eos; a template whose turns end in some other token
            # keeps the whole rendered turn.
            end = start + len(turn) - turn[::-1].index(eos_id)
        mask[start:end] = [1] * (end - start)
    return ids, mask


def mask_spans(tokenizer: Any, messages: Messages) -> list[tuple[str, bool]]:
    """(token text, is_assistant) for each token of the templated conversation, for coloured display."""
    ids, mask = assistant_mask(tokenizer, messages)
    return [(tokenizer.decode([t]), bool(m)) for t, m in zip(ids, mask, strict=True)]
