"""Token view: a conversation after the chat template, one chip per token,
assistant-loss tokens highlighted."""

from __future__ import annotations

import html

from labkit.data.chat import assistant_mask


def token_view(tokenizer, messages: list[dict[str, str]]):
    """An HTML display of the templated conversation: green chips are the tokens the SFT loss trains on
    (assistant replies and their end-of-turn token); grey ones are context the loss masks out."""
    from IPython.display import HTML

    ids, mask = assistant_mask(tokenizer, messages)
    chips = []
    for tid, m in zip(ids, mask):
        text = tokenizer.decode([tid]).replace("\n", "↵\n")
        style = ("background:#c8e6c9;border:1px solid #81c784" if m
                 else "background:#eeeeee;border:1px solid #e0e0e0;color:#555")
        chips.append(f"<span title='id {tid}' style='{style};border-radius:3px;margin:1px;padding:0 2px;"
                     f"font-family:monospace;white-space:pre-wrap'>{html.escape(text)}</span>")
    legend = (f"<div style='margin-bottom:6px;font-size:90%'>{len(ids)} tokens, {sum(mask)} trained on "
              "(<span style='background:#c8e6c9'>green</span>) — the rest is masked out of the loss.</div>")
    return HTML(legend + "<div style='line-height:1.9'>" + "".join(chips) + "</div>")
