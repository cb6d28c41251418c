# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · LoRA, QLoRA and merging
#
# Full fine-tuning updates every weight and keeps a gradient and two AdamW states for each of them.
# **LoRA** freezes the model and learns a small low-rank correction instead; **QLoRA** also stores the
# frozen model in 4 bits. This lab works through the maths, trains two small adapters on the embedded
# model, repeats one with QLoRA, and then treats adapters as objects you can merge, scale, blend and
# export.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Count LoRA's trainable parameters and memory from its rank and the model's layer shapes.
# 2. Train LoRA adapters, and a QLoRA adapter on a 4-bit base, with the same recipe.
# 3. Check whether a merge is safe, scale an adapter with a slider, and blend two adapters.
# 4. Export a merged model and confirm that it answers as the adapter did.
#
# **Requirements.** CPU: about 64 CPU minutes in the latest nightly run (3866 s; 618 s in an earlier night
# on a quieter machine) in the `cpu-smoke` preset, as measured by the nightly run on a shared 2-core
# machine (expect it faster on a laptop; the `cpu` preset takes several times longer). GPU memory: not
# measured.
#
# **In the course:** after `01` (SFT). Next: `03` (reward models); `11` (kernels) builds on the LoRA maths
# here. The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora: the size dial, nothing else changes
MODEL = "smollm2-135m-instruct"  # the embedded default; a local model dir or hub id also works
DTYPE = "float32"  # base weights for the LoRA runs; "auto" picks bf16 where native (see section 4)
OUT = "runs/02_lora"  # runs, adapters and the merged export go here (relative to the working dir)

# %%
import pandas as pd
from IPython.display import HTML, Markdown, display

from labkit.config import SFTConfig
from labkit.dash import LiveDashboard, lora_math, lora_math_widget, scale_slider
from labkit.dash.lora import llama_linear_shapes
from labkit.data.samples import load_sample
from labkit.models import capability_report, generate, load_model, lora
from labkit.models.generate import as_prompt_text
from labkit.stages.sft import train

cfg = SFTConfig.from_preset(PRESET, model=MODEL, method="lora", dtype=DTYPE, output_dir=f"{OUT}/format")
cfg

def gib(n_bytes):
    return f"{n_bytes / 2**30:6.2f} GiB"

# %% [markdown]
# ## 1. The maths
#
# A linear layer computes `y = W·x` with `W` of shape `[out, in]`. LoRA keeps `W` frozen and adds a
# rank-`r` update:
#
# $$W' = W + \frac{\alpha}{r}\,B A, \qquad A \in \mathbb{R}^{r\times in},\; B \in \mathbb{R}^{out\times r}$$
#
# Only `A` and `B` train: `r·(in + out)` numbers instead of `in·out`. `A` starts random and **`B` starts at
# zero**, so `B·A = 0` and step 0 of training is exactly the pre-trained model; the gradient reaching `B`
# is not zero (it depends on `A·x`), so learning starts at once. `α/r` fixes the size of the update: raise
# `r` with `α` fixed and each direction counts for less, so you can change the rank without re-tuning
# the learning rate.
#
# Move the sliders (live in Jupyter). The table prices training memory: weights, gradients and AdamW
# states, without activations. Below it, the same numbers for the rank and targets this notebook trains.

# %%
widget = lora_math_widget()
widget.r.value, widget.alpha.value, widget.targets.value = cfg.lora_r, cfg.lora_alpha, "all-linear"
display(widget)
display(HTML(widget.static_html()))

# %% [markdown]
# The widget uses SmolLM2-135M's shapes. The same counts read off the real model agree: LoRA on every
# linear layer at this rank trains a few percent of the weights.

# %%
base, tok = load_model(cfg.model, dtype=cfg.dtype)
count = lora.lora_param_count(base, cfg.lora_r, "all-linear")
print(f"r={cfg.lora_r} on {count['modules']} linear layers: {count['trainable']:,} trainable of "
      f"{count['total']:,} ({count['percent']:.2f}%); widget says "
      f"{lora_math(cfg.lora_r, cfg.lora_alpha, targets='all-linear')['trainable']:,}")

# %% [markdown]
# At 135M parameters all three methods fit in a laptop. Scale the same recipe to a 7B model (the shape of
# Llama-2-7B: hidden 4096, 32 layers, MLP 11008, 6.74B parameters) and the picture changes:

# %%
N_7B = 6_738_415_616
shapes_7b = llama_linear_shapes(hidden=4096, intermediate=11008, kv_dim=4096)
linear_7b = 32 * sum(i * o for i, o in shapes_7b.values())  # what QLoRA stores in 4 bits
lora_7b = 32 * lora.lora_params_for_shapes(list(shapes_7b.values()), cfg.lora_r)
print(f"7B, LoRA r={cfg.lora_r} on all linears: {lora_7b:,} trainable ({100 * lora_7b / N_7B:.2f}%)")
print("mode     weights       grads        AdamW        total     (bf16 base, fp32 adapters)")
for mode in ("full", "lora", "qlora"):
    m = lora.memory_estimate(N_7B, lora_7b, mode, dtype_bytes=2, quantized_params=linear_7b)
    print(f"{mode:6s} {gib(m['weights'])}  {gib(m['grads'])}  {gib(m['optimizer'])}  {gib(m['total'])}")

