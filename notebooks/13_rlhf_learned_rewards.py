# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13 · RLHF with learned rewards, AI feedback and process rewards
#
# Notebooks 05 and 06 trained against rewards written in code. The classic RLHF loop trains a **reward
# model** on preferences and then optimises a policy against it. A learned reward is only a proxy for what
# people want, and an optimiser finds its blind spots: past some distance from where the reward model was
# trained, the proxy keeps rising while the true objective falls (**over-optimisation**, Gao et al. 2022).
# On the arithmetic prompts the true (gold) reward is checkable, so we can watch both at once.
#
# Then two ways to make the labels and the reward cheaper or finer: an LLM **judge** labels preference pairs
# instead of people (RLAIF), and a **process reward** pays for each checked step of a worked solution, not
# only for the final number.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Use a trained reward model as a GRPO/PPO reward, alone or mixed with a verifiable reward.
# 2. Plot proxy reward and gold accuracy against KL from the reference, for a KL sweep and for best-of-n.
# 3. Label preference pairs with a position-swapped LLM judge and measure its agreement (accuracy, Cohen's κ).
# 4. Add a step-level reward and measure how often right answers come from wrong steps.
#
# **Requirements.** CPU: about 6 CPU minutes (362 s) in the `cpu-smoke` preset, measured by one headless
# run on a shared 2-core machine (the nightly run has not timed it yet; the `cpu` preset takes much longer).
# GPU memory: not measured.
#
# **In the course:** after `03` (reward models), `04` (DPO) and `05` (GRPO). Next: `08` (evaluation, if not
# done yet) and `12` (RL systems, to scale the loop). The multi-process launch of every stage is in the
# README, "From one device to many". The course map is in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
MODEL = "smollm2-135m-instruct"
OUT = "runs/13_rlhf"
BETAS = (0.0, 0.1)      # KL coefficients of the over-optimisation sweep
JUDGE_PAIRS = 32        # preference pairs the LLM judge labels

# %%
import pandas as pd

from labkit.config import PreferenceConfig, RewardConfig, RLConfig
from labkit.dash.rlhf import overoptimisation_figure
from labkit.data.samples import load_sample
from labkit.eval.rlaif import judge_label_pairs, write_judged_pairs
from labkit.metrics.process import process_metrics
from labkit.reasoning.process import process_reward, step_verdicts
from labkit.rewards import correctness, learned_reward, playground
from labkit.stages import grpo, preference, reward
from labkit.stages.overoptimisation import sweep

rl_cfg = RLConfig.from_preset(PRESET, model=MODEL, preflight=False)

# %% [markdown]
# ## 1. A reward model becomes an RL reward
#
# The reward stage (notebook 03) trains the language model with a scalar head on preference pairs.
# `learned_reward(folder)` loads what it saved, with **its own tokenizer and chat template**, and scores
# `(prompt, completion)` pairs in batches with no gradient, in TRL's reward-function protocol. It checks
# the folder, the template and the head's output shape when it is built, before any policy loads.

# %%
rm_run = reward.train(RewardConfig.from_preset(PRESET, model=MODEL, output_dir=f"{OUT}/reward"))
rm = learned_reward(rm_run.output_dir)
print("held-out pair accuracy of the reward model:", round(rm_run.metrics["after"]["accuracy"], 3))
pd.DataFrame(playground([rm, correctness], "What is 47 + 38?", [
    "40 + 30 = 70\n7 + 8 = 15\n70 + 15 = 85\n#### 85", "#### 85", "#### 58",
    "Great question! Let me think very carefully about it. The answer is 85.\n#### 85"], answer="85"))

# %% [markdown]
# Does the reward model pay for what `correctness` pays for? Where the two disagree in the table above is
# where an optimiser will push. Mixing them is one line: `grpo.train(cfg.replace(reward_weights="1,0.5"),
# reward_funcs=[correctness, rm])`; PPO takes `reward_funcs` the same way.
#
# ## 2. Over-optimisation: proxy against gold as the policy moves away
#
# `sweep` runs GRPO against the learned reward once per KL coefficient β, and every few steps samples the
# policy on held-out prompts: the proxy (reward model), the gold accuracy (the answer checker) and the KL
# from the reference on the same samples. Best-of-n from the starting model spends KL without training:
# its KL is log n − (n − 1)/n.

