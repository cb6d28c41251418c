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
# # Solutions · 10 · Orchestration: manifests, lineage, gates, promotion, rollback, the nightly report
#
# The answers to the exercises of [`10_orchestration.ipynb`](../10_orchestration.ipynb). Try them
# there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.exercises import solved
from labkit.runs.nightly import lower

# %% [markdown]
# ### ⭐ 10.1 · What does a blocked promotion leave?
#
# A blocked promotion changes nothing: production keeps the last model that passed.

# %%
solved("10.1", "b")

# %% [markdown]
# ### ⭐⭐ 10.2 · Declare a nightly metric
#
# A loss is better lower; `tol="10%"` is relative to the last good night.

# %%
solved("10.2", lower(2.31, tol="10%"))

# %% [markdown]
# ### ⭐⭐⭐ 10.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - A changed config is a new run: a new folder with a new manifest; the old one stays, so lineage
#   stays true.
# - A resumed run continues from the last checkpoint; compare its final loss with the uninterrupted
#   run's.
# - Try a floor on preference accuracy: does the DPO model still pass?
# - The second night flags the regressed metric and exits non-zero.
