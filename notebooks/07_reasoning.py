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
# # 07 · Reasoning: chain-of-thought data, self-reflection, rejection sampling
#
# A model that answers in one jump has to get every carry right in its head. Writing the working out
# (chain of thought) turns one hard step into several easy ones, and gives us something to **check step by
# step**, not only at the answer. This lab builds reasoning data three ways, all from problems whose answers
# code can verify:
#
# 1. **Chain-of-thought data** written by code from the problem itself, each step checkable.
# 2. **Self-reflection traces** built from the model's *own* wrong attempts: attempt → check → revise.
# 3. **Rejection sampling** (RFT / STaR): sample k answers, keep the verified ones, fine-tune on them,
#    repeat. The model's right answers become its training data.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Build chain-of-thought SFT data whose every step is checked by code.
# 2. Turn the model's own mistakes into self-reflection training data.
# 3. Run rejection sampling round by round and follow held-out accuracy per round.
# 4. Tell an outcome check (the final answer) from a process check (every step).
#
# **Requirements.** CPU: about 12 CPU minutes (739 s) in the `cpu-smoke` preset, as measured by the
# nightly run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset takes several
# times longer). GPU memory: not measured.
#
# **In the course:** after `01` and `05`. Next: `08` (evaluation). The course map and a 5-session syllabus
# are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
MODEL = "smollm2-135m-instruct"
OUT = "runs/07_reasoning"

# %%
import pandas as pd

from labkit.config import ReasoningConfig
from labkit.dash import LiveDashboard, Panel
from labkit.dash.rl import rounds_plot
from labkit.data.samples import load_sample
from labkit.models import load_model
from labkit.reasoning import (
    attempt_stats,
    build_cot_rows,
    build_reflection_rows,
    collect_attempts,
    cot_reply,
    verify_steps,
)
from labkit.stages.rejection import rejection_sampling

cfg = ReasoningConfig.from_preset(PRESET, model=MODEL, output_dir=OUT)
rows = load_sample("arithmetic_prompts", split="train")

# %% [markdown]
# ## 1. Chain of thought, written and checked by code
#
# Each arithmetic prompt carries its `expression`. `cot_reply` splits it into tens and ones, one equation
# per line; `verify_steps` re-computes every equation in a reply, which is a **process** check: it finds the
# first wrong step, not only a wrong answer.

# %%
for expression in ("47 + 38", "85 - 38", "7 * 12"):
    print(f"{expression}:\n{cot_reply(expression)}\n")

# %%
cot_rows = build_cot_rows(rows)
print(len(cot_rows), "CoT rows; all steps verify:",
      all(verify_steps(r["messages"][-1]["content"])["all_correct"] for r in cot_rows))
verify_steps("47 + 38: 40 + 30 = 70, 7 + 8 = 15, 70 + 15 = 75\n#### 75")

# %% [markdown]
# ## 2. Self-reflection from the model's own mistakes
#
# Sample a few attempts per prompt from the model, keep the wrong ones, and write a trace that shows the
# attempt, a check computed by code, and the corrected working. Training on such traces teaches the *shape*
# of checking and revising; whether the model learns to check for real is what a held-out eval must show.

# %%
model, tok = load_model(MODEL)
attempts = collect_attempts(model, tok, rows[:8], k=2, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, seed=cfg.seed)
print(attempt_stats(attempts))
reflection = build_reflection_rows(attempts)
print(reflection[0]["messages"][-1]["content"] if reflection
      else "every attempt was right: no trace to build")
del model

# %% [markdown]
# ## 3. Rejection sampling, round by round
#
# Each round samples k answers for a slice of training prompts from the current model, keeps the answers
# the verifier accepts, fine-tunes the LoRA adapter on them, and measures held-out greedy accuracy.
# **verified rate** is the model's pass rate on training prompts at the start of the round: if the loop
# works, it rises round over round.

# %%
dash = LiveDashboard([Panel("SFT loss", ("loss",)),
                      Panel("rates", (), ("verified_rate", "heldout_accuracy"))],
                     title="rejection sampling")
result = rejection_sampling(cfg, callbacks=[dash])

# %%
rounds = result.metrics["rounds"]
pd.DataFrame(rounds)[["round", "sampled", "verified", "verified_rate", "kept", "heldout_accuracy", "seconds"]]

# %%
rounds_plot(rounds)

# %% [markdown]
# ## What to look for
#
# - The first round trains on the answers the model could already produce: it sharpens what it knows
#   rather than teaching new arithmetic. Later rounds sample from a sharper model, so more verify.
# - Only verified *and finished* answers are kept: a reply cut off at the token limit is never imitated.
# - Compare with notebook 05: GRPO also learns from the model's own samples, but pushes wrong answers
#   *down* too; rejection sampling only imitates the right ones.

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, record

record(heldout_accuracy=higher(result.metrics["after"]["heldout_accuracy"], tol=0.15),
       verified_rate=higher(rounds[-1]["verified_rate"], tol=0.15))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("07.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/07_reasoning_solutions.ipynb`](solutions/07_reasoning_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 07.1 · How many prompts yield data?
#
# Rejection sampling draws k = 4 answers per prompt and keeps the prompt if any answer verifies. If each
# answer is right with probability 0.25, independently, what fraction of prompts yields at least one kept
# answer?

# %%
answer_07_1 = ...  # a fraction

# %%
check("07.1", answer_07_1)

# %% [markdown]
# ### ⭐⭐ 07.2 · A reward for the process
#
# Write `step_reward(prompts, completions, answer, **kwargs)`: 1.0 only when the final answer is right
# *and* every step `a op b = c` holds (`verify_steps`), else 0.0; one float per completion.

# %%
def step_reward(prompts, completions, answer, **kwargs):
    raise NotImplementedError("your code")

# %%
check("07.2", step_reward)

# %% [markdown]
# ### ⭐⭐⭐ 07.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Start the rounds from the CoT data: `rejection_sampling(cfg, warm_start="cot")`. Do more samples
#   verify in round 1? Do the kept answers show their working?
# - Set `k=1`. How much of the gain came from sampling several answers per prompt?
# - Train with your `step_reward` (pass `reward=`): does held-out accuracy move differently?
