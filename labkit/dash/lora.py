"""LoRA lab widgets: rank/alpha maths with memory estimates, and a live adapter-scale slider over a reply.

Both widgets work headless (papermill): build them, move a control from code (`w.r.value = 16`), and
read `w.values` / `w.static_html()` (or `w.history`) for a static output, since a headless run keeps
only the widgets' initial state.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from labkit.models.lora import (
    LLAMA_LINEARS,
    adapter_scale,
    lora_params_for_shapes,
    memory_estimate,
    scale_adapter,
)

# Target-module choices offered by the maths widget (Llama-style layer names).
TARGET_CHOICES: dict[str, tuple[str, ...]] = {
    "q_proj, v_proj": ("q_proj", "v_proj"),
    "attention (q, k, v, o)": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "all-linear": LLAMA_LINEARS,
}


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def llama_linear_shapes(hidden: int, intermediate: int, kv_dim: int) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear in one Llama decoder layer (grouped-query attention)."""
    return {"q_proj": (hidden, hidden), "k_proj": (hidden, kv_dim), "v_proj": (hidden, kv_dim),
            "o_proj": (hidden, hidden), "gate_proj": (hidden, intermediate),
            "up_proj": (hidden, intermediate),
            "down_proj": (intermediate, hidden)}


def lora_math(r: int, alpha: float, *, hidden: int = 576, layers: int = 30, intermediate: int = 1536,
              kv_dim: int = 192, vocab: int = 49152, targets: str = "q_proj, v_proj",
              dtype_bytes: float = 2) -> dict[str, Any]:
    """The numbers the maths widget shows, for a Llama-shaped model (defaults: SmolLM2-135M, 134.5M params).

    Returns shapes of W, A, B for one targeted q_proj-like layer, the scale alpha/r, trainable vs total
    parameters, and `memory_estimate` for full / lora / qlora training (bf16 weights, AdamW).
    """
    shapes = llama_linear_shapes(hidden, intermediate, kv_dim)
    chosen = TARGET_CHOICES[targets]
    per_layer = sum(i * o for i, o in shapes.values())
    linear_total = layers * per_layer
    # Two RMSNorms per layer, a final norm, tied input/output embeddings.
    total = linear_total + layers * 2 * hidden + hidden + vocab * hidden
    trainable = layers * lora_params_for_shapes([shapes[n] for n in chosen], r)
    first_in, first_out = shapes[chosen[0]]
    memory = {mode: memory_estimate(total, trainable, mode, dtype_bytes, quantized_params=linear_total)
              for mode in ("full", "lora", "qlora")}
    return {"r": r, "alpha": alpha, "scale": alpha / r, "targets": targets, "example_module": chosen[0],
            "W_shape": (first_out, first_in), "A_shape": (r, first_in), "B_shape": (first_out, r),
            "trainable": trainable, "total": total, "percent": 100.0 * trainable / total, "memory": memory}


def lora_math_html(v: dict[str, Any]) -> str:
    """An HTML rendering of `lora_math`'s numbers: the ΔW formula with shapes, the parameter share,
    a memory table."""
    o, i = v["W_shape"]
    rows = "".join(
        f"<tr><td>{mode}</td>" + "".join(f"<td style='text-align:right'>{_gib(m[k])}</td>"
                                         for k in ("weights", "grads", "optimizer", "total")) + "</tr>"
        for mode, m in v["memory"].items())
    return (
        f"<div style='font-family:sans-serif'>"
        f"<p><b>ΔW = (α/r)·B·A</b> on {html.escape(v['example_module'])}: W [{o}×{i}], "
        f"B [{v['B_shape'][0]}×{v['B_shape'][1]}] · A [{v['A_shape'][0]}×{v['A_shape'][1]}], "
        f"α/r = {v['alpha']:g}/{v['r']} = {v['scale']:.3g}</p>"
        f"<p>trainable <b>{v['trainable']:,}</b> of {v['total']:,} params (<b>{v['percent']:.3f}%</b>), "
        f"targets: {html.escape(v['targets'])}</p>"
        "<table><tr><th>mode</th><th>weights</th><th>grads</th><th>AdamW states</th><th>total</th></tr>"
        f"{rows}</table><p style='font-size:85%;color:#666'>bf16 base, fp32 adapters, 4-bit NF4 with double "
        "quantisation for QLoRA; activations not included.</p></div>")


