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
# # 10 · Orchestration: manifests, lineage, gates, promotion, rollback, the nightly report
#
# Training a model is one run. Shipping one is a pipeline of runs that must be **reproducible** (what
# exactly produced this adapter?), **traceable** (which data is in the model we serve?), **guarded** (a
# worse model must not replace a better one) and **reversible** (one command back to yesterday's model).
# labkit gives every stage the same control plane:
#
# - a **manifest** written before a run starts and never changed: config, base model and data hashes,
#   seeds, library versions, git commit, machine, budget ceilings;
# - a **status** at the end: `done`, `failed` (with the error), `budget_exceeded` (with a checkpoint),
#   `interrupted`; `labkit resume RUN` continues from the last checkpoint with the same manifest;
# - **lineage** in SQLite: every run, what it read, what it wrote;
# - a **registry** whose channels (`candidate`, `production`) move only when an eval card passes a gate;
# - a **nightly** job that runs every notebook and compares its numbers with the last good night.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Read a run's manifest, status and budget ceilings, and resume an interrupted run.
# 2. Chain SFT → DPO and trace the chain's lineage in SQLite.
# 3. Promote a model through gated registry channels, watch a worse one get blocked, and roll back.
# 4. Run the nightly job on a notebook and read its report.
#
# **Requirements.** CPU: not measured yet (no nightly run has included it) in the `cpu-smoke` preset, as
# measured by the nightly run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset
# takes several times longer). GPU memory: not measured.
#
# **In the course:** after `01`, `04` and `08` (it chains SFT and DPO and gates their eval cards). Next:
# `11` (kernels). The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
MODEL = "smollm2-135m-instruct"
OUT = "runs/10_orchestration"

# %%
import json
import pathlib

import pandas as pd

from labkit.config import EvalConfig, PreferenceConfig, SFTConfig
from labkit.dash.lineage import lineage_figure
from labkit.eval.card import evaluate
from labkit.infer.speculative import truncated_draft
from labkit.models import load_model
from labkit.quiet import quiet_progress
from labkit.runs.chain import merge_run
from labkit.runs.manifest import RunDir
from labkit.runs.registry import Registry
from labkit.runs.tracking import default_registry
from labkit.stages import preference, sft

out = pathlib.Path(OUT)
DB = default_registry(out / "sft")  # lineage and registry, one SQLite file: runs/registry.sqlite
print(DB)

# %% [markdown]
# ## 1. A run and its manifest
#
# The SFT stage writes `manifest.json` and a `running` status before it loads a model, then the metrics,
# checkpoints, the adapter and a final status. The manifest is the run's identity: run the same cell
# again and labkit sees a finished run with the same manifest and does nothing.

# %%
sft_cfg = SFTConfig.from_preset(PRESET, model=MODEL, output_dir=str(out / "sft"))
first = sft.train(sft_cfg)
run = RunDir(first.output_dir)
manifest = run.manifest().to_dict()
pd.Series({k: json.dumps(manifest[k], default=str)[:100] for k in manifest})

# %%
again = sft.train(sft_cfg)  # same manifest, already done: nothing is trained
print("status:", run.status()["status"])
pd.Series(run.status().get("telemetry", {})).astype(str)

# %% [markdown]
# ## 2. Budgets
#
# Every stage takes ceilings: `max_seconds`, `max_tokens` (trained plus generated) and its step count.
# A run that hits one stops cleanly, saves a checkpoint, and ends `budget_exceeded`, not `failed`:
# `labkit resume` continues it from there.

# %%
capped = sft.train(sft_cfg.replace(output_dir=str(out / "sft_capped"), max_tokens=300, save_every=1))
capped_dir = RunDir(capped.output_dir)
print(capped_dir.status()["status"], "after", capped.metrics["steps"], "steps;",
      "checkpoints:", sorted(p.name for p in capped_dir.checkpoints_dir.glob("checkpoint-*")))

# %% [markdown]
# ## 3. A chain: SFT → DPO
#
# The next stage starts from the previous one's model: `merge_run` folds the SFT adapter into the base and
# records the merge in lineage, so the chain can be walked back from any link.

# %%
sft_model = merge_run(first.output_dir)
dpo = preference.train(PreferenceConfig.from_preset(PRESET, model=str(sft_model), method="dpo",
                                                    output_dir=str(out / "dpo")))
dpo_model = merge_run(dpo.output_dir)
print(sft_model, "→", dpo_model)

# %% [markdown]
# ## 4. Lineage
#
# Where did the DPO model come from? Every run recorded what it read and wrote, so the answer is a query:
# the DPO run read the merged SFT model and the preference pairs; the merge read the base and the SFT
# adapter; the SFT run read the base model (hashed) and the SFT data. `labkit lineage` prints the same tree.

# %%
with Registry(DB) as reg:
    graph = reg.lineage(str(dpo_model))
