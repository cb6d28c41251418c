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
# # Solutions · 09 · Inference: engines, multi-LoRA serving, batching, speculative decoding, quantisation
#
# The answers to the exercises of [`09_inference.ipynb`](../09_inference.ipynb). Try them there first: the
# check cells and `hint(...)` are made for that. CI runs this notebook, so each answer below is checked by
# the same `check` the student gets.

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora (only what a context needs)

# %%
from labkit.exercises import solved

# %% [markdown]
# ### ⭐ 09.1 · The KV cache of a batch
#
# Per token: a key and a value vector (2) in each of 30 layers for each of the 3 key/value heads of 64
# dims, at 2 bytes each; then 32 × 2048 tokens.

# %%
solved("09.1", 2 * 30 * 3 * 64 * 2 * 32 * 2048 / 2**20)

# %% [markdown]
# ### ⭐ 09.2 · Idle slots in a static batch
#
# Batch 1 (8, 64, 8, 8) decodes 64 steps in 4 rows: 256 slots for 88 tokens; batch 2 (16 × 4): 64 slots,
# all useful. 1 − 152 / 320.

# %%
solved("09.2", 1 - (8 + 64 + 8 + 8 + 4 * 16) / (4 * 64 + 4 * 16))

# %% [markdown]
# ### ⭐⭐ 09.3 · What speculative decoding can gain
#
# Expected tokens per step: 1 + α + … + α^k = (1 − α^(k+1)) / (1 − α) (drafted token i survives with
# probability α^i, and the target always adds one). A step costs 1 + k·c target forwards.

# %%
def expected_speedup(alpha, k, c):
    return (1 - alpha ** (k + 1)) / ((1 - alpha) * (1 + k * c))


solved("09.3", expected_speedup)

# %% [markdown]
# ### ⭐⭐ 09.4 · Clipped for no reason
#
# The ratio is exp(logp_train − logp_engine); a token is clipped when it leaves [1 − ε, 1 + ε].

# %%
def clipped_share(lp_engine, lp_train, eps):
    return float(((lp_train - lp_engine).exp() - 1).abs().gt(eps).float().mean())


solved("09.4", clipped_share)

# %% [markdown]
# ### ⭐⭐⭐ 09.5 · Where does continuous batching win?
#
# What to look for (hints, not measured answers: your runs are the answer):
#
# - Continuous batching gains throughput by filling the slots static batching leaves idle (09.2): a few
#   long requests among many short ones, more requests than one batch, a larger `batch_size`.
# - On a 2-core CPU a decoding step's cost grows with its rows, so a filled slot is not free as on a GPU:
#   the latency win (p50) comes first, throughput only where static batching wastes most of its slots.

# %% [markdown]
# ### ⭐⭐⭐ 09.6 · A draft worth its cost
#
# - With c = 0.1, `expected_speedup(alpha, k, 0.1) > 1` needs α above about 0.18 for k = 2, 0.29 for k = 4
#   and 0.45 for k = 8.
# - A truncated draft is not a tenth of the model: it shares the LM head (49152 × 576, about 28 M of the
#   135 M parameters), so by parameter count a 2-layer draft costs c ≈ 0.26 and a 15-layer one c ≈ 0.6; the
#   break-even α at k = 4 rises to about 0.54 and 0.81. Compare with the measured acceptance.
# - More `draft_tokens` pays only while acceptance stays high: each extra draft costs c whether kept or not.

# %% [markdown]
# ### ⭐⭐⭐ 09.7 · A bf16 engine for an fp32 trainer
#
# - Expect `logprob_gap` orders of magnitude above fp32's (about 1e-5), and tokens clipped at ε = 0.2 for
#   no reason but arithmetic: section 6's bf16 → fp32 row gives the size to expect; your `clipped_share`
#   on the rollout's log-probs should match `clipped`.
