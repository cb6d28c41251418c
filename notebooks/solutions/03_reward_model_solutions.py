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
# # Solutions · 03 · Reward models, and how a policy games them
#
# The answers to the exercises of [`03_reward_model.ipynb`](../03_reward_model.ipynb). Try them there
# first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
import torch.nn.functional as F

from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 03.1 · From rewards to a preference
#
# σ(1 − 0) = 1 / (1 + e⁻¹) ≈ 0.731.

# %%
solved("03.1", 0.731)

# %% [markdown]
# ### ⭐⭐ 03.2 · The loss by hand
#
# `logsigmoid` stays finite where `log(sigmoid(x))` underflows.

# %%
def bt_loss(chosen, rejected):
    return -F.logsigmoid(chosen - rejected).mean()


solved("03.2", bt_loss)

# %% [markdown]
# ### ⭐⭐⭐ 03.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - Watch whether the reward of the best of n keeps rising with n while true quality levels off: that
#   gap is the over-optimisation the proxy allows.
# - `center_rewards` pulls the mean reward towards 0; check the ranking accuracy and the calibration
#   error.
# - If the bias goes, it came from the data (padding correlated with being chosen), not from the
#   model.
