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
# # 06 · PPO vs GRPO vs RLOO: same task, same budget, same seed
#
# Three ways to turn "this answer scored r" into a gradient:
#
# - **PPO** learns a **value network** V(state) and uses GAE to credit each token: A_t = Σ (γλ)^k δ_{t+k}
#   with δ_t = r_t + γV_{t+1} − V_t. The KL to the reference is a per-token penalty inside the reward, and
#   the update is clipped so one batch cannot move the policy far. labkit's PPO is written out by hand in
#   `labkit/stages/ppo.py` (TRL no longer ships one): read it top to bottom.
# - **GRPO** drops the value network: sample G answers per prompt and use (r − group mean) / group std.
# - **RLOO** is REINFORCE with each answer's baseline taken from the *other* G − 1 answers: unbiased, and
#   not divided by the std.
#
# All three run here on the same prompts, rewards, step budget, group size and seed, so the differences
# you see come from the update rule.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Compute PPO's GAE, GRPO's group-normalised and RLOO's leave-one-out advantages on one group.
# 2. Train PPO, GRPO and RLOO on the same task, budget and seed.
# 3. Compare accuracy against wall-clock time, and what each method pays for it (a critic, more samples).
#
# **Requirements.** CPU: about 25 CPU minutes (1513 s) in the `cpu-smoke` preset, as measured by the
# nightly run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset takes several
# times longer). GPU memory: not measured.
#
# **In the course:** after `05`. Next: `07` (reasoning). The course map and a 5-session syllabus are in
# [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
MODEL = "smollm2-135m-instruct"
OUT = "runs/06_rl_compare"

# %%
import inspect

import pandas as pd
from IPython.display import Markdown, display

from labkit.config import RLConfig
from labkit.dash import RL_PANELS, LiveDashboard
from labkit.dash.rl import accuracy_vs_time, compare_rl
from labkit.losses import advantages
from labkit.stages import grpo, ppo, rloo

base = RLConfig.from_preset(PRESET, model=MODEL)
base = base.replace(eval_every=max(base.max_steps // 3, 1))
STAGES = {"grpo": grpo, "rloo": rloo, "ppo": ppo}

# %% [markdown]
# ## 1. Three advantage estimators on one group
#
# Four answers to one prompt, two right and two wrong. GRPO and RLOO score them from the group alone;
# PPO needs a value estimate per token (here a made-up one that expects 0.4), which it must learn.

# %%
import torch

rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
table = {"reward": rewards, "GRPO": advantages.group_advantages(rewards, 4),
         "Dr. GRPO": advantages.group_advantages(rewards, 4, scale="none"),
         "RLOO": advantages.rloo_advantages(rewards, 4)}
pd.DataFrame({k: v.tolist() for k, v in table.items()}).round(3)

# %%
values = torch.full((1, 3), 0.4)  # one 3-token answer, reward 1 on its last token
adv, returns = advantages.gae(torch.tensor([[0.0, 0.0, 1.0]]), values, torch.ones(1, 3), gamma=1.0, lam=0.95)
print("PPO's GAE advantages per token:", adv.tolist(), " returns:", returns.tolist())

# %%
display(Markdown(f"```python\n{inspect.getsource(advantages.gae)}\n```"))

# %% [markdown]
# ## 2. Train all three
#
# Each run gets its own dashboard. Watch PPO's KL and value loss, and compare how fast each reward curve
# leaves the floor.

# %%
results = {}
for name, stage in STAGES.items():
    cfg = base.replace(output_dir=f"{OUT}/{name}")
    results[name] = stage.train(cfg, callbacks=[LiveDashboard(RL_PANELS, title=name.upper())])

# %% [markdown]
# ## 3. Results

# %%
rows = [{"method": k, "accuracy before": r.metrics["before"]["accuracy"],
         "accuracy after": r.metrics["after"]["accuracy"], "train seconds": r.metrics["train_seconds"],
         "steps": r.metrics["steps"]} for k, r in results.items()]
pd.DataFrame(rows).set_index("method").round(3)

# %%
compare_rl({k: r.metrics for k, r in results.items()})

# %%
accuracy_vs_time([{"method": k, **point} for k, r in results.items() for point in r.metrics["curve"]])

# %% [markdown]
# ## What to look for
#
# - PPO pays for a value head and several passes per batch; its value estimate starts wrong, so its early
#   advantages are noisy. GRPO and RLOO spend that compute on more samples instead.
# - GRPO divides by the group's std: a group with one right answer in eight gives that answer a large push.
#   RLOO does not, so its updates are gentler on rare successes.
# - One seed is one draw. Before you believe a ranking, rerun with `seed=1` and `seed=2`.

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, record

record(**{f"{name}_accuracy": higher(r.metrics["after"]["accuracy"], tol=0.15)
          for name, r in results.items()})

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("06.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/06_ppo_vs_grpo_vs_rloo_solutions.ipynb`](solutions/06_ppo_vs_grpo_vs_rloo_solutions.ipynb):
# try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 06.1 · Who needs a critic?
#
# Which of the three trains a value model (a critic)? (a) PPO (b) GRPO (c) RLOO

# %%
answer_06_1 = ...  # "a", "b" or "c"

# %%
check("06.1", answer_06_1)

# %% [markdown]
# ### ⭐⭐ 06.2 · RLOO by hand
#
# Write `my_rloo(rewards, group_size)`: the RLOO advantages of a flat list of rewards whose groups are
# consecutive, as a list. Compare with `advantages.rloo_advantages`.

# %%
def my_rloo(rewards, group_size):
    raise NotImplementedError("your code")

# %%
check("06.2", my_rloo)

# %% [markdown]
# ### ⭐⭐⭐ 06.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Give PPO an adaptive KL controller (`kl_target=0.05`) and watch `kl_coef` move.
# - Set `num_generations=2`. GRPO's std and RLOO's baseline both get noisy; which degrades more?
# - Double PPO's `ppo_epochs`. More reuse of each batch: faster or unstable? Check the clip fraction.
