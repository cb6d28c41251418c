"""Over-optimisation on the embedded model (slow): train a reward model, then GRPO against it at two KL
coefficients, and best-of-n, on the arithmetic prompts; the curve is written to
runs/slow/overoptimisation/curve.json and printed, for the README and the issue note."""

from __future__ import annotations

import json
import pathlib

import pytest

from labkit.config import RewardConfig, RLConfig

pytestmark = pytest.mark.slow

OUT = pathlib.Path("runs/slow/overoptimisation")


def test_overoptimisation_curve_on_the_embedded_model():
    from labkit.rewards import learned_reward
    from labkit.stages import reward as rm
    from labkit.stages.overoptimisation import sweep

    rm_result = rm.train(RewardConfig.from_preset("cpu", max_steps=40, output_dir=str(OUT / "reward")))
    reward = learned_reward(rm_result.output_dir)
    # A high learning rate so the policy travels far from the reference within a CPU budget.
    cfg = RLConfig.from_preset("cpu", max_steps=16, prompts_per_step=2, num_generations=4,
                               output_dir=str(OUT / "grpo"), preflight=False, reward_weights="",
                               learning_rate=1e-3)
    out = sweep(cfg, reward, betas=(0.0, 0.1), eval_every=4, eval_prompts=12, samples=2,
                best_of=(1, 2, 4, 8, 16))
    out["reward_model"] = rm_result.metrics["after"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "curve.json").write_text(json.dumps(out, indent=1, default=str))
    for row in out["curves"]:
        print(f"beta={row['beta']:<4g} step={row['step']:>3}  sqrt_kl={row['sqrt_kl']:.3f}  "
              f"proxy={row['proxy']:+.3f}  gold={row['gold']:.3f}  length={row['length']:.1f}")
    for row in out["best_of_n"]:
        print(f"best-of-{row['n']:<3} sqrt_kl={row['sqrt_kl']:.3f}  proxy={row['proxy']:+.3f}  "
              f"gold={row['gold']:.3f}")
    for beta in (0.0, 0.1):
        pts = sorted((c for c in out["curves"] if c["beta"] == beta), key=lambda c: c["step"])
        assert pts[0]["step"] == 0 and pts[-1]["step"] == 16 and pts[0]["kl"] == pytest.approx(0, abs=1e-6)
        assert pts[-1]["kl"] > 0   # training moved the policy away from the reference
    bon = out["best_of_n"]
    assert bon[-1]["proxy"] >= bon[0]["proxy"]   # picking by the proxy raises the proxy
