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
# # Solutions · 00 · Setup and tour
#
# The answers to the exercises of [`00_setup_and_tour.ipynb`](../00_setup_and_tour.ipynb). Try them
# there first:
# the check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below
# is checked by the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.exercises import solved
from labkit.models import load_model

model, tok = load_model("smollm2-135m-instruct")
n_params = sum(p.numel() for p in model.parameters())

# %% [markdown]
# ### ⭐ 00.1 · How much memory do the weights take?
#
# 4 bytes per fp32 parameter: multiply, then divide by a million.

# %%
answer_00_1 = n_params * 4 / 1e6
solved("00.1", answer_00_1, n_params=n_params)

# %% [markdown]
# ### ⭐⭐ 00.2 · A system prompt
#
# The system turn goes first; `token_view(tok, with_system)` shows it grey: not trained on.

# %%
conversation = [{"role": "user", "content": "What is 3 + 4?"},
                {"role": "assistant", "content": "3 + 4 = 7."}]
with_system = [{"role": "system", "content": "You answer in one short sentence."}, *conversation]
solved("00.2", with_system, original=conversation)

# %% [markdown]
# ### ⭐⭐⭐ 00.3 · Open-ended
#
# What to look for (these are hints, not measured answers: your runs are the answer):
#
# - Look for dropped carries and numbers copied from the question.
# - `cpu-smoke` shrinks lengths and counts (fewer baseline prompts, shorter replies); the model,
#   template and code path stay the same: the presets are the only size dial.
