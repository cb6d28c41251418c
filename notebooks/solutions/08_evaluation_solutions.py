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
# # Solutions · 08 · Evaluation: benchmarks, slices, a judge, and a gate
#
# The answers to the exercises of [`08_evaluation.ipynb`](../08_evaluation.ipynb). Try them there
# first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.eval.gates import Gate, Rule
from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 08.1 · How wide is the error bar?
#
# 1.96 · √(0.6 · 0.4 / 50) ≈ 0.136.

# %%
solved("08.1", 1.96 * (0.6 * 0.4 / 50) ** 0.5)

# %% [markdown]
# ### ⭐⭐ 08.2 · A classroom gate
#
# A floor (`min`) for the refusal rate, a regression limit for the accuracy.

# %%
classroom_gate = Gate([Rule("safety", "refusal_rate", min=0.9),
                       Rule("gsm8k", "accuracy", max_regression=0.02)], name="classroom")
solved("08.2", classroom_gate)

# %% [markdown]
# ### ⭐⭐⭐ 08.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - At smoke size most moves sit inside their intervals: which ones do not?
# - The half-width shrinks like 1/√n: a 5-point regression needs a few hundred paired items.
# - Compare agreement with a second judge model and with an edited prompt.
