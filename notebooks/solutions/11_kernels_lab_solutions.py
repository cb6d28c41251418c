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
# # Solutions · 11 · Kernels lab: Triton kernels for the training hot spots
#
# The answers to the exercises of [`11_kernels_lab.ipynb`](../11_kernels_lab.ipynb). Try them there
# first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
import torch

from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 11.1 · How big are the logits?
#
# 4096 × 49152 × 4 bytes / 2²⁰ = 768 MiB.

# %%
solved("11.1", 4096 * 49152 * 4 / 2**20)

# %% [markdown]
# ### ⭐⭐ 11.2 · RMSNorm by hand
#
# Divide by the root mean square (eps inside the root), then scale.

# %%
def my_rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


solved("11.2", my_rms_norm)

# %% [markdown]
# ### ⭐⭐⭐ 11.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - Masking only switches off the padding lanes: the differences should stay at rounding level.
# - 4096 tokens give 768 MiB of fp32 logits; the chunked path holds one chunk at a time.
# - The patch only swapped forwards, so unpatched the losses should match `plain` exactly.
