"""Checks for notebook 02 (LoRA, QLoRA, merging): counting LoRA's trainable parameters."""

from __future__ import annotations

from labkit.exercises import cases, close, exercise, number, wrong


@exercise("02.1", hints=["LoRA writes the update ΔW (d_out × d_in) as B·A, B: d_out × r, A: r × d_in.",
                         "Count the entries of A and B: r·d_in + d_out·r."])
def one_layer(answer) -> str:
    n = number(answer, "a parameter count")
    if close(n, 576 * 576):
        wrong("that is the full weight matrix, which LoRA keeps frozen")
    if close(n, 8 * 576):
        wrong("that counts only one of the two factors; LoRA trains both A (r × d_in) and B (d_out × r)")
    if not close(n, 8 * (576 + 576), rel=0):
        wrong(f"{n:g} is not r·d_in + d_out·r for r=8 and a 576 × 576 layer")
    return ("8 × (576 + 576) = 9,216, against 331,776 frozen: 2.8 % of the layer, and the share shrinks as "
            "layers grow.")


def _reference(r: int, shapes: dict) -> int:
    return sum(r * (d_out + d_in) for d_out, d_in in shapes.values())


SHAPES = {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
          "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}


@exercise("02.2", hints=["shapes maps a layer name to (d_out, d_in); sum one layer's count over them.",
                         "sum(r * (d_out + d_in) for d_out, d_in in shapes.values())"])
def count_function(answer) -> str:
    cases(answer, [
        ((8, {"q_proj": (576, 576)}), _reference(8, {"q_proj": (576, 576)}), "one square layer"),
        ((8, {"k_proj": (192, 576)}), _reference(8, {"k_proj": (192, 576)}), "a non-square layer"),
        ((16, SHAPES), _reference(16, SHAPES), "every linear layer of one SmolLM2 block"),
        ((1, {}), 0, "no target layers"),
    ])
    per_block = _reference(16, SHAPES)
    return (f"r=16 on every linear layer of one block is {per_block:,} parameters, × 30 blocks = "
            f"{30 * per_block:,}: what `lora_math` and PEFT's print_trainable_parameters report.")
