"""Slow: GRPO really learns on the embedded model, on a CPU, within a fixed wall-clock budget.

The `cpu` preset on the project's arithmetic prompts must at least double held-out greedy accuracy and add
at least 15 points. The budget is not asserted as a timing: the run is *given* 15 minutes (model load,
pre-flight, evals and the final eval included, through RLConfig.max_seconds plus a margin for the last
eval) and must reach the accuracy within them.
"""

from __future__ import annotations

import pytest

from labkit.config import RLConfig
from labkit.stages import grpo

pytestmark = pytest.mark.slow

BUDGET_S = 15 * 60
LAST_EVAL_MARGIN_S = 60  # the step in flight when the budget runs out, then the final held-out eval


def test_grpo_doubles_heldout_accuracy_within_fifteen_minutes(tmp_path):
    cfg = RLConfig.from_preset("cpu", output_dir=str(tmp_path / "grpo"),
                               max_seconds=BUDGET_S - LAST_EVAL_MARGIN_S, max_steps=1000, eval_every=0)
    result = grpo.train(cfg)
    before, after = result.metrics["before"]["accuracy"], result.metrics["after"]["accuracy"]
    print(f"GRPO held-out accuracy {before:.0%} -> {after:.0%} in {result.metrics['steps']} steps, "
          f"{result.metrics['wall_seconds']:.0f} s of training")
    assert after >= 2 * before and after - before >= 0.15, (before, after)