# %%
over = sweep(rl_cfg.replace(output_dir=f"{OUT}/overopt", reward_weights=""), rm, betas=BETAS,
             eval_every=max(rl_cfg.max_steps // 5, 1), eval_prompts=min(rl_cfg.n_eval, 16), samples=1,
             best_of=(1, 2, 4))
overoptimisation_figure(over)

# %%
pd.DataFrame(over["curves"]).round(3)

# %% [markdown]
# Read the curves: the proxy should rise with √KL for every β (that is what GRPO optimises). Gold accuracy
# is the question. If it rises and then falls while the proxy keeps rising, the policy is exploiting the
# reward model; a larger β keeps it closer to the reference, which is both the brake and the cure. On a
# 135M model and a short run the policy may not travel far enough to see the fall at all. In a longer run
# (16 steps at learning rate 1e-3, `tests/stages/test_overoptimisation_slow.py`) the β = 0 policy collapsed
# to replies like "SmolLM" or nothing at all: the reward model, trained only on arithmetic pairs, scored
# them above real answers, so the proxy rose from −2.5 to −1.1 while gold accuracy fell from 8% to 0.
#
# ## 3. AI feedback: an LLM judge labels the pairs
#
# The judge sees "question, answer A, answer B" and names the better one, twice with the order swapped. A
# verdict that flips with the order is a tie, not a label (`all`, `decided`). A small judge often says "A"
# whatever it reads, so the table also shows the **position-averaged** label (`mean`): P(first wins)
# averaged over both orders, which cancels a constant lean towards A; that is the label written for DPO.
# Which reply is shown first is decided by a seeded coin, so a judge that always says "A" scores κ ≈ 0
# rather than looking perfect.

# %%
train_pairs = load_sample("preference_pairs", split="train")[:JUDGE_PAIRS]
judged = judge_label_pairs(train_pairs, judge=MODEL)
a = judged["agreement"]
pd.DataFrame([{"labels": k, **{m: a[k][m] for m in ("n", "accuracy", "kappa", "expected")}}
              for k in ("all", "decided", "mean")]).assign(tie_rate=a["tie_rate"],
                                                   position_a_rate=a["position_a_rate"]).round(3)

# %% [markdown]
# Now DPO on the judge's labels against DPO on the gold labels, judged on the same gold held-out pairs.

# %%
path = write_judged_pairs(judged["rows"], f"{OUT}/judge_pairs.jsonl",
                          gold_rows=load_sample("preference_pairs", split="heldout"))
gold_path = write_judged_pairs([dict(r, judge_chosen="gold") for r in judged["rows"]],
                               f"{OUT}/gold_pairs.jsonl",
                               gold_rows=load_sample("preference_pairs", split="heldout"))
dpo = {name: preference.train(PreferenceConfig.from_preset(PRESET, model=MODEL, data=str(p),
                                                           output_dir=f"{OUT}/dpo_{name}"))
       for name, p in (("judge", path), ("gold", gold_path))}
pd.DataFrame({name: {"pairs trained": r.metrics["pairs"],
                     "gold accuracy before": r.metrics["before"].get("preference_accuracy"),
                     "gold accuracy after": r.metrics["after"].get("preference_accuracy")}
              for name, r in dpo.items()}).T

# %% [markdown]
# ## 4. Process rewards: credit for the steps, not only the answer
#
# `process_reward()` checks every `x op y = z` in a reply by arithmetic (`labkit.reasoning`) and pays the
# share that hold. A reply can reach the right number through a wrong step; the outcome reward cannot tell.

# %%
reply = "40 + 30 = 70\n7 + 8 = 16\n70 + 15 = 85\n#### 85"
print(step_verdicts(reply), process_reward()(["q"], [reply]), correctness(["q"], [reply], answer=["85"]))
runs = {name: grpo.train(rl_cfg.replace(output_dir=f"{OUT}/process_{name}", reward_weights=w),
                         reward_funcs=funcs)
        for name, funcs, w in (("outcome", [correctness], ""),
                               ("outcome+process", [correctness, process_reward()], "1,0.5"))}

# %%
table = {name: process_metrics([s["after"] for s in r.samples], [s["answer"] for s in r.samples])
         for name, r in runs.items()}
pd.DataFrame(table).T.round(3)

# %% [markdown]
# `right_via_wrong_steps` is the share of right answers whose working holds a wrong equation: what an
# outcome-only reward pays for and a process reward does not.

# %%
# The numbers the nightly run compares with the last good night.
from labkit.runs.nightly import higher, record

record(rm_pair_accuracy=higher(rm_run.metrics["after"]["accuracy"], tol=0.15),
       judge_kappa=higher(a["mean"]["kappa"], tol=0.3),
       overopt_points=higher(float(len(over["curves"])), tol=0))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("13.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/13_rlhf_learned_rewards_solutions.ipynb`](solutions/13_rlhf_learned_rewards_solutions.ipynb):
# try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 13.1 · How far best-of-16 moves
#
# Best-of-n draws n replies from the starting model and keeps the one the reward model scores highest. How
# much KL (in nats) from the starting model does best-of-16 spend?

# %%
answer_13_1 = ...  # nats

# %%
check("13.1", answer_13_1)

# %% [markdown]
# ### ⭐ 13.2 · A judge's κ
#
# On 100 pairs a judge agrees with the gold labels 70 times. It says "first" on 80 pairs; the gold winner is
# shown first in 60. (So: judge first and gold first 55, judge first and gold second 25, judge second and
# gold first 5, both second 15.) What is Cohen's κ?

# %%
answer_13_2 = ...  # a number, 1 = perfect, 0 = chance

# %%
check("13.2", answer_13_2)

# %% [markdown]
# ### ⭐⭐ 13.3 · The position-averaged label
#
# The judge sees each pair twice. Write `p_first_wins(p_a_first_as_a, p_a_first_as_b)`: from P(judge names
# "A") with the first reply shown as A, and P(judge names "A") with the first reply shown as B, the
# probability that the first reply wins, averaged over both orders (the number behind the table's `mean`
# labels).

# %%
def p_first_wins(p_a_first_as_a, p_a_first_as_b):
    raise NotImplementedError("your code")

# %%
check("13.3", p_first_wins)

# %% [markdown]
# ### ⭐⭐ 13.4 · The `prefix` process reward
#
# Write `prefix_reward(steps)`: from a reply's step verdicts in order (a list of booleans, as
# `[v["correct"] for v in step_verdicts(reply)]` gives), the share of its steps that come before the first
# wrong one; 0.0 for a reply with no steps. `process_reward("prefix")` folds the verdicts this way.

# %%
def prefix_reward(steps):
    raise NotImplementedError("your code")

# %%
check("13.4", prefix_reward)

# %% [markdown]
# ### ⭐⭐⭐ 13.5 · Find the fall
#
# Run the over-optimisation sweep longer (more `max_steps`) with `BETAS = (0.0, 0.01, 0.1)`. Does gold
# accuracy fall while the proxy keeps rising, and at what √KL? Does best-of-n reach the same proxy reward for
# less KL?

# %% [markdown]
# ### ⭐⭐⭐ 13.6 · A better judge, or a stricter label
#
# Label the pairs with `label_by="verdict"` (ties dropped) instead of the position-averaged label, then with a
# larger judge if you have one. How do κ, the tie rate and the DPO result move?

# %% [markdown]
# ### ⭐⭐⭐ 13.7 · Which process reward?
#
# Train with `process_reward("all")` and `process_reward("prefix")` beside `fraction`, and with the weights
# `"1,1"` instead of `"1,0.5"`. Which one lowers `right_via_wrong_steps` most without lowering accuracy?