class LoraMathWidget(widgets.VBox):
    """Sliders for rank r and alpha plus a target dropdown, with the LoRA numbers updated live.

    `values` holds the current `lora_math` dict; `static_html()` gives the same view for a headless run.
    """

    def __init__(self, hidden: int = 576, layers: int = 30, **model_shape: int):
        self._shape = {"hidden": hidden, "layers": layers, **model_shape}
        self.r = widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64, 128], value=8, description="rank r")
        self.alpha = widgets.IntSlider(value=16, min=1, max=256, description="alpha")
        self.targets = widgets.Dropdown(options=list(TARGET_CHOICES), value="q_proj, v_proj",
                                        description="targets")
        self.out = widgets.HTML()
        for w in (self.r, self.alpha, self.targets):
            w.observe(self._update, names="value")
        super().__init__([widgets.HBox([self.r, self.alpha, self.targets]), self.out])
        self.values: dict[str, Any] = {}
        self._update()

    def _update(self, _change: Any = None) -> None:
        self.values = lora_math(self.r.value, self.alpha.value, targets=self.targets.value, **self._shape)
        self.out.value = lora_math_html(self.values)

    def static_html(self) -> str:
        """The current view as HTML, for a headless run where the widget's updates are not kept."""
        return self.out.value


def lora_math_widget(hidden: int = 576, layers: int = 30, **model_shape: int) -> LoraMathWidget:
    """The LoRA maths widget for a Llama-shaped model (defaults SmolLM2-135M; pass intermediate, kv_dim,
    vocab)."""
    return LoraMathWidget(hidden, layers, **model_shape)


class ScaleSlider(widgets.VBox):
    """A 0…2 slider over the active adapter's scale that regenerates a greedy reply to `prompt` on change.

    0 is the base model, 1 the adapter as trained, 2 twice its update. `reply` is the latest text and
    `history` maps each scale tried to its reply (for a static table headless). The adapter's scale
    before the widget was built is kept in `initial_scale`; call `reset()` to restore it.
    """

    def __init__(self, peft_model: Any, tok: Any, prompt: str, max_new_tokens: int = 32,
                 adapter: str | None = None):
        self.model, self.tok, self.prompt, self.max_new_tokens = peft_model, tok, prompt, max_new_tokens
        self.adapter = adapter or peft_model.active_adapter
        self.initial_scale = adapter_scale(peft_model, self.adapter)
        self.slider = widgets.FloatSlider(value=min(max(self.initial_scale, 0.0), 2.0), min=0.0, max=2.0,
                                          step=0.1,
                                          description="scale", continuous_update=False)
        self.out = widgets.HTML()
        self.history: dict[float, str] = {}
        self.reply = ""
        self.slider.observe(self._update, names="value")
        super().__init__([self.slider, self.out])
        self._update()

    def _update(self, _change: Any = None) -> None:
        from labkit.models.generate import generate

        scale = round(float(self.slider.value), 4)
        scale_adapter(self.model, scale, self.adapter)
        self.reply = generate(self.model, self.tok, [self.prompt], max_new_tokens=self.max_new_tokens)[0].text
        self.history[scale] = self.reply
        self.out.value = (f"<div><b>{html.escape(self.adapter)} × {scale:g}</b> — "
                          f"<i>{html.escape(self.prompt)}</i><div "
                          f"style='white-space:pre-wrap;background:#f1f8e9;padding:6px;border-radius:4px'>{html.escape(self.reply)}</div></div>")

    def reset(self) -> None:
        """Put the adapter back at `initial_scale` so later cells see the model as trained.

        The slider and `history` are left as they are.
        """
        scale_adapter(self.model, self.initial_scale, self.adapter)

    def table(self) -> str:
        """The replies seen so far, one line per scale, for a static output."""
        return "\n".join(f"scale {s:g}: {t}" for s, t in sorted(self.history.items()))


def scale_slider(peft_model: Any, tok: Any, prompt: str, max_new_tokens: int = 32,
                 adapter: str | None = None) -> ScaleSlider:
    """A slider over the adapter scale (uses `scale_adapter`) that shows the regenerated reply."""
    return ScaleSlider(peft_model, tok, prompt, max_new_tokens, adapter)
