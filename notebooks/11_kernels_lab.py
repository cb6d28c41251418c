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
# # 11 · Kernels lab: Triton kernels for the training hot spots
#
# Most of a (Q)LoRA step's time and memory goes to a few operations: RMSNorm, the rotary embedding of
# queries and keys, the gated MLP's `silu(gate) * up`, the LoRA linear layers, and the LM head's
# cross-entropy, whose logits (tokens × vocabulary) are often the largest tensor of the whole step.
# `labkit.kernels` writes each one as a short, readable Triton kernel, next to a plain-torch reference
# that says what it must compute, and `patch(model)` swaps a Llama/Qwen model's forwards for them.
#
# Triton compiles for GPUs. On a CPU it can still **run** every kernel, through its interpreter
# (`TRITON_INTERPRET=1`): exact, and slow, so it is how the kernels are checked without a GPU, not how
# they are timed. This notebook runs wherever it is: on a GPU the kernels are compiled, on a CPU they are
# interpreted.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Read Triton kernels for RMSNorm, RoPE, SwiGLU, the LoRA linear and cross-entropy beside their PyTorch
#    references.
# 2. Patch a model with the kernels and check that it trains like the plain one.
# 3. Measure the LM head's memory: chunked cross-entropy against the full logits.
# 4. Benchmark kernels against their references and read the numbers honestly.
#
# **Requirements.** CPU: not measured yet (no nightly run has included it) in the `cpu-smoke` preset, as
# measured by the nightly run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset
# takes several times longer). GPU memory: not measured.
#
# **In the course:** after `01` and `02` (the LoRA maths); an optional systems notebook, independent of
# `03`–`10`. The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora: the stages' size dial; this lab's sizes fit the interpreter
OUT = "runs/11_kernels_lab"

# %%
import os
import pathlib

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Triton reads this when the kernels are defined, so it is set before labkit.kernels is first imported.
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pandas as pd
import plotly.express as px
from IPython.display import display

import labkit
from labkit import kernels as K
from labkit.config import SFTConfig
from labkit.kernels.compare import ce_memory, side_by_side, train_losses
from labkit.models import capability_report, tiny_model

print(f"device {DEVICE}; the kernels run as: {K.backend_name()}")
capability_report()

# %% [markdown]
# The last table of the report says which **training backend** each stage can use here: PEFT everywhere,
# and Unsloth for SFT (on a GPU automatically; on a CPU with Unsloth's CPU backend only when asked for,
# `SFTConfig(backend="unsloth")`, because importing Unsloth patches TRL for the whole process).
#
# ## 1. Each kernel beside its reference
#
# `side_by_side` runs every op on small random inputs through the kernel and through the reference, then
# backpropagates the same random upstream gradient through both. In fp32 the two differ only in the order
# of their additions (a kernel sums a tile at a time, an online log-sum-exp keeps a running maximum), so
# the largest absolute difference should sit near float32's rounding, around 1e-6 for values of order 1.

# %%
ops = pd.DataFrame(side_by_side(device=DEVICE))
ops

# %% [markdown]
# Under the interpreter the kernel column is hundreds of times slower than the reference: every Triton
# program runs as Python over numpy arrays. On a GPU the same code is compiled and the comparison turns
# around (section 4).
#
# ## 2. A patched model trains like the plain one
#
# Two copies of the same tiny random Llama, one patched, a few AdamW steps on the same batches. `patch`
# reports what it swapped; the LM head's forward then computes the loss straight from the last hidden
# states, chunked, and never builds the full logits. In a stage, `kernels=True` (on `SFTConfig`,
# `PreferenceConfig` and `RLConfig`) does the same, but leaves the LM head to TRL, which computes its own
# loss from the logits.

# %%
plain, tok = tiny_model()
fused, _ = tiny_model(tok)                   # the same seed: the same weights
report = K.patch(fused)
print({kind: len(names) for kind, names in report.items()})
want, t_plain = train_losses(plain)
got, t_fused = train_losses(fused)
curves = pd.DataFrame({"step": range(1, len(want) + 1), "plain": want, "patched": got})
print(f"largest loss difference {max(abs(a - b) for a, b in zip(want, got)):.2e}; "
      f"{t_plain:.1f} s plain, {t_fused:.1f} s patched ({K.backend_name()})")
px.line(curves, x="step", y=["plain", "patched"], markers=True, title="tiny Llama: loss per step")

# %%
cfg = SFTConfig.from_preset(PRESET, kernels=True)  # the same field on PreferenceConfig and RLConfig
print(f"kernels={cfg.kernels}:", SFTConfig.help().split("kernels = False: ")[1].splitlines()[0])