# %% [markdown]
# Full fine-tuning costs 12 bytes per parameter here (bf16 weights and gradients, two fp32 AdamW states):
# about 75 GiB before a single activation, so an 80 GB GPU is already full. LoRA at r=16 trains 0.6% of the
# weights: the 12.5 GiB bf16 base plus under half a GiB of adapter, gradients and AdamW states, about
# 13 GiB. QLoRA stores the linears in 4-bit NF4 (about 0.52 byte per weight with its scales): about
# 4 GiB, which fits an 8–12 GB consumer GPU with room left for activations.
#
# ## 2. Train two adapters
#
# `labkit.stages.sft.train` runs TRL's SFTTrainer with LoRA on every linear layer. Adapter **format**
# learns the `#### n` answer format from `sft_format`; adapter **general** learns short general-knowledge
# answers from `general_prompts` (20 rows, no held-out split, so it reports no format accuracy).

# %%
fmt = train(cfg, callbacks=[LiveDashboard(title="LoRA · format")])
print({k: fmt.metrics[k] for k in ("before", "after", "train_loss", "trainable_params", "tokens_per_s")})

# %%
general_cfg = cfg.replace(data="general_prompts", output_dir=f"{OUT}/general")
general = train(general_cfg, callbacks=[LiveDashboard(title="LoRA · general")])
print({k: general.metrics[k] for k in ("before", "after", "train_loss", "trainable_params")})

# %% [markdown]
# Each run saved its adapter: a few MB of `A` and `B` matrices plus `adapter_config.json`, never the
# base. One base model can carry several adapters and switch between them by name:

# %%
model = lora.load_adapters(base, {"format": fmt.adapter_dir, "general": general.adapter_dir})
fmt.model = general.model = None  # drop the trained copies: `model` holds both adapters now
print("adapters:", list(model.peft_config), "· active:", model.active_adapter)

# %% [markdown]
# ## 3. QLoRA: the same recipe on a 4-bit base
#
# `method="qlora"` loads the frozen base through bitsandbytes as 4-bit **NF4** (16 levels spaced for
# normally distributed weights, one scale per 64-weight block, the scales themselves quantised again)
# and computes in bf16/fp32; the LoRA adapters stay in full precision and train exactly as before. On an
# NVIDIA GPU with Unsloth installed the stage switches to Unsloth's fused kernels automatically
# (`backend="auto"`); the capability report says which applies on this machine. On a CPU bitsandbytes
# works but is slow, so the run is kept short.

# %%
capability_report()

# %%
qlora_cfg = cfg.replace(method="qlora", output_dir=f"{OUT}/qlora")
qlora = train(qlora_cfg, callbacks=[LiveDashboard(title="QLoRA · format")])
m = qlora.metrics
print(f"backend {m['backend']} ({m['backend_reason']}); compute dtype {m['compute_dtype']}")
print(f"trainable {m['trainable_params']:,} of {m['total_params']:,} stored parameters "
      f"(4-bit weights are packed two per byte, so torch counts each linear at half its size)")
print({k: m[k] for k in ("before", "after", "train_loss")})
est = lora_math(cfg.lora_r, cfg.lora_alpha, targets="all-linear")["memory"]
print("training memory on this model: " + ", ".join(f"{k} {v['total'] / 2**20:.0f} MiB"
                                                    for k, v in est.items()))

# %% [markdown]
# ## 4. The merging lab
#
# ### Is a merge safe?
#
# Merging writes `W + (α/r)·B·A` into the base weights, so serving costs nothing extra. It should not
# change what the model computes. `merge_safety_check` runs one prompt through base+adapter (unmerged) and
# through the merged copy and reports the **largest absolute difference of any logit** at any position:
# the logits are the scores the next token is picked from, so a difference far below the gap between
# the top two tokens changes no greedy reply. With fp32 weights the merge is exact up to the order of
# float additions (threshold 1e-4); with `DTYPE = "auto"` on a bf16 CPU or GPU, storing `W + ΔW` in bf16
# rounds every weight to 8 mantissa bits and the difference grows. `reload_dir` also saves the merge to
# safetensors and reloads it.

# %%
question = load_sample("sft_format", split="heldout")[0]["messages"][0]["content"]
ids = tok(as_prompt_text(tok, question), return_tensors="pt")["input_ids"]
print(lora.merge_safety_check(model, ids, reload_dir=f"{OUT}/merge_check"))

# %% [markdown]
# On the QLoRA model there are two ways to merge. Into a full-precision copy, `dequant(W) + ΔW`, which
# must pass like above; or into 4 bits, as PEFT does by default: dequantise, add `ΔW`, **re-quantise**.
# Each merged weight snaps back to one of 16 NF4 levels in its block, an error of up to half a level
# (a few percent of the block's largest weight), far larger than the small, fine-grained `ΔW` itself. The
# `rounding_error` below is that cost, which is why `export_merged` always merges a QLoRA adapter in full
# precision. (If the adapters were kept in bf16, as bitsandbytes on a CPU may leave them, the unmerged side
# computes `B·A·x` in bf16 and the check uses the bf16 threshold.)

