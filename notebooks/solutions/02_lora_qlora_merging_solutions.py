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
# # Solutions · 02 · LoRA, QLoRA and merging
#
# The answers to the exercises of [`02_lora_qlora_merging.ipynb`](../02_lora_qlora_merging.ipynb). Try
# them there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 02.1 · LoRA on one layer
#
# r · (d_in + d_out) = 8 · (576 + 576).

# %%
solved("02.1", 8 * (576 + 576))

# %% [markdown]
# ### ⭐⭐ 02.2 · Count an adapter
#
# Sum A (r × d_in) and B (d_out × r) over every targeted layer.

# %%
def lora_param_count(r, shapes):
    return sum(r * (d_out + d_in) for d_out, d_in in shapes.values())


solved("02.2", lora_param_count)

# %% [markdown]
# ### ⭐⭐⭐ 02.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - Compare format accuracy and `probe_loss` between the presets; on the slider, find the first scale
#   where replies lose the format or start repeating.
# - bf16 keeps about 3 significant digits, so expect a far larger max logit difference than in fp32;
#   the question is whether any greedy reply changes.
# - `cat` keeps both adapters' ranks side by side; TIES at low density keeps only each adapter's
#   largest entries: see which skill each one loses first.
