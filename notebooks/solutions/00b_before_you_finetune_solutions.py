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
# # Solutions · 00b · Before you fine-tune: the cost ladder
#
# The answers to the exercises of [`00b_before_you_finetune.ipynb`](../00b_before_you_finetune.ipynb). Try
# them there first: the check cells and `hint(...)` are made for that. CI runs this notebook, so each
# answer below is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.eval.ladder import question
from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 00b.1 · What do the examples cost?
#
# 1000 × (few-shot − zero-shot prompt tokens per question). The notebook passes your run's numbers to the
# check; here, round numbers stand in for them.

# %%
zero_shot, few_shot = 40.0, 160.0  # prompt tokens per question, as the ladder table shows them
solved("00b.1", 1000 * (few_shot - zero_shot), zero_shot=zero_shot, few_shot=few_shot)

# %% [markdown]
# ### ⭐⭐ 00b.2 · An instruction rung
#
# A system turn first, then the question, never the answer turn.

# %%
INSTRUCTION = {"role": "system", "content": "Show the sum, then a last line #### n with the result."}


def instructed(row):
    return [INSTRUCTION, *question(row)]


solved("00b.2", instructed)

# %% [markdown]
# ### ⭐⭐⭐ 00b.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - Break-even: LoRA's one-off tokens divided by the prompt tokens it saves per question against
#   few-shot.
# - With more shots, retrieved examples should matter more than fixed ones when questions differ.
# - Weigh the accuracy you need against 200 questions a day: prompt tokens add up, training is paid once.