# %%
qcheck = lora.merge_safety_check(qlora.model, ids)
print(qcheck)
print(f"full-precision merge {qcheck.max_logit_diff:.2g} vs merge into 4 bits {qcheck.rounding_error:.2g}")
qlora.model = None

# %% [markdown]
# ### Scale an adapter
#
# The adapter's update can be multiplied at inference: `output = W·x + s·(α/r)·B·A·x`. `s = 0` is the base
# model, `1` the adapter as trained, `2` twice its update (often an exaggerated, broken version of what
# it learned). Drag the slider live; a headless run sees the table below it. After only a few steps
# (the `cpu-smoke` preset) the adapter has barely moved and the replies may not differ yet.

# %%
slider = scale_slider(model, tok, question, max_new_tokens=cfg.eval_max_new_tokens, adapter="format")
display(slider)
for s in (0.0, 0.5, 1.0, 1.5, 2.0):
    slider.slider.value = s
print(slider.table())
slider.reset()

# %% [markdown]
# ### Blend two adapters
#
# `blend` combines adapters into a new one with PEFT's `add_weighted_adapter`. **linear** averages the `A`s
# and the `B`s (cheap; cross terms creep in). **ties** keeps each adapter's largest entries (`density`),
# elects a sign per weight by majority and averages only the entries that agree, which reduces
# interference between tasks. Compare all of them side by side on an arithmetic question and a
# general one:

# %%
linear = lora.blend(model, ["format", "general"], [1.0, 1.0], method="linear", name="linear")
ties = lora.blend(model, ["format", "general"], [1.0, 1.0], method="ties", density=0.5, name="ties")
prompts = [question, load_sample("general_prompts")[0]["prompt"][0]["content"]]
table = lora.compare_adapters(model, tok, prompts, [None, "format", "general", linear, ties],
                         max_new_tokens=cfg.eval_max_new_tokens)
pd.DataFrame(table).set_index("prompt").T

# %% [markdown]
# ### Export and reload
#
# `export_merged` writes the merged model (safetensors, config and tokenizer) atomically: a plain
# transformers model that needs neither PEFT nor labkit. Reload it and check it answers like
# base + adapter:

# %%
model.set_adapter("format")
path = lora.export_merged(model, tok, f"{OUT}/merged_format", overwrite=True)
merged_model, merged_tok = load_model(str(path), dtype=cfg.dtype)
heldout = [r["messages"][0]["content"] for r in load_sample("sft_format", split="heldout")[:3]]
with_adapter = generate(model, tok, heldout, max_new_tokens=cfg.eval_max_new_tokens)
exported = generate(merged_model, merged_tok, heldout, max_new_tokens=cfg.eval_max_new_tokens)
for q, a, b in zip(heldout, with_adapter, exported):
    display(Markdown(f"**Q:** {q}  \n**base + adapter:** {a.text}  \n**exported:** {b.text}  \n"
                     f"identical: {a.text == b.text}"))
print("files:", sorted(p.name for p in path.iterdir()))

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, record

record(lora_format_accuracy=higher(fmt.metrics["after"]["format_accuracy"], tol=0.15),
       qlora_format_accuracy=higher(qlora.metrics["after"]["format_accuracy"], tol=0.15),
       qlora_merge_passed=higher(qcheck.passed, tol=0),
       export_identical=higher(sum(a.text == b.text for a, b in zip(with_adapter, exported)) / len(heldout),
                               tol=0))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("02.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/02_lora_qlora_merging_solutions.ipynb`](solutions/02_lora_qlora_merging_solutions.ipynb):
# try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 02.1 · LoRA on one layer
#
# How many trainable parameters does a rank-8 LoRA add to one 576 × 576 linear layer (SmolLM2's `q_proj`)?

# %%
answer_02_1 = ...  # a whole number

# %%
check("02.1", answer_02_1)

# %% [markdown]
# ### ⭐⭐ 02.2 · Count an adapter
#
# Write `lora_param_count(r, shapes)`: the trainable parameters of a rank-`r` LoRA on every layer in
# `shapes`, a dict `{name: (d_out, d_in)}` like `llama_linear_shapes(...)` returns. Compare your count for
# one block with `lora_math` in section 1.

# %%
def lora_param_count(r, shapes):
    raise NotImplementedError("your code")

# %%
check("02.2", lora_param_count)

# %% [markdown]
# ### ⭐⭐⭐ 02.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Set `PRESET = "cpu"` and re-run. How much does the format accuracy move, and does `probe_loss` on the
#   general questions rise (forgetting)? At which slider scale does the format adapter first break?
# - Set `DTYPE = "auto"` (bf16 on most modern CPUs and GPUs) and re-run the merge check. How large is the
#   max logit difference now, and does it change any greedy reply in the export comparison?
# - Blend with `method="ties"` at `density` 0.2 and 0.9, and with `method="cat"`. Which blend keeps *both*
#   skills: the `#### n` format on the arithmetic question and a sensible general answer?
