"""Checks for notebook 01 (SFT): what the loss mask trains on, and a config for full fine-tuning."""

from __future__ import annotations

import dataclasses

from labkit.exercises import choice, exercise, wrong


@exercise("01.1", hints=["Look at the green tokens in notebook 00's token view.",
                         "The model should learn to answer (and to stop), not to write the user's question."])
def loss_mask(answer) -> str:
    return choice(answer, "b", {
        "a": "training on every token also teaches the model to write the user's questions, and the "
             "template's system text; that is loss_on='all'",
        "b": "with loss_on='assistant' only the reply tokens count, end-of-turn token included: that is "
             "how the model learns to stop",
        "c": "the loss covers the whole reply, not only its last line; the `#### n` line is what the "
             "format accuracy measures",
    })


@exercise("01.2", hints=["Configs are frozen dataclasses: cfg.replace(field=value, ...) builds a new one.",
                         "cfg.replace(method='full', max_steps=cfg.max_steps // 2)"])
def full_half_steps(answer, *, base) -> str:
    if not dataclasses.is_dataclass(answer) or type(answer) is not type(base):
        wrong(f"expected a {type(base).__name__}, like `cfg`; got {type(answer).__name__}")
    if answer.method != "full":
        wrong(f"method is {answer.method!r}; full fine-tuning is method='full'")
    half = max(1, base.max_steps // 2)
    if answer.max_steps != half:
        wrong(f"max_steps is {answer.max_steps}; half of cfg.max_steps ({base.max_steps}) is {half}")
    changed = [f.name for f in dataclasses.fields(base)
               if f.name not in ("method", "max_steps") and getattr(answer, f.name) != getattr(base, f.name)]
    if changed:
        wrong(f"only method and max_steps should change; you also changed {', '.join(changed)}")
    return ("one replace() call, everything else equal: a fair comparison. Full fine-tuning trains every "
            "weight (~135M here, against ~5M for LoRA r=16), so each step costs more memory and time.")
