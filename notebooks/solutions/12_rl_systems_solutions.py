# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Solutions · 12 · RL systems: staleness, collocated vs disaggregated, partial rollouts, weight sync, memory
#
# The answers to the exercises of [`12_rl_systems.ipynb`](../12_rl_systems.ipynb). Try them there first: the
# check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below is checked by
# the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu (only what a context needs)

# %%
import torch

from labkit.exercises import solved
from labkit.rlsys.planner import plan

# %% [markdown]
# ### ⭐ 12.1 · What full fine-tuning holds before the first activation
#
# 4 (fp32 master) + 4 (fp32 gradient) + 2 × 4 (AdamW's moments) = 16 bytes a parameter.

# %%
solved("12.1", 16 * plan("qwen2.5-1.5b").params / 2**30)

# %% [markdown]
# ### ⭐ 12.2 · The lag of a partial rollout
#
# The oldest token sets the lag: 6 − 3 = 3 > 2, so the trainer drops the group and asks for a new one.

# %%
solved("12.2", 6 - 3)

# %% [markdown]
# ### ⭐⭐ 12.3 · Truncated importance sampling
#
# π_θ / π_behaviour per token, capped above only.

# %%
def tis_weights(logp, behaviour, cap):
    return torch.exp(logp - behaviour).clamp(max=cap)


solved("12.3", tis_weights)

# %% [markdown]
# ### ⭐⭐ 12.4 · The bf16 delta trap
#
# Merge in fp32, round back to bf16, compare with the old bf16 values.

# %%
def changed_share(weight, update):
    return ((weight.float() + update).to(torch.bfloat16) != weight).float().mean()


solved("12.4", changed_share)

# %% [markdown]
# ### ⭐⭐⭐ 12.5 · Sync less often, correct for it
#
# What to look for (hints, not measured answers: your runs are the answer):
#
# - With `sync_every=2` the workers keep one policy for two steps: the mean lag rises by about half a
#   version and less time goes to syncing; whether throughput rises depends on how long a sync takes next to
#   a step (the `sync_MB` and the timelines tell).
# - On-policy the IS weights are 1; the staler the data, the further their mean moves from 1 and the more
#   tokens hit the cap. Compare the reward curves with and without at the same seed.

# %% [markdown]
# ### ⭐⭐⭐ 12.6 · Two workers
#
# - On 2 shared CPU cores two workers and a trainer compete for the same cores: expect little or no gain.
#   On 2 GPUs each worker has its own device, so rollouts (most of the time of a step) double.

# %% [markdown]
# ### ⭐⭐⭐ 12.7 · The longest completion that fits
#
# - At the widget's start (batch 2, prompt 128, k = 8, checkpointing on) the plan fits 12 GB up to a
#   completion of about 160 tokens. The part that grows fastest is the **logits**: 16 sequences × tokens ×
#   a 151 k vocabulary × 12 bytes, several times the activations. Chunked cross-entropy (notebook 11) is
#   the fix for that part.
# - With checkpointing off the activations of every layer stay in memory, and not even 32 tokens fit.
