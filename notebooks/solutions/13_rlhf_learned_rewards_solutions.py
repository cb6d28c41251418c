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
# # Solutions · 13 · RLHF with learned rewards, AI feedback and process rewards
#
# The answers to the exercises of [`13_rlhf_learned_rewards.ipynb`](../13_rlhf_learned_rewards.ipynb). Try
# them there first: the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer
# below is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
import math

from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 13.1 · How far best-of-16 moves
#
# KL(best-of-n ‖ start) = log n − (n − 1)/n, in nats.

# %%
solved("13.1", math.log(16) - 15 / 16)

# %% [markdown]
# ### ⭐ 13.2 · A judge's κ
#
# p_o = 0.70; chance agreement p_e = 0.8 · 0.6 + 0.2 · 0.4 = 0.56; κ = (p_o − p_e) / (1 − p_e).

# %%
solved("13.2", (0.70 - 0.56) / (1 - 0.56))

# %% [markdown]
# ### ⭐⭐ 13.3 · The position-averaged label
#
# With the first reply shown as B it wins when the judge names B: 1 − P("A").

# %%
def p_first_wins(p_a_first_as_a, p_a_first_as_b):
    return (p_a_first_as_a + (1 - p_a_first_as_b)) / 2


solved("13.3", p_first_wins)

# %% [markdown]
# ### ⭐⭐ 13.4 · The `prefix` process reward

# %%
def prefix_reward(steps):
    first_wrong = steps.index(False) if False in steps else len(steps)
    return first_wrong / len(steps) if steps else 0.0


solved("13.4", prefix_reward)

# %% [markdown]
# ### ⭐⭐⭐ 13.5 · Find the fall
#
# What to look for (hints, not measured answers: your runs are the answer):
#
# - The proxy should keep rising with √KL; gold accuracy, if the policy travels far enough, peaks and then
#   falls, earlier for smaller β. On a 135M model a short run may never reach the fall: more steps and a
#   smaller β are the way there.
# - Best-of-n usually reaches a given proxy reward for less KL than RL, and is the baseline to beat.

# %% [markdown]
# ### ⭐⭐⭐ 13.6 · A better judge, or a stricter label
#
# - Strict verdicts drop every pair whose verdict flips with the order: fewer pairs, usually a higher κ on
#   what is left. A small judge with a strong lean towards "A" can leave almost nothing, which is what the
#   position-averaged label is for. A larger judge should raise κ and lower the tie rate.

# %% [markdown]
# ### ⭐⭐⭐ 13.7 · Which process reward?
#
# - `all` pays nothing to a reply with one wrong step, `prefix` pays for the steps before it, `fraction` for
#   every step that holds: from the harshest to the most lenient.
# - A heavier process weight pushes harder on the steps; watch for the cheap way to earn it: one trivially
#   true equation scores 1 under `fraction` (a reply with no equation scores `no_steps`, 0).
