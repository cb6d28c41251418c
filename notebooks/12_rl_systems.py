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
# # 12 · RL systems: staleness, collocated vs disaggregated, partial rollouts, weight sync, memory
#
# Seen from the machine, RL post-training is mostly **inference feeding a small trainer**: for every
# gradient step the policy writes `prompts × G` completions, and writing them costs more than learning from
# them. How generation and training share the hardware decides what a run costs. This notebook runs a real
# (small) policy through the choices that systems like TRL, verl and OpenRLHF make for you:
#
# 1. **how much memory** a method needs, part by part, and whether it fits your card (the planner);
# 2. **asynchronous rollouts**: workers in their own processes generate with policy version *v* while the
#    trainer is already at *v + k*; a **staleness bound** caps *k*;
# 3. **collocated** (one pool alternates, engines asleep while training) vs **disaggregated** (both at once);
# 4. **partial rollouts**: long generations cut at a token budget and resumed under newer weights;
# 5. **weight sync**: what goes back to the workers (full weights, the adapter, or only changed tensors).

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Plan a training run's memory part by part (weights, gradients, optimizer states, activations, logits,
#    reference, rollout KV cache), say whether it fits a card, and check the plan against a measured peak.
# 2. Run asynchronous GRPO with rollout workers in their own processes under a staleness bound, and read
#    throughput, lag and busy time from a staleness sweep.
# 3. Compare collocated and disaggregated generation on their timelines.
# 4. Explain partial rollouts (one completion, several policy versions) and pick a weight-sync payload (full,
#    adapter or delta), including the bf16 trap that empties a delta.
# 5. Find each of these knobs in TRL, verl and OpenRLHF.
#
# **Requirements.** CPU: about 2½ CPU minutes (150 s) in the `cpu-smoke` preset, measured by one headless
# run on a shared 2-core machine (the nightly run has not timed it yet; the `cpu` preset takes several times
# longer). GPU memory: not measured (the planner below estimates it for your card).
#
# **In the course:** after `05` (GRPO) and `06` (PPO, RLOO); `09` helps (inference engines, log-prob
# agreement). Next: `13` (RLHF with learned rewards). The course map is in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu
MODEL = "smollm2-135m-instruct"
STALENESS = "0,1,2,4,8"  # the sweep's bounds

# %%
import pandas as pd
from IPython.display import HTML, display

from labkit.config import AsyncRLConfig
from labkit.dash.rlsys import (
    gantt,
    planner_widget,
    summary_rows,
    sweep_figure,
    sync_rows,
    utilisation,
    version_mix_rows,
)
from labkit.rlsys.loop import run, sweep
from labkit.rlsys.planner import Workload, measure_peak, plan, plan_table

cfg = AsyncRLConfig.from_preset(PRESET, model=MODEL)
bounds = [int(s) for s in STALENESS.split(",")]
cfg

# %% [markdown]
# ## 1. Will it fit? The memory planner
#
# Training memory is a sum of parts with different owners: **weights** (frozen or trained, 16-bit or 4-bit),
# **gradients** and **optimizer states** (only for what is trained: LoRA makes them tiny), **activations**
# (what autograd keeps per token for backward; checkpointing keeps one hidden state per layer and
# recomputes the rest), the **logits** (`tokens × vocab` floats: with a 150k vocabulary the largest part
# for short models), a frozen **reference** (DPO, GRPO with a KL term under full fine-tuning) and, for GRPO,
# the **KV cache** of `prompts × k` rollouts. Move the controls; the table follows.

# %%
widget = planner_widget("qwen2.5-1.5b", method="qlora", objective="grpo", seq_len=256, prompt_len=128,
                        batch=2, k=8, checkpointing=True)
display(widget)
display(HTML(widget.static_html()))

# %% [markdown]
# ### The planner against a measurement
#
# On this CPU we can measure instead of trust: `measure_peak` trains two steps in a fresh process and reads
# the kernel's high-water mark of its resident memory (after copying the weights into private memory and
# resetting the mark; glibc is told to return every large block at once, so the mark follows live tensors).
# The tests hold the plan within 25% of it for full and LoRA training of the tiny and embedded models.

# %%
work = Workload(method="lora", objective="sft", seq_len=128, batch=2, precision="bf16")
measured = measure_peak(MODEL, work)
planned = plan(MODEL, work)
ratio = planned.total / measured["peak"]
mib = {k: round(v / 2**20, 1) for k, v in planned.parts.items()}
mib |= {"planned peak": round(planned.total / 2**20, 1), "measured peak": round(measured["peak"] / 2**20, 1)}
pd.DataFrame([mib | {"ratio": round(ratio, 3)}], index=["MiB"])

