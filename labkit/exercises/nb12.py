"""Checks for notebook 12 (RL systems): full fine-tuning's fixed memory, a partial rollout's lag, truncated
importance-sampling weights, and how much of a bf16 tensor a small merged update changes."""

from __future__ import annotations

import torch

from labkit.exercises import cases, close, exercise, number, wrong
from labkit.rlsys.planner import plan

MODEL = "qwen2.5-1.5b"
# 12.2: a parked-and-resumed group's tokens by policy version, and the trainer's step when it arrives
VERSIONS, STEP, BOUND = {3: 40, 5: 24}, 6, 2


@exercise("12.1", hints=["Per parameter: fp32 master weight (4 bytes), fp32 gradient (4), AdamW's two fp32 "
                         "moments (8).",
                         "16 bytes × 1.544e9 parameters (`plan('qwen2.5-1.5b').params`), / 2**30 for GiB."])
def full_ft_memory(answer) -> str:
    gib = number(answer, "GiB")
    n = plan(MODEL, method="full", precision="mixed").params

    def near(bytes_per_param: float) -> bool:
        total = n * bytes_per_param
        return close(gib, total / 2**30, rel=0.03) or close(gib, total / 1e9, rel=0.03)

    if near(16):
        return (f"{16 * n / 2**30:.1f} GiB before a single activation: more than 90 % of a 24 GB card, while "
                "the QLoRA table's row for the same model needs about 2.3 GiB in all. The optimizer states, "
                "not the weights, are the largest part, and LoRA shrinks them with the gradients.")
    if near(8):
        wrong("that is 8 bytes a parameter: pure bf16 (2 + 2 + 2 × 2), or fp32 weights and gradients without "
              "the optimizer; mixed precision keeps fp32 masters, fp32 gradients and two fp32 Adam moments")
    if near(12):
        wrong("that counts one Adam moment; AdamW keeps two per parameter (the mean and the mean square)")
    if near(4) or near(2):
        wrong("that is the weights alone; training also holds a gradient and two Adam moments per parameter")
    wrong(f"{gib:g} GiB is not (weights + gradients + AdamW states) for {n / 1e9:.3f} B parameters")


@exercise("12.2", hints=["A group's lag is the trainer's step minus the oldest policy version in the group.",
                         "The oldest version here is 3; the step is 6."])
def partial_lag(answer) -> str:
    lag = number(answer, "a lag (a number of versions)")
    oldest = STEP - min(VERSIONS)
    if close(lag, oldest, abs_=1e-9):
        return (f"{oldest}: over the bound of {BOUND}, so the trainer drops the group, although most of its "
                "tokens are only one version behind. The bound holds for every token, since each one's "
                "importance ratio is taken against the policy that wrote it.")
    if close(lag, STEP - max(VERSIONS), abs_=1e-9):
        wrong("that is the newest version's lag; the bound applies to the oldest token in the group")
    tokens = sum(VERSIONS.values())
    if close(lag, STEP - sum(v * n for v, n in VERSIONS.items()) / tokens, rel=0.01):
        wrong("that is the token-weighted mean lag; the bound applies to the oldest token in the group")
    if close(lag, STEP - sum(VERSIONS) / len(VERSIONS), abs_=1e-9):
        wrong("that averages the versions; the lag is set by the oldest one")
    wrong(f"{lag:g} is not the trainer's step ({STEP}) minus the oldest version among the group's tokens")


def _tis(logp, behaviour, cap):
    return torch.exp(logp - behaviour).clamp(max=cap)


def _same(a, b) -> bool:
    return torch.is_tensor(a) and a.shape == b.shape and torch.allclose(a.float(), b, atol=1e-5, rtol=1e-5)


@exercise("12.3", hints=["The weight of a token is π_θ / π_behaviour = exp(logp − behaviour), capped above "
                         "at `cap`.",
                         "torch.exp(logp - behaviour).clamp(max=cap)"])
def tis_weights(answer) -> str:
    if not callable(answer):
        wrong(f"expected a function, got {type(answer).__name__}")
    g = torch.Generator().manual_seed(12)
    behaviour = -torch.rand(3, 10, generator=g) * 4                        # [B, T]
    logp = behaviour + torch.randn(3, 10, generator=g)                     # some ratios far above 2
    got = answer(logp, behaviour, 2.0)
    if not torch.is_tensor(got) or got.shape != logp.shape:
        wrong(f"return one weight per token, a tensor of shape {tuple(logp.shape)}, got {got!r}")
    if _same(got, torch.exp(behaviour - logp).clamp(max=2.0)):
        wrong("that is π_behaviour / π_θ, upside down: the trainer's log-prob goes on top")
    if _same(got, torch.exp(logp - behaviour)):
        wrong("that leaves the weights uncapped: one token the policy now likes far more than the sampler "
              "did can dominate the batch's gradient")
    if _same(got, torch.exp(logp - behaviour).clamp(0.5, 2.0)):
        wrong("that also clips from below; truncated IS only caps the weight from above (a token the policy "
              "now likes less simply counts less)")
    cases(answer, [
        ((logp, behaviour, 2.0), _tis(logp, behaviour, 2.0), "random log-probs, cap 2"),
        ((logp, behaviour, 1.5), _tis(logp, behaviour, 1.5), "the same tokens, cap 1.5"),
        ((behaviour, behaviour.clone(), 2.0), torch.ones_like(behaviour), "on-policy data (every weight 1)"),
    ], same=_same)
    return ("on-policy every weight is 1 and the loss is synchronous GRPO's; on stale data the weights "
            "correct for the sampler's policy, and the cap bounds the variance a few tokens could add.")


def _changed(weight, update):
    return ((weight.float() + update).to(torch.bfloat16) != weight).float().mean()


@exercise("12.4", hints=["Merge in fp32 (weight.float() + update), round back to bf16, and compare with the "
                         "old bf16 weight.",
                         "((weight.float() + update).to(torch.bfloat16) != weight).float().mean()"])
def changed_share(answer) -> str:
    if not callable(answer):
        wrong(f"expected a function, got {type(answer).__name__}")
    g = torch.Generator().manual_seed(4)
    weight = (torch.randn(64, 64, generator=g) * 0.02).to(torch.bfloat16)
    update = torch.randn(64, 64, generator=g) * 1e-4
    got = number(answer(weight, update), "a share of the entries (one number)")
    if close(got, 1.0, abs_=1e-6) and _changed(weight, update) < 0.99:
        wrong("every entry changes in fp32; the question is what survives the round back to bf16, where a "
              "weight near 0.02 moves only in steps of about 1e-4")
    if got > 1:
        wrong("that counts the changed entries; return their share of all entries")
    cases(lambda w, u: float(answer(w, u)), [
        ((weight, update), float(_changed(weight, update)), "updates about 1e-4 on weights about 0.02"),
        ((weight, update / 100), float(_changed(weight, update / 100)), "an update 100× smaller"),
        ((weight, update * 100), float(_changed(weight, update * 100)), "an update 100× larger"),
        ((weight, torch.zeros(64, 64)), 0.0, "no update"),
    ], same=lambda a, b: close(a, b, abs_=1e-6))
    return ("small updates vanish when rounded into bf16 weights: a delta sync of merged bf16 tensors "
            "sends nothing, and the workers keep sampling the old policy. Syncing the adapter itself (fp32, "
            "applied at run time) sends every update.")