print(graph.to_text())
lineage_figure(graph, title="lineage of the DPO model")

# %% [markdown]
# ## 5. Cards for the candidates, and a worse one on purpose
#
# Each model gets an eval card. To see a gate block something, we also make a worse candidate on purpose:
# the DPO model **pruned** to half its decoder layers, a tempting way to serve faster. The cards score
# MMLU in cloze form (each option's text scored by the model), where these models know something;
# choosing a letter is at chance for a 135M model, so no gate could see a regression there.

# %%
full, tok = load_model(str(dpo_model), dtype="float32")
pruned = truncated_draft(full, full.config.num_hidden_layers // 2)
with quiet_progress():
    pruned.save_pretrained(out / "pruned")
    tok.save_pretrained(out / "pruned")
card_cfg = EvalConfig.from_preset(PRESET, model=MODEL, tasks="mmlu", mmlu_modes="cloze", source="fixture",
                                  limit=0, output_dir=str(out / "cards"))
models = {"sft": sft_model, "dpo": dpo_model, "pruned": out / "pruned"}
cards, heads = {}, []
for name, path in models.items():
    card = evaluate(cfg=card_cfg.replace(model=str(path)), name=name, progress=False)
    cards[name] = card.save(out / "cards" / f"{name}.json")
    heads.append({"model": name, **card.headline()})
pd.DataFrame(heads)

# %% [markdown]
# ## 6. Register, promote, block, roll back
#
# `candidate` takes anything registered; `production` takes a version only if its card passes the default
# gate against the current holder's card (at most 5 points worse on each headline metric, judged with a
# paired bootstrap). The pointer moves inside one SQLite transaction: a crash at any point leaves the old
# one. Rollback points production back at the version it replaced.

# %%
with Registry(DB) as reg:
    versions = {n: reg.register(p, "policy", kind="model", card=cards[n]) for n, p in models.items()}
    print(reg.promote(versions["sft"], "production"))
    print(reg.promote(versions["dpo"], "production"))
    blocked = reg.promote(versions["pruned"], "production")
    print(blocked)
    print("production is", reg.holder("production"))

# %%
with Registry(DB) as reg:
    back_to = reg.rollback("production")
    print("rolled back: production is", reg.holder("production"))
    history = pd.DataFrame(reg.history("production"))[["at", "action", "label"]]
history

# %% [markdown]
# ## 7. The nightly report
#
# `labkit nightly` executes every notebook headless in a preset, reads the numbers each one records in
# its last cell (like the one below), compares them with the last good night within each metric's
# tolerance, and writes `report.json` and `report.html`; it exits non-zero on a failed notebook or a
# regressed metric. Here, one night of notebook 00 only; `labkit nightly --canary` runs the same
# notebooks against the newest TRL, transformers, PEFT and datasets in a throwaway environment.

# %%
from labkit.runs.nightly import run_nightly, summary_lines
from labkit.runs.notebooks import select_notebooks

night_dir, night = run_nightly(select_notebooks("00"), out=out / "nightly", preset="cpu-smoke")
print("\n".join(summary_lines(night)))
print("report:", night_dir / "report.html")

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night.
from labkit.runs.nightly import higher, record

record(worse_model_blocked=higher(float(not blocked.promoted), tol=0),
       nightly_inner_ok=higher(float(night["summary"]["exit_code"] == 0), tol=0))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("10.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/10_orchestration_solutions.ipynb`](solutions/10_orchestration_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 10.1 · What does a blocked promotion leave?
#
# The production gate blocked the worse model in section 6. What does the production channel serve now?
# (a) the blocked candidate (b) the model promoted before it (c) nothing until a candidate passes

# %%
answer_10_1 = ...  # "a", "b" or "c"

# %%
check("10.1", answer_10_1)

# %% [markdown]
# ### ⭐⭐ 10.2 · Declare a nightly metric
#
# A notebook's probe loss is 2.31 tonight; it must not rise more than 10 % above the last good night.
# Write the metric its last cell would record, with `higher`, `lower` or `near` from
# `labkit.runs.nightly`.

# %%
from labkit.runs.nightly import higher, lower, near  # noqa: F401

answer_10_2 = ...  # e.g. higher(0.5, tol=0.1)

# %%
check("10.2", answer_10_2)

# %% [markdown]
# ### ⭐⭐⭐ 10.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Change one config field of the SFT cell and run it again: what happens to the old run folder, and why
#   does labkit not overwrite it?
# - Kill a training run halfway (interrupt the kernel) and continue it with
#   `labkit.stages.resume.resume(folder)`: compare its final loss with an uninterrupted run.
# - Write a stricter production gate (`Registry(..., channels={"production": ChannelGate(my_gate)})`):
#   would the DPO model still have been promoted?
# - Make a notebook record a metric that regresses (edit its record cell) and run `labkit nightly` twice.
