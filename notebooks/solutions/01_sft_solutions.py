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
# # Solutions · 01 · Supervised fine-tuning (SFT)
#
# The answers to the exercises of [`01_sft.ipynb`](../01_sft.ipynb). Try them there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.config import SFTConfig
from labkit.exercises import solved

cfg = SFTConfig.from_preset(PRESET)

# %% [markdown]
# ### ⭐ 01.1 · What the loss trains on
#
# Only the assistant's replies, with their end-of-turn token: that is how the model learns to stop.

# %%
solved("01.1", "b")

# %% [markdown]
# ### ⭐⭐ 01.2 · A full fine-tuning config
#
# One `replace` call keeps every other field, so the comparison with LoRA is fair.

# %%
full_cfg = cfg.replace(method="full", max_steps=cfg.max_steps // 2)
solved("01.2", full_cfg, base=cfg)

# %% [markdown]
# ### ⭐⭐⭐ 01.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - With `loss_on="all"` the model also learns to write user turns: does the format still stick, and
#   does the probe loss move more?
# - Compare the step where format accuracy jumps with the shape of the loss curve.
