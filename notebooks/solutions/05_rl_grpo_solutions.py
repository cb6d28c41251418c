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
# # Solutions · 05 · RL from verifiable rewards: GRPO
#
# The answers to the exercises of [`05_rl_grpo.ipynb`](../05_rl_grpo.ipynb). Try them there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
import re

from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 05.1 · Advantages of one group
#
# Mean 0.5, sample std 0.577: ±0.5 / 0.577 = ±0.866.

# %%
solved("05.1", [0.866, -0.866, -0.866, 0.866])

# %% [markdown]
# ### ⭐⭐ 05.2 · A format reward
#
# Look at the last line only, and demand an integer after `####`.

# %%
def hash_line_reward(prompts, completions, **kwargs):
    lines = [c.strip().splitlines() or [""] for c in completions]
    return [1.0 if re.fullmatch(r"####\s*-?\d+", ls[-1].strip()) else 0.0 for ls in lines]


solved("05.2", hash_line_reward)

# %% [markdown]
# ### ⭐⭐⭐ 05.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - Watch the `rewards/format/mean` panel against held-out accuracy.
# - At temperature 0.3 more groups have equal rewards (all right or all wrong): zero advantage, no
#   signal.
# - Compare the completion-length panel across the three loss types.
# - A typical hack is a reply that lists several numbers: look for it in the rollout browser.
