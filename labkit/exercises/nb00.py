"""Checks for notebook 00 (setup and tour): model memory, and a conversation with a system turn."""

from __future__ import annotations

from labkit.exercises import close, exercise, number, wrong


@exercise("00.1", hints=["Every parameter is one number; in fp32 a number takes 4 bytes.",
                         "n_params × 4 bytes, divided by 1e6 for MB (or 2**20 for MiB)."])
def fp32_megabytes(answer, *, n_params: int) -> str:
    mb = number(answer, "megabytes")
    full = n_params * 4
    if close(mb, n_params / 1e6, rel=0.05):
        wrong("that is the parameter count in millions; each parameter takes 4 bytes in fp32")
    if close(mb, n_params * 2 / 1e6, rel=0.05):
        wrong("that is the bf16 size (2 bytes per parameter); fp32 takes 4")
    if close(mb, n_params * 0.5 / 1e6, rel=0.1):
        wrong("that is roughly the 4-bit (GGUF Q4) file; the loaded fp32 model takes 4 bytes per parameter")
    if not (close(mb, full / 1e6, rel=0.05) or close(mb, full / 2**20, rel=0.05)):
        wrong(f"{mb:g} MB is not n_params × bytes per parameter")
    return (f"{n_params:,} × 4 bytes ≈ {full / 1e6:.0f} MB: the weights alone; training adds gradients and "
            "optimizer state (about 3× more for full fine-tuning with Adam), which is why LoRA matters.")


@exercise("00.2", hints=["A system turn is a dict like the others: {'role': 'system', 'content': '...'}.",
                         "It goes first: [system_turn] + conversation."])
def system_turn_first(answer, *, original: list) -> str:
    if not isinstance(answer, list) or not all(isinstance(t, dict) for t in answer):
        wrong("expected a list of {'role': ..., 'content': ...} dicts, like `conversation`")
    roles = [t.get("role") for t in answer]
    if "system" not in roles:
        wrong("there is no turn with role 'system'")
    if roles[0] != "system":
        wrong("the system turn must come first: chat templates (and models) expect it before any user turn")
    if not str(answer[0].get("content", "")).strip():
        wrong("the system turn's content is empty")
    if answer[1:] != original:
        wrong("the turns after the system turn should be `conversation`, unchanged")
    return ("the system prompt goes first; in token_view it is grey like the user turns: with "
            "loss_on='assistant' the model is trained to follow it, never to write it.")
