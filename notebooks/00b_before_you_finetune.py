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
# # 00b · Before you fine-tune: the cost ladder
#
# Fine-tuning is the most expensive way to change what a model does, and often not the first one to try.
# This notebook climbs a ladder on one task (word problems answered as `a + b = c` then `#### c`) and,
# on each rung, measures what the model gets right and what it costs:
#
# 1. **zero-shot**: the question alone;
# 2. **few-shot**: three worked examples before every question;
# 3. **retrieval**: the three worked examples most similar to *this* question;
# 4. **LoRA SFT**: the question alone, to a model fine-tuned on the examples.
#
# Prompt tokens are paid on every question, for as long as the prompt is in service; training is paid
# once. The table at the end puts both on one scale.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Score prompting strategies and a fine-tune on the same held-out questions, for format and answer.
# 2. Count what each rung costs: prompt and reply tokens per question, seconds, one-off training.
# 3. Build a few-shot prompt from fixed examples and from retrieved ones.
# 4. Decide from the numbers when prompting is enough and when fine-tuning pays for itself.
#
# **Requirements.** CPU: about 1 CPU minute in the `cpu-smoke` preset (68 s headless on a shared 2-core
# machine; not yet in a nightly run). GPU memory: not measured.
#
# **In the course:** after `00` (the model, the chat template); before `01`, which trains the adapter of
# the last rung properly. The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora: the size dial, nothing else changes
SHOTS = 3  # worked examples per question on the few-shot and retrieval rungs
OUTPUT_DIR = "runs/00b_ladder"

# %%
import pandas as pd
import plotly.express as px

from labkit.config import SFTConfig
from labkit.data.samples import load_sample
from labkit.eval.ladder import (
    fixed_examples,
    ladder_rows,
    question,
    score_rung,
    similar_examples,
    with_examples,
)
from labkit.models import load_model
from labkit.stages.sft import train

cfg = SFTConfig.from_preset(PRESET, output_dir=OUTPUT_DIR)
pool = load_sample("sft_format", split="train")       # the worked examples we may show or train on
heldout = load_sample("sft_format", split="heldout")[: cfg.n_eval]  # the questions every rung answers
model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
print(f"{len(pool)} worked examples, {len(heldout)} held-out questions, replies up to "
      f"{cfg.eval_max_new_tokens} tokens")

# %% [markdown]
# ## 1. Zero-shot: the question alone

# %%
rungs = [score_rung("zero-shot", model, tok, heldout, [question(r) for r in heldout],
                    max_new_tokens=cfg.eval_max_new_tokens)]
pd.DataFrame(rungs[-1].samples)[["question", "reply", "format_ok", "correct"]].head()

# %% [markdown]
# ## 2. Few-shot: the same worked examples before every question
#
# The examples go in as earlier chat turns: the model sees three exchanges in the format we want, then
# the new question.

# %%
shots = fixed_examples(pool, SHOTS, seed=cfg.seed)
rungs.append(score_rung("few-shot", model, tok, heldout, [with_examples(r, shots) for r in heldout],
                        max_new_tokens=cfg.eval_max_new_tokens))
pd.DataFrame(rungs[-1].samples)[["question", "reply", "format_ok", "correct"]].head()

# %% [markdown]
# ## 3. Retrieval: the most similar worked examples
#
# Instead of the same three examples for everyone, each question gets the three whose wording is
# closest to its own (cosine over word counts; the numbers are ignored, so "puts in ... more" finds
# other additions). Same prompt length, better-chosen examples.

# %%
retrieved = [similar_examples(r, pool, SHOTS) for r in heldout]
print("question: ", question(heldout[0])[-1]["content"])
for ex in retrieved[0]:
    print("retrieved:", question(ex)[-1]["content"])
rungs.append(score_rung("retrieval", model, tok, heldout,
                        [with_examples(r, ex) for r, ex in zip(heldout, retrieved)],
                        max_new_tokens=cfg.eval_max_new_tokens))

# %% [markdown]
# ## 4. LoRA SFT: teach the format once
#
# The same recipe as notebook 01 at this preset's size. Its one-off cost is the training tokens and
# minutes; afterwards each question costs only its own tokens. (`force=True`: train again on a re-run,
# so the model is in memory and the minutes are this run's.)

# %%
result = train(cfg, force=True)
m = result.metrics
rungs.append(score_rung("LoRA SFT", result.model, result.tokenizer, heldout, [question(r) for r in heldout],
                        max_new_tokens=cfg.eval_max_new_tokens, setup_seconds=m["train_seconds"],
                        setup_tokens=round(m["tokens_per_s"] * m["train_seconds"])))
print(f"trained {m['steps']} steps in {m['train_seconds']:.0f} s")

# %% [markdown]
# ## 5. The ladder

# %%
table = pd.DataFrame(ladder_rows(rungs, questions=1000)).set_index("rung")
table

# %%
fig = px.scatter(table.reset_index(), x="tokens for 1000 questions", y="format accuracy", text="rung",
                 title="format accuracy against the tokens 1000 questions cost")
fig.update_traces(textposition="top center")

# %% [markdown]
# ## 6. When is each rung enough?
#
# - **Zero-shot** is enough when the model already does the task in the form you need: measure it first,
#   it is free.
# - **Few-shot** buys format cheaply in engineering time, but every question pays for the examples; with
#   a small model and a strict format it often helps the format more than the answers.
# - **Retrieval** costs the same tokens as few-shot plus a search; it pays off when questions differ and
#   the right example is the one most like them.
# - **Fine-tuning** has a one-off cost and then the shortest prompts. It pays off when the rungs below
#   miss the accuracy you need, or when enough questions come that the saved prompt tokens outweigh
#   training. At the smoke size the fine-tune trains for only a few steps: run `PRESET = "cpu"` for a
#   fair last rung.

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, near, record

by = {r.name: r for r in rungs}
record(zero_shot_format=higher(by["zero-shot"].format_accuracy, tol=0.25),
       few_shot_format=higher(by["few-shot"].format_accuracy, tol=0.25),
       sft_format=higher(by["LoRA SFT"].format_accuracy, tol=0.25),
       few_shot_prompt_tokens=near(by["few-shot"].prompt_tokens, tol="20%"))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell
# under each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and
# why. `hint("00b.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/00b_before_you_finetune_solutions.ipynb`](solutions/00b_before_you_finetune_solutions.ipynb):
# try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 00b.1 · What do the examples cost?
#
# From the table: how many *extra* prompt tokens does the few-shot rung spend over zero-shot, across
# 1000 questions?

# %%
answer_00b_1 = ...  # a number of tokens

# %%
check("00b.1", answer_00b_1, zero_shot=by["zero-shot"].prompt_tokens, few_shot=by["few-shot"].prompt_tokens)

# %% [markdown]
# ### ⭐⭐ 00b.2 · An instruction rung
#
# Write `instructed(row)`: the question of `row` (`question(row)`) preceded by a system turn that asks for
# the working and a last line `#### n`. Then add it to the ladder:
# `rungs.append(score_rung("instruction", model, tok, heldout, [instructed(r) for r in heldout]))`.

# %%
def instructed(row):
    raise NotImplementedError("your code")

# %%
check("00b.2", instructed)

# %% [markdown]
# ### ⭐⭐⭐ 00b.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - From the table, after how many questions does the LoRA rung cost fewer tokens in total than the
#   few-shot rung? Does the answer change at `PRESET = "cpu"`?
# - Set `SHOTS = 8`. Does retrieval pull ahead of fixed examples as the prompt grows?
# - Which rung would you ship for a classroom helper that answers 200 questions a day, and why?