# %% [markdown]
# ### QLoRA on 0.5B, 1.5B and 7B models, next to published figures
#
# Qwen2.5-shaped models, sequence 512, batch 1, gradient checkpointing, LoRA rank 16 on every linear, AdamW.
# Published figures to compare with (minimums their authors state, each with its own setup):
#
# - **Unsloth** ("Unsloth Requirements", unsloth.ai docs): QLoRA (4-bit) needs about **3.5 GB for a 3B**
#   model and **5 GB for a 7B** model; LoRA in 16-bit about 8 GB (3B) and 19 GB (7B).
# - **QLoRA** (Dettmers et al. 2023, https://arxiv.org/abs/2305.14314): a **65B** model fine-tunes on one
#   **48 GB** GPU, a 33B model on a 24 GB consumer card.
#
# Nobody publishes a 0.5B or 1.5B QLoRA figure worth comparing to: the planner's rows there are its own.

# %%
qlora = pd.DataFrame(plan_table(method="qlora", seq_len=512, batch=1, checkpointing=True))
qlora["published (Unsloth, QLoRA min.)"] = ["–", "–", "5 GB (7B)"]
qlora

# %% [markdown]
# ## 2. Asynchronous GRPO with a staleness bound
#
# `labkit.rlsys.loop.run(cfg)` starts rollout **workers in their own processes** (torch.multiprocessing),
# each with an `HFEngine` (labkit.infer) and its own copy of the policy. The trainer hands out prompt groups
# through a queue, trains GRPO (labkit.losses) on finished groups scored by labkit.rewards, and every
# `sync_every` steps sends new weights back. Every token carries the **policy version** that wrote it; a
# group's **lag** is the trainer's step minus its oldest version. The dispatcher never hands out work that
# would arrive later than `staleness` versions behind, and the trainer drops anything staler.
#
# Staleness 0 is plain synchronous GRPO. Each step of slack lets the workers run ahead, so generation and
# training overlap: more throughput, on data that is slightly off-policy. The sweep measures both.

# %%
logs = sweep(cfg, bounds)
sweep_df = pd.DataFrame(summary_rows(logs))
sweep_df

# %%
per_step = cfg.prompts_per_step * cfg.group_size
sweep_figure(logs, title=f"staleness sweep: {cfg.steps} steps × {per_step} rollouts")

# %% [markdown]
# Read the table: `tokens_per_s` is rollout tokens consumed per second of run time (evaluation excluded),
# `mean_lag` how far behind the data was on average, `busy …` the share of the run each side was working.
# On a 2-core CPU shared with other jobs the two sides compete for the same cores, so the overlap buys less
# than on separate GPUs; the shape of the timeline is the lesson. Look at `max_lag` too: when one worker is
# the bottleneck (busy most of the time) the lag stays near 1 whatever the bound, because the workers never
# get further ahead. Staleness buys overlap; more (or faster) workers buy rollouts.

# %% [markdown]
# ## 3. Collocated vs disaggregated, as timelines
#
# **Disaggregated**: generation and training run at the same time in different processes (on GPUs: on
# different cards). **Collocated**: one pool alternates; while the trainer works the engines sleep
# (`HFEngine.sleep()`: on a GPU it moves the weights off the card; vLLM's sleep mode also frees the KV cache)
# and wake up after the weight sync. Same task, same budget:

# %%
disagg = logs[min(range(len(bounds)), key=lambda i: abs(bounds[i] - 2))]
coll = run(cfg.replace(mode="collocated", staleness=1, sync="full"))
display(gantt(disagg))
gantt(coll)

# %%
pd.DataFrame([{"mode": log.config["mode"], "staleness": log.config["staleness"],
               "seconds": log.summary()["seconds"], **utilisation(log)} for log in (disagg, coll)])

# %% [markdown]
# ## 4. Partial rollouts
#
# A long completion holds a worker (and on a GPU a KV-cache slot) while the trainer waits for it. With
# `partial_tokens` a worker stops each generation after that many tokens and returns it **parked**; it
# resumes after the next weight update, so one completion can be written by several policy versions. The
# trainer still applies the staleness bound, to the oldest token. The version mix of each consumed group:

