"""Real learning on the embedded model (slow tier): DPO on correct-vs-wrong pairs, and a reward model."""

import time

import pytest

from labkit.config import PreferenceConfig, RewardConfig


@pytest.mark.slow
def test_dpo_raises_heldout_preference_accuracy_by_25_points(tmp_path):
    from labkit.stages.preference import train

    start = time.perf_counter()
    cfg = PreferenceConfig.from_preset("cpu", method="dpo", kinds="slip,guess",
                                       output_dir=str(tmp_path / "dpo"))
    result = train(cfg)
    minutes = (time.perf_counter() - start) / 60
    before, after = result.metrics["before"], result.metrics["after"]
    print(f"held-out preference accuracy {before['preference_accuracy']:.3f} -> "
          f"{after['preference_accuracy']:.3f} in {minutes:.1f} min; "
          f"slip {before['accuracy/slip']:.2f} -> {after['accuracy/slip']:.2f}, guess "
          f"{before['accuracy/guess']:.2f} -> {after['accuracy/guess']:.2f}; KL {after['kl']:.2f} nats")
    assert after["preference_accuracy"] - before["preference_accuracy"] >= 0.25
    assert after["kl"] > 0  # it moved away from the reference to get there


@pytest.mark.slow
def test_reward_model_reaches_85_percent_heldout_pairwise_accuracy(tmp_path):
    from labkit.stages.reward import train

    result = train(RewardConfig.from_preset("cpu", output_dir=str(tmp_path / "rm")))
    m = result.metrics
    print("held-out accuracy", {k: round(v, 3) for k, v in m["after"].items()})
    assert m["after"]["accuracy"] >= 0.85
    assert m["before"]["accuracy"] < 0.7  # a fresh head is near chance: the accuracy was learnt