# %% [markdown]
# ## 3. The LM head's memory: chunked cross-entropy vs the full logits
#
# With SmolLM2's vocabulary (49,152) and hidden size (576), the plain loss builds the logits, their
# log-softmax and their gradient: three tensors of tokens × 49,152 floats. The chunked loss handles a few
# hundred tokens at a time, so its peak hardly grows with the batch (the weight's own gradient, 108 MiB,
# is a floor both paths share). Memory is measured with `labkit.kernels.profiling.peak_bytes`: every
# allocation torch's allocator makes, on CPU or GPU.

# %%
memory = pd.DataFrame(ce_memory(device=DEVICE))
print(memory.round(1).to_string(index=False))
px.bar(memory.melt(id_vars="tokens", value_vars=["plain_mib", "chunked_mib"], var_name="path",
                   value_name="peak MiB"),
       x="tokens", y="peak MiB", color="path", barmode="group", title="LM-head loss, forward + backward")

# %% [markdown]
# ## 4. Benchmarks
#
# `bench/kernels.py` times every kernel against torch eager and `torch.compile` (forward + backward) and
# measures their peak memory; `bench/qlora_step.py` times a whole QLoRA step of a 0.5-1.5B model with and
# without `patch()`, and through Unsloth. The results are committed under `bench/results/`. **The GPU
# numbers are pending**: no GPU run has been committed yet. The CPU run below is **CPU only**: there the
# kernels take their torch paths, so it shows the chunked loss's memory, not the kernels' speed.

# %%
results = pathlib.Path(labkit.__file__).resolve().parents[1] / "bench" / "results"
found = {kind: next((results / name for name in names if (results / name).exists()), None)
         for kind, names in {"GPU": ("kernels_gpu.csv", "kernels-cuda.csv"),
                             "CPU": ("kernels_cpu.csv", "kernels-cpu.csv"),
                             "QLoRA step": ("qlora_step-cuda.csv", "qlora_step-cpu.csv")}.items()}
for kind, path in found.items():
    print(f"{kind:11s}", path.name if path else "pending: no committed CSV yet")
bench = pd.read_csv(found["GPU"] or found["CPU"]) if found["GPU"] or found["CPU"] else None
label = "GPU" if found["GPU"] else "CPU only, kernels on their torch path"
if bench is not None:
    bench["case"] = bench["op"] + " · " + bench["size"]
    display(px.bar(bench, x="case", y="speedup_vs_eager", color="impl", barmode="group",
                   title=f"speed vs torch eager ({label})"))
    display(px.bar(bench, x="case", y="memory_ratio_vs_eager", color="impl", barmode="group",
                   title=f"peak memory, eager / implementation ({label})"))

# %%
columns = ["size", "device", "method", "variant", "backend", "ms_per_step", "step_peak_mib", "loss_step1",
           "speedup_vs_peft", "memory_ratio_vs_peft"]
pd.read_csv(found["QLoRA step"])[columns] if found["QLoRA step"] else "QLoRA step: pending"

# %% [markdown]
# ## 5. What just happened
#
# - Every kernel agrees with its reference to float32's rounding, outputs and gradients: the kernels are
#   checked as code, on any machine, before anyone times them on a GPU.
# - A patched model follows the plain model's loss curve step for step.
# - The chunked cross-entropy's peak memory stays flat as the batch grows, while the full logits grow with
#   it: at large vocabularies this is the biggest memory saving of the whole step.

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, lower, record

record(max_abs_forward=lower(ops["max_abs_forward"].max(), tol=1e-4),
       max_abs_grad=lower(ops["max_abs_grad"].max(), tol=1e-4),
       patched_loss_gap=lower(max(abs(a - b) for a, b in zip(want, got)), tol=1e-4),
       ce_memory_saving=higher(memory["saving"].iloc[-1], tol="20%"))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("11.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/11_kernels_lab_solutions.ipynb`](solutions/11_kernels_lab_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 11.1 · How big are the logits?
#
# How many MiB do the fp32 logits of 4096 tokens take with SmolLM2's vocabulary of 49,152 tokens?

# %%
answer_11_1 = ...  # a number, in MiB

# %%
check("11.1", answer_11_1)

# %% [markdown]
# ### ⭐⭐ 11.2 · RMSNorm by hand
#
# Write `my_rms_norm(x, weight, eps)` in plain PyTorch (normalise over the last dimension). Compare it
# with `K.rms_norm_reference`.

# %%
def my_rms_norm(x, weight, eps):
    raise NotImplementedError("your code")

# %%
check("11.2", my_rms_norm)

# %% [markdown]
# ### ⭐⭐⭐ 11.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - In `side_by_side`, try `tokens=257` (not a power of two): the kernels mask their last tile. Do the
#   differences change?
# - Call `ce_memory(tokens=(4096,))`: how large are the logits, and how much of them does the chunked path
#   ever hold?
# - `K.unpatch(fused)` restores the model's own forwards: check that `train_losses` then matches `plain`
#   bit for bit.