# %%
partial = run(cfg.replace(partial_tokens=max(cfg.max_new_tokens // 3, 1), staleness=2, sync="delta"))
display(gantt(partial, title="partial rollouts: hover a bar for 'partial=True'"))
pd.DataFrame(version_mix_rows(partial))

# %% [markdown]
# ## 5. Weight sync: what travels back to the workers
#
# After an update the workers need the new policy. Under LoRA the **adapter** is a few MB; **full** weights
# (the adapter merged in) are the whole model; a **delta** sends only tensors that changed since the last
# sync: under LoRA that is the adapted linears, under full fine-tuning nearly everything. One trap: merged
# into **bf16** weights, an early LoRA update is often below bf16's resolution (≈0.4% of a weight), so the
# merged tensors do not change at all and the delta is empty: the workers keep sampling the old policy.
# Sending the adapter itself (fp32, added at run time) avoids that, which is why it is the default here.

# %%
pd.DataFrame(sync_rows([logs[-1], coll, partial]))

# %% [markdown]
# ## 6. Where each knob lives at scale
#
# Each knob of this lab, and where to find it when one machine is no longer enough (TRL 1.16 names; verl
# and OpenRLHF move fast, so read their docs for the release you install):
#
# - **rollout workers in their own processes** — TRL: `use_vllm=True, vllm_mode="server"` with
#   `trl vllm-serve`; verl: rollout workers (vLLM or SGLang) placed by its resource pools; OpenRLHF: vLLM
#   engines as Ray actors.
# - **collocated vs disaggregated** — TRL: `vllm_mode="colocate"` vs `"server"`; verl: the hybrid engine
#   (actor and rollout share GPUs) vs separate pools; OpenRLHF: colocating all models vs separate GPU groups.
# - **engine sleep / wake** — TRL: `vllm_enable_sleep_mode=True` (vLLM's sleep mode frees weights and KV
#   cache while the trainer runs); verl and OpenRLHF offer the same vLLM sleep/offload in colocated setups.
# - **staleness bound** — TRL: `trl.experimental.async_grpo` (`AsyncGRPOConfig(max_staleness=…,
#   max_inflight_tasks=…)`); verl: its one-step-off-policy and fully asynchronous recipes; OpenRLHF: its
#   asynchronous training mode.
# - **truncated importance sampling** — TRL: `vllm_importance_sampling_correction=True` with
#   `vllm_importance_sampling_cap`; verl and OpenRLHF: their rollout-correction (TIS) options.
# - **partial rollouts** — verl's and OpenRLHF's asynchronous modes; TRL's async GRPO bounds work in flight
#   by tokens (`token_budget`).
# - **weight sync** — TRL: NCCL broadcast from the trainer to the vLLM server (a LoRA adapter is merged
#   first); verl: resharding FSDP/Megatron weights into the engine; OpenRLHF: NCCL or Ray broadcast to the
#   vLLM actors. Adapter-only and delta syncs are what you do when the link, not the GPU, is the bottleneck.
#
# Flag names move between releases; check the version you install. The ideas stay put.

# %%
# Nightly metrics (labkit.runs.nightly): the staleness bound always holds, and the runs finish.
from labkit.runs.nightly import higher, near, record

held = all(row["max_lag"] <= b for row, b in zip(summary_rows(logs), bounds))
record(staleness_bound_holds=higher(float(held), tol=0),
       planner_ratio=near(round(ratio, 3), tol=0.25),
       steps_done=higher(float(sum(len(log.steps) for log in logs)), tol=0))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("12.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/12_rl_systems_solutions.ipynb`](solutions/12_rl_systems_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 12.1 · What full fine-tuning holds before the first activation
#
# Full fine-tuning of `qwen2.5-1.5b` with AdamW in mixed precision keeps fp32 master weights, fp32 gradients
# and AdamW's two fp32 moments for every parameter. How many GiB do these three parts take together? (The
# parameter count is `plan("qwen2.5-1.5b").params`.)

# %%
answer_12_1 = ...  # GiB

# %%
check("12.1", answer_12_1)

# %% [markdown]
# ### ⭐ 12.2 · The lag of a partial rollout
#
# A group was parked and resumed: 40 of its tokens were written by policy version 3 and 24 by version 5. It
# reaches the trainer at step 6, with `staleness=2`. What is the group's lag (and is it trained on)?

# %%
answer_12_2 = ...  # a number of versions

# %%
check("12.2", answer_12_2)

# %% [markdown]
# ### ⭐⭐ 12.3 · Truncated importance sampling
#
# Write `tis_weights(logp, behaviour, cap)`: the weight `importance_sampling=True` puts on each token's
# advantage, from the trainer's log-probs `logp` and the sampler's `behaviour` log-probs (`[B, T]` tensors),
# capped at `cap` (`is_cap`). `labkit.rlsys.loop.policy_loss` has the answer: try first.

# %%
def tis_weights(logp, behaviour, cap):
    raise NotImplementedError("your code")

# %%
check("12.3", tis_weights)

# %% [markdown]
# ### ⭐⭐ 12.4 · The bf16 delta trap
#
# Write `changed_share(weight, update)`: merge an fp32 `update` into a bf16 `weight` tensor as a delta sync
# of merged weights would (the sum rounded back to bf16), and return the share of entries whose bf16 value
# changed: the share a delta sync would send.

# %%
def changed_share(weight, update):
    raise NotImplementedError("your code")

# %%
check("12.4", changed_share)

# %% [markdown]
# ### ⭐⭐⭐ 12.5 · Sync less often, correct for it
#
# Set `sync_every=2` (the staleness must then be ≥ 1): how do throughput and the lag distribution move? Then
# turn on `importance_sampling=True` at staleness 8: what is the mean IS weight per step, and does it change
# the reward curve?

# %% [markdown]
# ### ⭐⭐⭐ 12.6 · Two workers
#
# Run two workers (`workers=2`) disaggregated: on 2 CPU cores, does it help? Why would it on 2 GPUs?

# %% [markdown]
# ### ⭐⭐⭐ 12.7 · The longest completion that fits
#
# In the planner, find the longest GRPO completion a 1.5B model fits in 12 GB with QLoRA at k = 8; then
# switch checkpointing off. Which part grows fastest with the completion length?
