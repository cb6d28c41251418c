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
# # 05 · RL from verifiable rewards: GRPO
#
# SFT shows the model answers; preference optimisation shows it pairs of answers. RL lets the model write
# its own answers and tells it only **how good each one was**. When the task has a checkable answer (a
# number, a passing unit test) the "how good" is a few lines of code, not a learned reward model: RL from
# verifiable rewards.
#
# GRPO samples a **group** of G answers per prompt, scores each, and pushes up the ones that beat their
# group's mean. No value network: the group is the baseline. Most failed RL runs fail silently: the reward
# is never earned, every answer is cut off, or every answer in a group gets the same score, and then the
# loss is zero and nothing moves. So this lab checks all of that **before** the first step, then trains
# with every signal on screen.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Write verifiable reward functions and test them in the reward playground before training with them.
# 2. Run the RL pre-flight checks that catch untemplated prompts and groups with no reward variance.
# 3. Train with GRPO (TRL) while watching reward, KL, entropy, clip fraction and completion length live.
# 4. Read the rollouts step by step in the rollout browser.
#
# **Requirements.** CPU: about 14 CPU minutes (861 s) in the `cpu-smoke` preset, as measured by the
# nightly run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset takes several
# times longer). GPU memory: not measured.
#
# **In the course:** after `01` (a model that knows the answer format learns faster) and `03` (rewards).
# Next: `06`. The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
MODEL = "smollm2-135m-instruct"
OUT = "runs/05_grpo"

# %%
import pandas as pd

from labkit.config import RLConfig
from labkit.dash import RL_PANELS, LiveDashboard
from labkit.dash.rl import RolloutBrowser, reward_playground, rl_curves
from labkit.models import load_tokenizer
from labkit.rewards import PreflightError, check_prompts_templated, check_rollouts, get_rewards
from labkit.stages import grpo

cfg = RLConfig.from_preset(PRESET, model=MODEL, output_dir=OUT)
cfg = cfg.replace(eval_every=max(cfg.max_steps // 4, 1))
print(cfg.help().splitlines()[0], "\n", {k: v for k, v in cfg.to_dict().items() if k in (
    "rewards", "max_steps", "prompts_per_step", "num_generations", "max_completion_length", "loss_type",
    "beta")})

# %% [markdown]
# ## 1. The reward is code: test it before you train with it
#
# `labkit.rewards` holds the checkers. `correctness` reads a reply's final number with labkit's one answer
# reader (the first `#### n`, else `\boxed{n}`, else "the answer is n", else the last number; fractions,
# decimals, commas, signs and units handled) and compares it with the answer as an exact number.
# Score some hand-written replies, including ones that *should* fool a sloppy checker. Edit the box and
# press **score**: a reward you have not tried on bad answers is a reward the policy will exploit.

# %%
reward_playground(get_rewards(["correctness", "format", "length"]), "What is 40 + 14?", [
    "40 + 14 = 54\n#### 54", "The answer is 54.", "40 + 14 = 54, or maybe 45", "#### 5,4",
    "I think 54 apples."], answer="54")

# %% [markdown]
# ## 2. Pre-flight: the failures that waste a run
#
# `grpo.train` runs these checks on a probe batch before any step. Here each one is provoked on purpose.
# A plain string prompt handed to a chat model skips its chat template, so the model sees text it was
# never trained on:

# %%
tok = load_tokenizer(MODEL)
try:
    check_prompts_templated(tok, ["What is 40 + 14?"])
except PreflightError as err:
    print(f"[{err.check}] {err}")

# %% [markdown]
# Rewards that are the same for every answer in a group give every answer advantage zero, so the gradient
# is zero. A run like that logs a loss, burns hours and learns nothing:

# %%
for rewards in ([0.0] * 8, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]):
    try:
        check_rollouts([True] * 8, rewards, group_size=4, max_completion_length=64)
    except PreflightError as err:
        print(f"[{err.check}] {err}\n")

# %% [markdown]
# ## 3. Train, watching every signal
#
# - **reward** (overall and per function) should rise; **held-out accuracy** (greedy, prompts never trained
#   on) is the number that counts.
# - **KL to the reference** is the drift from where you started; **entropy** falling too fast means the
#   policy collapsed onto one answer.
# - **truncation rate** and **completion length**: answers cut off earn nothing.
# - **zero-variance groups**: the share of prompts that taught nothing this step (all right or all wrong).

# %%
result = grpo.train(cfg, callbacks=[LiveDashboard(RL_PANELS, title="GRPO")])

# %% [markdown]
# ## 4. Before and after

# %%
m = result.metrics
print(f"held-out accuracy {m['before']['accuracy']:.0%} → {m['after']['accuracy']:.0%} "
      f"in {m['steps']} steps, {m['train_seconds']:.0f} s of training; "
      f"mean answer length {m['before']['mean_length']:.0f} → {m['after']['mean_length']:.0f} tokens")
pd.DataFrame(result.samples)[["prompt", "answer", "before", "after", "correct_after"]].head(8)

# %%
rl_curves(result.log_path, title="GRPO run")

# %% [markdown]
# ## 5. Read the rollouts
#
# Every completion the trainer scored, with its rewards and its **advantage**: green ones were pushed up,
# red ones down. Slide through the steps: which answers win early, and what do late answers look like?

# %%
RolloutBrowser(result.output_dir)

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, near, record

record(heldout_accuracy=higher(m["after"]["accuracy"], tol=0.15),
       mean_answer_tokens=near(m["after"]["mean_length"], tol="30%"))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("05.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/05_rl_grpo_solutions.ipynb`](solutions/05_rl_grpo_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 05.1 · Advantages of one group
#
# Four completions of one prompt get rewards `[1, 0, 0, 1]`. What are their GRPO advantages (each reward
# minus the group's mean, divided by the group's standard deviation)?

# %%
answer_05_1 = ...  # a list of four numbers

# %%
check("05.1", answer_05_1)

# %% [markdown]
# ### ⭐⭐ 05.2 · A format reward
#
# Write `hash_line_reward(prompts, completions, **kwargs)`: 1.0 for a completion (a string) whose last
# line is `#### <integer>`, else 0.0, one float per completion. Try it in the playground:
# `reward_playground([hash_line_reward], "What is 40 + 14?", [...])`.

# %%
def hash_line_reward(prompts, completions, **kwargs):
    raise NotImplementedError("your code")

# %%
check("05.2", hash_line_reward)

# %% [markdown]
# ### ⭐⭐⭐ 05.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Add the `format` reward (`cfg.replace(rewards="correctness,format", reward_weights="1,0.2")`). Does
#   the policy learn the `#### n` line, and does accuracy follow?
# - Set `temperature=0.3`. What happens to the zero-variance groups, and why does that slow learning?
# - Switch `loss_type` between `grpo`, `dr_grpo` and `dapo`, and watch completion length. Dr. GRPO's paper
#   argues that per-sequence averaging rewards long wrong answers less than short ones; do you see it?
# - Write a reward that the policy can hack (say, "reply contains the answer anywhere"), try it in the
#   playground, then train with it and find the hack in the rollout browser.
