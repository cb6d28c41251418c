"""The over-optimisation experiment on the tiny model: curve points (proxy, gold, KL) per β from step 0,
best-of-n on the same axes, and the measurements they rest on."""

from __future__ import annotations

import math

import pytest

from labkit.config import RewardConfig, RLConfig
from labkit.errors import ConfigError
from labkit.metrics.overoptimisation import best_of_n_curve, best_of_n_kl, policy_point

pytestmark = pytest.mark.smoke


def rows(n: int = 3) -> list[dict]:
    from labkit.data.samples import load_sample

    return [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": str(r["answer"])}
            for r in load_sample("arithmetic_prompts", split="heldout")[:n]]


def chars(prompts, completions, **kw):
    """A proxy that pays for length, so best-of-n has something to climb."""
    return [float(len(c if isinstance(c, str) else c[0]["content"])) for c in completions]


def test_best_of_n_kl_closed_form():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)


def test_best_of_n_proxy_never_falls_with_n(tiny):
    model, tok = tiny
    curve = best_of_n_curve(model, tok, rows(), chars, ns=(1, 2, 4), max_new_tokens=6)
    assert [c["n"] for c in curve] == [1, 2, 4]
    proxies = [c["proxy"] for c in curve]
    assert proxies == sorted(proxies) and proxies[-1] > proxies[0]
    assert all(0 <= c["gold"] <= 1 and c["kl"] == pytest.approx(best_of_n_kl(c["n"])) for c in curve)
    with pytest.raises(ValueError, match="divide"):
        best_of_n_curve(model, tok, rows(), chars, ns=(1, 3, 4))


def test_policy_point_is_at_zero_kl_before_training_and_positive_after_a_change(tiny):
    import torch
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    point, samples = policy_point(policy, tok, rows(), chars, samples=2, max_new_tokens=6)
    assert point["kl"] == pytest.approx(0.0, abs=1e-6) and len(samples) == 6
    assert point["proxy"] == pytest.approx(sum(s["proxy"] for s in samples) / 6)
    with torch.no_grad():   # move the adapter: the policy leaves the reference
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    moved, _ = policy_point(policy, tok, rows(), chars, samples=2, max_new_tokens=6)
    assert moved["kl"] > 0.01


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory):
    import labkit.stages.reward as rm

    out = tmp_path_factory.mktemp("rm") / "run"
    rm.train(RewardConfig.from_preset("cpu-smoke", model=tiny_model_dir, output_dir=str(out), max_steps=2,
                                      batch_size=4, n_eval=4, dtype="float32", learning_rate=1e-2))
    return out


def test_sweep_records_a_curve_per_beta_and_best_of_n(tiny_model_dir, tmp_path, reward_dir):
    from labkit.dash.rlhf import overoptimisation_figure
    from labkit.stages.overoptimisation import sweep

    cfg = RLConfig.from_preset("cpu-smoke", model=tiny_model_dir, output_dir=str(tmp_path / "sweep"),
                               max_steps=2, prompts_per_step=2, num_generations=2, max_completion_length=6,
                               n_eval=2, eval_max_new_tokens=6, dtype="float32", preflight=False,
                               reward_weights="", learning_rate=5e-2)
    out = sweep(cfg, reward_dir, betas=(0.0, 0.2), eval_every=1, eval_prompts=2, samples=2, best_of=(1, 2))
    for beta in (0.0, 0.2):
        pts = [c for c in out["curves"] if c["beta"] == beta]
        assert [p["step"] for p in pts] == [0, 1, 2]
        assert pts[0]["kl"] == pytest.approx(0.0, abs=1e-6)          # step 0: the policy is the reference
        assert all(math.isfinite(p["proxy"]) and 0 <= p["gold"] <= 1 for p in pts)
        assert out["runs"][beta]["steps"] == 2
    assert [b["n"] for b in out["best_of_n"]] == [1, 2]
    assert len(overoptimisation_figure(out).data) == 2 * 2 + 2
    with pytest.raises(ConfigError, match="betas"):
        sweep(cfg, reward_dir, betas=())
