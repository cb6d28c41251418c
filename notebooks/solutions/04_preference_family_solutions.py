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
# # Solutions · 04 · The preference-optimisation family: DPO, IPO, hinge, robust DPO, SimPO, ORPO, KTO
#
# The answers to the exercises of [`04_preference_family.ipynb`](../04_preference_family.ipynb). Try
# them there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
import torch.nn.functional as F

from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 04.1 · Who needs a reference model?
#
# SimPO (like ORPO) uses the policy's own length-normalised log-probability.

# %%
solved("04.1", "c")

# %% [markdown]
# ### ⭐⭐ 04.2 · DPO by hand
#
# Δ is the difference of the two log-ratios; the loss is −log σ(βΔ), averaged.

# %%
def my_dpo_loss(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


solved("04.2", my_dpo_loss)

# %% [markdown]
# ### ⭐⭐⭐ 04.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - A larger β makes the loss saturate at a smaller margin: the policy stays closer to the reference
#   (less KL), and IPO's target margin shrinks to 1/(2β).
# - Sequence-level methods (DPO, IPO) learn to prefer concise replies; per-token ones (SimPO, ORPO)
#   can prefer padded replies, whose extra tokens are easy.
# - robust DPO is built to stay unbiased under a known flip rate: check whether it keeps more held-out
#   accuracy than `dpo` at 20 % flips.
