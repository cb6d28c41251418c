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
# # 03 · Reward models, and how a policy games them
#
# RLHF needs a number for "how good is this reply". A **reward model** learns it from human (here:
# programmatic) preferences: the language model with its next-token head swapped for one scalar, trained so
# that the preferred reply of each pair scores higher. This notebook trains one with TRL's `RewardTrainer`,
# checks its accuracy and calibration on held-out pairs, and then trains a second reward model on data with a
# **length bias**, to watch a policy exploit it and a length-controlled metric catch it.

# %% [markdown]
# **Objectives.** After this notebook you can:
#
# 1. Build preference pairs with a known right answer and train a reward model on them with the
#    Bradley–Terry loss (TRL's `RewardTrainer`).
# 2. Read a reward model's calibration plot and its expected calibration error.
# 3. Show that a reward model trained on biased pairs learns the bias.
# 4. Watch best-of-n sampling game a reward model: the proxy reward rises while true quality does not.
#
# **Requirements.** CPU: about 19 CPU minutes (1158 s) in the `cpu-smoke` preset, as measured by the
# nightly run on a shared 2-core machine (expect it faster on a laptop; the `cpu` preset takes several
# times longer). GPU memory: not measured.
#
# **In the course:** after `01`. Next: `04` (preference optimisation without a separate reward model) and
# `05` (RL). The course map and a 5-session syllabus are in [README.md](README.md).

# %% tags=["parameters"]
PRESET = "cpu"  # cpu-smoke | cpu | gpu-qlora
MODEL = "smollm2-135m-instruct"
OUT = "runs/03_reward"

# %%
import pandas as pd
import torch

from labkit.config import BestOfNConfig, RewardConfig
from labkit.dash import LiveDashboard, Panel
from labkit.dash.preference import best_of_n_plot, calibration_plot, reward_spread
from labkit.data import load_rows
from labkit.data.samples import load_sample
from labkit.errors import DataError
from labkit.losses.reward import bradley_terry_loss
from labkit.metrics.reward_hacking import best_of_n_lab
from labkit.metrics.reward_model import expected_calibration_error
from labkit.models import load_model
from labkit.stages.reward import train

cfg = RewardConfig.from_preset(PRESET, model=MODEL, output_dir=f"{OUT}/clean")
RM_PANELS = [Panel("loss", "loss"), Panel("pair accuracy", "accuracy", "heldout/accuracy"),
             Panel("margin", "margin")]

# %% [markdown]
# ## 1. Preference pairs with a known answer
#
# `data_samples/preference_pairs.jsonl` has a prompt, a **chosen** and a **rejected** reply per row. The
# project wrote them, so we know why each loses (`source_kind`):
#
# | kind | rejected reply | what tells it apart |
# | --- | --- | --- |
# | `slip` | same working, result off by a little | only doing the arithmetic |
# | `guess` | a bare wrong answer, no working | the missing working line |
# | `padded` | the right answer wrapped in filler | length and filler |

# %%
rows = load_sample("preference_pairs")
pd.DataFrame([{"kind": r["source_kind"], "split": r["split"], "prompt": r["prompt"][0]["content"],
               "chosen": r["chosen"][0]["content"], "rejected": r["rejected"][0]["content"]}
              for r in rows]).groupby("kind").head(1)

# %% [markdown]
# Pairs go wrong in their own ways: a missing reply, an empty prompt, a pair whose two replies are the same
# (it teaches nothing). Each is caught before any model loads, with the row and field:

# %%
for broken in ({**rows[0], "chosen": rows[0]["rejected"]},
               {k: v for k, v in rows[0].items() if k != "chosen"}):
    try:
        load_rows([rows[1], broken])
    except DataError as err:
        print("DataError:", err)

# %% [markdown]
# ## 2. The Bradley–Terry loss
#
# The model gives each reply a score r. Bradley–Terry says the chosen reply wins with probability
# σ(r_chosen − r_rejected), and training maximises that likelihood: `loss = −log σ(r_c − r_r)`. Only the
# *difference* matters; equal scores give log 2 ≈ 0.693.

# %%
for rc, rr in [(0.0, 0.0), (1.0, 0.0), (3.0, 0.0), (0.0, 2.0)]:
    loss, m = bradley_terry_loss(torch.tensor([rc]), torch.tensor([rr]))
    print(f"r_c={rc:4}  r_r={rr:4}  loss={loss.item():.3f}  "
          f"P(chosen wins)={torch.sigmoid(torch.tensor(rc - rr)):.2f}")

# %% [markdown]
# ## 3. Train the reward model
#
# A LoRA adapter plus a fresh scalar head on the embedded model, trained with TRL's `RewardTrainer`. The
# dashboard shows the training loss and pair accuracy, and held-out accuracy as markers.

# %%
clean = train(cfg, callbacks=[LiveDashboard(RM_PANELS, title="reward model")])
m = clean.metrics
pd.DataFrame({"before training": m["before"], "after training": m["after"]}).T.round(3)

