"""Held-out preference accuracy and the reward-hacking helpers, checked against direct computations."""

from __future__ import annotations

import pytest
import torch

from labkit.metrics.preference import (
    completion_logps,
    implicit_reward_accuracy,
    pair_logps,
    preference_accuracy,
)
from labkit.metrics.reward_hacking import best_of_n_curve, final_number, length_slope
from labkit.models.logprobs import IGNORE_INDEX

pytestmark = pytest.mark.smoke

PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


def naive_logp(model, tok, prompt, reply) -> float:
    from labkit.data.chat import assistant_mask

    ids, mask = assistant_mask(tok, prompt + reply)
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = model(x).logits.log_softmax(-1)[0, :-1].gather(-1, x[0, 1:, None])[:, 0]
    return float((logp * torch.tensor(mask[1:])).sum())


def test_batched_completion_logps_equal_one_at_a_time(tiny):
    model, tok = tiny
    replies = [[{"role": "assistant", "content": t}]
               for t in ("5", "2 + 3 = 5\n#### 5", "It is six, I think.")]
    batched = completion_logps(model, tok, [(PROMPT, r) for r in replies], batch_size=2)
    for (total, avg, n), reply in zip(batched, replies):
        assert total == pytest.approx(naive_logp(model, tok, PROMPT, reply), abs=1e-4)
        assert avg == pytest.approx(total / n) and n > 0


def test_accuracy_counts_by_kind_and_by_average():
    scores = [{"chosen": -1.0, "rejected": -2.0, "chosen_avg": -0.5, "rejected_avg": -0.1, "kind": "a"},
              {"chosen": -3.0, "rejected": -2.0, "chosen_avg": -0.2, "rejected_avg": -0.4, "kind": "b"}]
    acc = preference_accuracy(scores)
    assert acc["accuracy"] == 0.5 and acc["accuracy_avg"] == 0.5 and acc["pairs"] == 2
    assert acc["by_kind"] == {"a": 1.0, "b": 0.0} and acc["by_kind_avg"] == {"a": 0.0, "b": 1.0}
    # Against itself every implicit reward is 0: ties count as wrong, as in TRL's rewards/accuracies.
    assert implicit_reward_accuracy(scores, scores) == 0.0


def test_pair_logps_on_sample_rows(tiny):
    from labkit.data.samples import load_sample

    model, tok = tiny
    rows = load_sample("preference_pairs", split="heldout")[:3]
    out = pair_logps(model, tok, rows)
    assert [o["kind"] for o in out] == [r["source_kind"] for r in rows]
    assert out[0]["chosen"] == pytest.approx(naive_logp(model, tok, rows[0]["prompt"], rows[0]["chosen"]),
                                             abs=1e-4)
    assert IGNORE_INDEX == -100


def test_final_number_prefers_the_marked_answer():
    assert final_number("3 + 4 = 7\n#### 7") == "7"
    assert final_number("We get 1,200 apples, so 12 boxes.") == "12"
    assert final_number("no digits") is None


def test_best_of_n_picks_the_highest_reward_and_controls_for_length():
    # Reward = 0.1 per token: a pure length bias. Longer replies are wrong, short ones right.
    pool = [[{"prompt": "p", "text": "#### 5" if t < 20 else f"{'blah ' * t}#### 4",
              "tokens": t, "reward": 0.1 * t}
             for t in (10, 30, 12, 40)] for _ in range(3)]
    slope, intercept = length_slope(pool)
    assert slope == pytest.approx(0.1) and intercept == pytest.approx(0.0, abs=1e-9)
    curve = best_of_n_curve(pool, ["5"] * 3, ns=(1, 2, 4))
    assert [r["tokens"] for r in curve] == [10, 30, 40]
    assert [r["correct"] for r in curve] == [1.0, 0.0, 0.0]
    # The length-controlled reward sees through it: all of the reward was length.
    assert all(r["length_controlled_reward"] == pytest.approx(curve[0]["length_controlled_reward"])
               for r in curve)
    with pytest.raises(ValueError, match="best-of-8"):
        best_of_n_curve(pool, ["5"] * 3, ns=(8,))
