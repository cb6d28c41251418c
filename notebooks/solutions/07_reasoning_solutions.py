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
# # Solutions · 07 · Reasoning: chain-of-thought data, self-reflection, rejection sampling
#
# The answers to the exercises of [`07_reasoning.ipynb`](../07_reasoning.ipynb). Try them there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.exercises import solved
from labkit.reasoning.cot import verify_steps
from labkit.rewards.verifiable import correctness

# %% [markdown]
# ### ⭐ 07.1 · How many prompts yield data?
#
# 1 − P(all four fail) = 1 − 0.75⁴.

# %%
solved("07.1", 1 - 0.75**4)

# %% [markdown]
# ### ⭐⭐ 07.2 · A reward for the process
#
# Combine the outcome check (`correctness`) with the process check (`verify_steps`).

# %%
def step_reward(prompts, completions, answer, **kwargs):
    right = correctness(prompts, completions, answer=answer)
    return [float(r == 1.0 and verify_steps(c)["all_correct"]) for r, c in zip(right, completions)]


solved("07.2", step_reward)

# %% [markdown]
# ### ⭐⭐⭐ 07.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - Compare how many samples verify in round 1, and whether the kept answers show their steps.
# - With k = 1 each prompt gets one try (see ⭐ 07.1): how much of the gain is left?
# - Step-checked rewards keep fewer samples: compare held-out accuracy and how sound the kept traces
#   are.
