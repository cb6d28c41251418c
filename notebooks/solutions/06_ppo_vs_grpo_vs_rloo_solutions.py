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
# # Solutions · 06 · PPO vs GRPO vs RLOO: same task, same budget, same seed
#
# The answers to the exercises of [`06_ppo_vs_grpo_vs_rloo.ipynb`](../06_ppo_vs_grpo_vs_rloo.ipynb).
# Try them there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 06.1 · Who needs a critic?
#
# PPO's critic estimates per-token values for GAE; GRPO and RLOO use the other samples instead.

# %%
solved("06.1", "a")

# %% [markdown]
# ### ⭐⭐ 06.2 · RLOO by hand
#
# Each reward minus the mean of the others in its group.

# %%
def my_rloo(rewards, group_size):
    groups = [rewards[i:i + group_size] for i in range(0, len(rewards), group_size)]
    return [r - (sum(g) - r) / (len(g) - 1) for g in groups for r in g]


solved("06.2", my_rloo)

# %% [markdown]
# ### ⭐⭐⭐ 06.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - The controller should raise `kl_coef` when KL overshoots the target and lower it when KL stays
#   below.
# - With two samples GRPO's std is 0 or |r₁ − r₂|/√2, so every non-tied group gets advantages ±0.71;
#   RLOO just takes r₁ − r₂: compare their curves.
# - More epochs reuse each batch more: a rising clip fraction is the sign of updates outrunning the
#   data.