# %% [markdown]
# `guess` and `padded` pairs are easy; `slip` pairs need the arithmetic done, and a 135M reward model
# stays near chance on them. Averages hide this: always read accuracy per kind.

# %%
reward_spread(clean.samples)

# %% [markdown]
# ## 4. Calibration
#
# A reward of +2 over another reply should mean "wins 88% of the time" (σ(2)). The reliability diagram bins
# held-out pairs by that predicted probability and plots how often the prediction came true. Points below
# the diagonal mean the model is overconfident.

# %%
print(f"expected calibration error: {expected_calibration_error(m['calibration']):.3f}")
calibration_plot(m["calibration"])

# %% [markdown]
# ## 5. Reward hacking
#
# Now train a second reward model on the same pairs with one change: in every `padded` pair the long,
# padded reply is marked as the winner, as if the raters liked long answers.

# %%
biased = train(cfg.replace(length_bias=True, output_dir=f"{OUT}/length_biased"),
               callbacks=[LiveDashboard(RM_PANELS, title="length-biased reward model")])
pd.DataFrame({"clean": clean.metrics["after"], "length-biased": biased.metrics["after"]}).T.round(3)

# %% [markdown]
# Optimise a policy against each reward model with **best-of-n**: sample n replies per question from the
# untuned model and keep the one the reward model likes best. Larger n = harder optimisation. We track the
# reward, the reply length, whether the answer is right (the true quality, which neither reward model
# sees), and a **length-controlled reward**: the reward minus its linear trend in length.

# %%
policy, tok = load_model(MODEL)
lab = best_of_n_lab(policy, tok, {"clean RM": (clean.model, clean.tokenizer),
                                  "length-biased RM": (biased.model, biased.tokenizer)},
                    BestOfNConfig.from_preset(PRESET))
print({name: f"{slope:+.3f} reward per token" for name, slope in lab["slopes"].items()})
best_of_n_plot(lab["curves"])

# %%
pd.concat({name: pd.DataFrame(rows).set_index("n") for name, rows in lab["curves"].items()}, axis=1).round(3)

# %% [markdown]
# ## 6. What just happened
#
# - Against the length-biased model, best-of-n buys reward by picking **longer** replies; the share of right
#   answers does not follow. That is reward hacking: the policy optimises the proxy, not the goal.
# - The length-controlled reward rises much less: most of what was "gained" was length. AlpacaEval's
#   length-controlled win rate applies the same correction to LLM-judge scores.
# - The clean model's slope per token is small or negative: its training data never paid for length.

# %%
# Nightly metrics: `labkit nightly` runs this notebook headless and compares these numbers with the
# last good night (higher/lower is better; tol is how far one may move the wrong way).
from labkit.runs.nightly import higher, lower, record

record(rm_accuracy=higher(clean.metrics["after"]["accuracy"], tol=0.15),
       biased_rm_accuracy=higher(biased.metrics["after"]["accuracy"], tol=0.15),
       rm_calibration_error=lower(expected_calibration_error(clean.metrics["calibration"]), tol=0.15))

# %% [markdown]
# ## Exercises
#
# ⭐ check your understanding · ⭐⭐ change the code · ⭐⭐⭐ open-ended. Write your answer in the cell under
# each ⭐/⭐⭐ exercise, then run the check cell below it: it says whether the answer is right and why.
# `hint("03.1")` gives a hint (call it again for the next). The solutions are in
# [`solutions/03_reward_model_solutions.ipynb`](solutions/03_reward_model_solutions.ipynb): try first.

# %%
from labkit.exercises import check, hint  # noqa: F401  (hint("NN.k") on demand)

# %% [markdown]
# ### ⭐ 03.1 · From rewards to a preference
#
# A reward model scores the chosen reply 1.0 and the rejected one 0.0. Under Bradley–Terry, what
# probability does it give that the chosen reply is preferred?

# %%
answer_03_1 = ...  # a probability

# %%
check("03.1", answer_03_1)

# %% [markdown]
# ### ⭐⭐ 03.2 · The loss by hand
#
# Write `bt_loss(chosen, rejected)`: the Bradley–Terry loss for two `[B]` tensors of rewards, one number
# for the batch. Compare it with `bradley_terry_loss` from section 2.

# %%
def bt_loss(chosen, rejected):
    raise NotImplementedError("your code")

# %%
check("03.2", bt_loss)

# %% [markdown]
# ### ⭐⭐⭐ 03.3 · Open-ended
#
# No check: use the notebook's own tools, and compare your numbers with a classmate's.
#
# - Raise `n` in `BestOfNConfig` (16, 32). Does the gap between reward and true quality keep growing?
# - Train the clean model with `center_rewards=0.01`. What happens to the reward scale and to calibration?
# - Drop the `padded` pairs from the biased model's training set. Is the bias gone, and what does that say
#   about where reward-model biases come from?
