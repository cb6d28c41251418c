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
# # 01 · Supervised fine-tuning (SFT)
#
# SFT is the first post-training step: show the model examples of the behaviour you want and train it
# to imitate them with the ordinary next-token loss. It is where a model learns a **format** (chat
# turns, tool calls, an answer layout) far more than new knowledge.
#
# In this notebook we teach the embedded SmolLM2-135M-Instruct to answer arithmetic questions in a
# fixed format it has never used, a working line and then `#### <answer>`:
#
# ```
# 7 + 5 = 12
# #### 12
# ```
#
# and we watch two things at once: the held-out **format accuracy** (what we taught) and a
# **forgetting probe** (what it might cost: the loss on general-knowledge answers it already knew).

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Validate chat-format SFT data, and read labkit's error for a bad row (file, row, field).
# 2. Explain the chat template and the assistant-only loss mask.
# 3. Train a LoRA adapter with TRL's `SFTTrainer` while the live dashboard plots loss, learning rate,
#    gradient norm and tokens/s.
# 4. Judge a fine-tune by held-out format accuracy and a forgetting probe, before and after.
#
# **Requirements.** CPU: about 7 CPU minutes (395 s) in the `cpu-smoke` preset, as measured by the nightly
# run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset takes several times
# longer). GPU memory: not measured.
#
# **In the course:** after `00` (and `00b`). Next: `02` (LoRA, QLoRA and merging in depth) or straight to
# `03`/`04`. The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
METHOD = "lora"  # full | lora | qlora
OUTPUT_DIR = "runs/01_sft"

# %%
from IPython.display import Markdown, display

from labkit.config import SFTConfig
from labkit.dash import LiveDashboard, before_after, loss_curve, token_view
from labkit.data import load_rows
from labkit.data.samples import load_sample
from labkit.errors import DataError
from labkit.models import load_tokenizer
from labkit.stages.sft import train

cfg = SFTConfig.from_preset(PRESET, method=METHOD, output_dir=OUTPUT_DIR)
print(SFTConfig.help())

# %% [markdown]
# ## 1. The data
#
# `data_samples/sft_format.jsonl` holds conversations in the *messages* format that TRL and most chat
# datasets use. A `split` column keeps 50 problems out of training, so the evaluation asks questions
# the model never saw.

# %%
rows = load_sample("sft_format")
print(f"{len(rows)} rows; splits: { {s: sum(r['split'] == s for r in rows) for s in ('train', 'heldout')} }")
rows[0]["messages"]

# %% [markdown]
# Bad data is the most common reason a fine-tune goes wrong without an error. labkit validates every
# row before any work starts and names the file, row and field of the first problem:

# %%
broken = [r["messages"] for r in rows[:3]] + [[{"role": "user", "content": "2 + 2?"},
                                               {"role": "assistant", "content": "   "}]]
try:
    load_rows([{"messages": m} for m in broken])
except DataError as err:
    print("DataError:", err)

# %% [markdown]
# ## 2. Template and loss mask
#
# Each conversation goes through the model's chat template, and the loss is taken **only on the
# assistant's tokens** (green). Training on the question too would spend capacity on predicting users.

# %%
tok = load_tokenizer(cfg.model)
token_view(tok, rows[0]["messages"])

# %% [markdown]
# ## 3. Train
#
# `labkit.stages.sft.train` runs TRL's `SFTTrainer` with a LoRA adapter (or full weights, or a 4-bit
# QLoRA base) and feeds the live dashboard: loss, learning rate, gradient norm and tokens per second.
# Before and after training it scores the held-out questions and the forgetting probe.

# %%
result = train(cfg, callbacks=[LiveDashboard(title=f"SFT ({cfg.method})")])
m = result.metrics
print(f"{m['steps']} steps in {m['train_seconds']:.0f} s, {m['tokens_per_s']:.0f} tokens/s, "
      f"{m['trainable_params']:,} trainable parameters via {m['backend']}")

# %% [markdown]
# ## 4. Before and after

# %%
for s in result.samples[:4]:
    display(Markdown(f"**Q:** {s['prompt']}  \n**before:** `{s['before']!r}`  \n**after:** `{s['after']!r}`"))

# %%
print(f"format accuracy {m['before']['format_accuracy']:.0%} → {m['after']['format_accuracy']:.0%};  "
      f"answer accuracy {m['before']['answer_accuracy']:.0%} → {m['after']['answer_accuracy']:.0%};  "
      f"probe loss {m['before']['probe_loss']:.3f} → {m['after']['probe_loss']:.3f}")
before_after(m)

# %%
loss_curve(result.log_path)

# %% [markdown]
# ## 5. What just happened
#
# - The format is learnt in a few dozen steps: SFT is very good at *how* to answer.
# - Answer accuracy moves much less: a 135M model cannot be taught arithmetic by a format.
# - The probe loss shifts a little: even a small LoRA nudges behaviour outside the task. Watching a
#   probe like this is how you catch catastrophic forgetting before users do.

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, lower, record

record(format_accuracy=higher(m["after"]["format_accuracy"], tol=0.15),
       answer_accuracy=higher(m["after"]["answer_accuracy"], tol=0.15),
       probe_loss=lower(m["after"]["probe_loss"], tol="10%"))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("01.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/01_sft_solutions.ipynb`](solutions/01_sft_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 01.1 · What the loss trains on
#
# With the default `loss_on="assistant"`, which tokens of a conversation count in the SFT loss?
# (a) every token, the user's turns and the template included; (b) the assistant's replies, their
# end-of-turn token included; (c) only the final `#### n` line.

# %%
answer_01_1 = ...  # "a", "b" or "c"

# %%
check("01.1", answer_01_1)

# %% [markdown]
# ### ⭐⭐ 01.2 · A full fine-tuning config
#
# Build `full_cfg` from `cfg`: full fine-tuning (`method="full"`) with half of `cfg.max_steps`, every
# other field unchanged. If you have the minutes, train it (`train(full_cfg,
# callbacks=[LiveDashboard()])`) and compare trainable parameters and tokens/s with LoRA.

# %%
full_cfg = ...  # cfg.replace(...)

# %%
check("01.2", full_cfg, base=cfg)

# %% [markdown]
# ### ⭐⭐⭐ 01.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Train with `loss_on="all"` (a `SFTConfig` field): does the format still stick? What happens to the
#   probe loss, and why?
# - Halve `max_steps`: where on the loss curve does the format accuracy jump?
