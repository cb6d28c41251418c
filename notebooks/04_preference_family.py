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
# # 04 · The preference-optimisation family: DPO, IPO, hinge, robust DPO, SimPO, ORPO, KTO
#
# DPO showed that the reward model and the RL loop can be folded into one classification loss on
# preference pairs: push up log π(chosen)/π_ref(chosen) against log π(rejected)/π_ref(rejected). Its
# variants differ in **what they push on** and **when they stop pushing**. This lab first makes those
# differences visible in the losses themselves, then trains every method on the same pairs with the same
# step budget and compares them on held-out pairs.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Read DPO, IPO, hinge, robust DPO, SimPO, ORPO and KTO as functions of one log-ratio margin, and move
#    β in the widget.
# 2. Train all seven through one interface on the same data, budget and seed.
# 3. Compare them by held-out preference accuracy, reward margins and KL to the reference model.
# 4. Say which methods need a reference model or paired data, and what that costs.
#
# **Requirements.** CPU: about 15 CPU minutes (921 s) in the `cpu-smoke` preset, as measured by the
# nightly run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset takes several
# times longer). GPU memory: not measured.
#
# **In the course:** after `01`; `03` first helps (the Bradley–Terry model behind DPO). Next: `05` (RL
# with verifiable rewards). The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
MODEL = "smollm2-135m-instruct"
KINDS = "slip,guess"  # the correct-vs-wrong pairs; add "padded" for concise-vs-padded too
OUT = "runs/04_preference"

# %%
import inspect

import pandas as pd
from IPython.display import Markdown, display

from labkit.config import PreferenceConfig
from labkit.dash import PREFERENCE_PANELS, LiveDashboard
from labkit.dash.preference import compare_methods, results_table
from labkit.dash.preference_math import PreferenceMathWidget
from labkit.losses import preference as losses
from labkit.stages.preference import METHODS, train

base = PreferenceConfig.from_preset(PRESET, model=MODEL, kinds=KINDS)
base = base.replace(eval_every=base.max_steps // 4)  # held-out probes: start, every quarter, end

# %% [markdown]
# ## 1. The losses as functions of one number
#
# For DPO-style losses everything depends on the **log-ratio gap**
# Δ = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]. Move β and Δ and watch each loss and its
# **gradient weight** −dL/dΔ (how hard one more step pushes the pair apart). The curves come from calling
# `labkit.losses.preference` itself, differentiated with autograd.
#
# - **DPO**: weight β·σ(−βΔ) fades but never reaches zero, so it keeps pushing on pairs it already ranks
#   right.
# - **hinge**: stops dead once βΔ ≥ 1. **IPO**: pulls Δ to 1/(2β) and pushes *back* beyond it.
# - **SimPO**: no reference; Δ is the gap in per-token log-probs, shifted by a margin γ.
# - **cDPO / robust DPO**: assume a share ε of labels is flipped; cDPO's weight turns negative at large Δ.

# %%
math_widget = PreferenceMathWidget(beta=0.1, gap=5.0)
math_widget

# %% [markdown]
# Every loss is a short pure function with its paper, equation and shapes in the docstring, tested against
# TRL's implementation on identical inputs (`tests/losses/`). DPO, for example:

# %%
display(Markdown(f"```python\n{inspect.getsource(losses.dpo_loss)}\n```"))

# %% [markdown]
# ## 2. One interface, seven trainers
#
# `labkit.stages.preference.train(cfg)` runs the method's TRL trainer with a LoRA adapter. The reference
# model costs nothing extra: it is the same network with the adapter switched off. The data are the
# project's correct-vs-wrong pairs (`slip` and `guess`, see notebook 03); KTO gets them split into unpaired
# good and bad examples.

# %%
pd.DataFrame(METHODS).T

# %% [markdown]
# ## 3. Train every method on the same data and budget
#
# Each run gets its own live dashboard: TRL's implicit rewards for chosen and rejected replies, their
# margin, training accuracy, and, as markers every few steps, **held-out preference accuracy** (does the
# policy give the chosen reply the higher log-probability?) and **KL to the reference**, estimated on replies
# the policy samples itself.

# %%
results = {}
for method in METHODS:
    cfg = base.replace(method=method, output_dir=f"{OUT}/{method}")
    results[method] = train(cfg, callbacks=[LiveDashboard(PREFERENCE_PANELS, title=method)])

# %% [markdown]
# ## 4. Results
#
# `accuracy` ranks by summed log-prob, the quantity DPO-style methods move; `per-token acc.` by the average
# log-prob, what SimPO, IPO and ORPO move. `implicit-reward acc.` is DPO's own yardstick: is
# log π/π_ref higher for the chosen reply? Per-kind columns show which kind of mistake each method learnt
# to avoid.

# %%
pd.DataFrame(results_table(results)).set_index("method").round(3)

# %%
compare_methods(results)

# %% [markdown]
# ## 5. What just happened
#
# - The `guess` pairs are learnt by every method within a few steps: "wrong answers come without working"
#   is an easy cue. `slip` pairs move much less, because telling 49 from 50 needs the arithmetic itself.
# - Methods with a reference (DPO, IPO, hinge, robust, KTO) report KL; the reference-free ones (SimPO,
#   ORPO) can drift further for the same accuracy. ORPO also trains on the chosen replies with an SFT loss.
# - At equal steps the methods differ less than their papers suggest: β and the learning rate matter as
#   much as the loss.

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, record

after = {name: r.metrics["after"]["preference_accuracy"] for name, r in results.items()}
record(dpo_accuracy=higher(after["dpo"], tol=0.15), kto_accuracy=higher(after["kto"], tol=0.15),
       mean_accuracy=higher(sum(after.values()) / len(after), tol=0.1))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("04.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/04_preference_family_solutions.ipynb`](solutions/04_preference_family_solutions.ipynb): try
# first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 04.1 · Who needs a reference model?
#
# Which of these trains without a reference model? (a) DPO (b) IPO (c) SimPO (d) KTO

# %%
answer_04_1 = ...  # "a", "b", "c" or "d"

# %%
check("04.1", answer_04_1)

# %% [markdown]
# ### ⭐⭐ 04.2 · DPO by hand
#
# Write `my_dpo_loss(pc, pr, rc, rr, beta)`: DPO's loss from the policy's (`pc`, `pr`) and the reference's
# (`rc`, `rr`) summed log-probs of the chosen and rejected replies, `[B]` tensors, averaged over the
# batch. Compare it with `losses.dpo_loss`.

# %%
def my_dpo_loss(pc, pr, rc, rr, beta):
    raise NotImplementedError("your code")

# %%
check("04.2", my_dpo_loss)

# %% [markdown]
# ### ⭐⭐⭐ 04.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Set `beta=0.5` for DPO and IPO. Use the widget to predict what changes before you run it.
# - Add `padded` to `KINDS`. Which methods learn "concise beats padded", and which per-token ones prefer
#   the padded replies?
# - Flip 20% of the training labels (edit a copy of the JSONL) and compare `dpo` with `robust`.
