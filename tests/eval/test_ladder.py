"""labkit.eval.ladder (notebook 00b's cost ladder): prompts with examples, retrieval, scoring and costs."""

from __future__ import annotations

import pytest

from labkit.errors import ConfigError, DataError
from labkit.eval.ladder import (
    Rung,
    fixed_examples,
    ladder_rows,
    question,
    score_rung,
    similar_examples,
    with_examples,
)


def row(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"{a}\n#### {a}"}],
            "answer": a}


POOL = [row("Kai has 3 apples and buys 4 more. How many apples?", "7"),
        row("There are 5 rows of chairs with 2 in each row. How many chairs?", "10"),
        row("A tank holds 9 litres; 4 leak out. How many litres are left?", "5")]


def test_question_drops_the_answer_and_examples_come_first():
    q = row("Ann has 1 pear and buys 2 more. How many pears?", "3")
    assert question(q) == q["messages"][:1]
    turns = with_examples(q, POOL[:2])
    assert turns == [*POOL[0]["messages"], *POOL[1]["messages"], *q["messages"][:1]]
    with pytest.raises(DataError, match="assistant turn"):
        question({"messages": [{"role": "user", "content": "hi"}]})


def test_retrieval_finds_the_same_story_with_other_numbers():
    q = row("There are 8 rows of boxes with 6 in each row. How many boxes?", "48")
    assert similar_examples(q, POOL, 1) == [POOL[1]]
    apples = row("Mo has 2 apples and buys 9 more. How many apples?", "11")
    assert similar_examples(apples, POOL, 2)[0] is POOL[0]


def test_fixed_examples_are_seeded_and_bounded():
    assert fixed_examples(POOL, 2, seed=1) == fixed_examples(POOL, 2, seed=1)
    assert len({id(r) for r in fixed_examples(POOL, 3)}) == 3
    with pytest.raises(ConfigError, match="only 3 rows"):
        fixed_examples(POOL, 4)
    with pytest.raises(ConfigError, match="≥ 0"):
        similar_examples(POOL[0], POOL, -1)


def test_score_rung_counts_tokens_and_scores_replies(tiny):
    model, tok = tiny
    prompts = [question(r) for r in POOL]
    zero = score_rung("zero-shot", model, tok, POOL, prompts, max_new_tokens=4)
    shown = [with_examples(r, POOL[:2]) for r in POOL]
    few = score_rung("few-shot", model, tok, POOL, shown, max_new_tokens=4)
    assert zero.name == "zero-shot" and len(zero.samples) == 3
    assert 0 <= zero.format_accuracy <= 1 and 0 < zero.new_tokens <= 4
    # Two worked examples add their turns' tokens to every prompt.
    assert few.prompt_tokens > zero.prompt_tokens + 20
    with pytest.raises(ConfigError, match="one prompt per row"):
        score_rung("x", model, tok, POOL, prompts[:2])


def test_ladder_rows_put_one_off_and_per_question_costs_on_one_scale():
    rungs = [Rung("few-shot", 0.9, 0.5, prompt_tokens=150, new_tokens=10, seconds=4.0, samples=[{}] * 4),
             Rung("LoRA SFT", 0.8, 0.4, prompt_tokens=40, new_tokens=10, seconds=4.0, setup_seconds=120,
                  setup_tokens=5000, samples=[{}] * 4)]
    few, sft = ladder_rows(rungs, questions=100)
    assert few["tokens for 100 questions"] == 100 * 160
    assert sft["tokens for 100 questions"] == 5000 + 100 * 50
    assert few["minutes for 100 questions"] == round(100 * 1.0 / 60, 1)
    assert sft["minutes for 100 questions"] == round((120 + 100 * 1.0) / 60, 1)
    assert sft["one-off minutes"] == 2.0
