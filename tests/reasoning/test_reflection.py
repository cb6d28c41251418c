"""Self-reflection traces: the check line is computed from the problem, only wrong attempts become rows,
sampling works."""

from __future__ import annotations

import pytest

from labkit.data.samples import load_sample
from labkit.data.tokenize import sft_example
from labkit.errors import ConfigError, DataError
from labkit.reasoning.cot import verify_steps
from labkit.reasoning.reflection import (
    CHECK_REQUEST,
    attempt_stats,
    build_reflection_rows,
    collect_attempts,
    reflection_reply,
)
from labkit.rewards import extract_number


def test_a_wrong_attempt_is_kept_verbatim_checked_and_revised():
    attempt = "40 + 14 = 51\n#### 51"
    reply = reflection_reply(attempt + "\n", "40 + 14", "54")
    assert reply == ("40 + 14 = 51\n#### 51\nCheck: 40 + 14 = 54, not 51.\nRevised:\n"
                     "40 + 10 = 50\n50 + 4 = 54\n#### 54")
    assert extract_number(reply) == "54"  # the revised answer is the one a reward reads
    revised = reply.split("Revised:")[1]
    assert verify_steps(revised)["all_correct"]
    assert verify_steps(reply)["first_error"] == "40 + 14 = 51 (is 54)"  # the attempt's slip is still visible


def test_check_line_names_the_attempts_number_or_its_absence():
    assert "Check: 7 * 12 = 84, not 74." in reflection_reply("It is 74 apples.", "7 * 12", "84")
    assert "Check: 85 - 38 = 47, not 57." in reflection_reply("85 - 38 = 57", "85 - 38", "47")
    no_number = reflection_reply("I am not sure.", "85 - 38", "47")
    assert no_number.startswith("I am not sure.\nCheck: the attempt gives no final number.\nRevised:\n")
    right = reflection_reply("So there are 84.", "7 * 12", "84")
    assert right == "So there are 84.\nCheck: 7 * 12 = 84, as the attempt says.\n#### 84"  # nothing to revise
    assert reflection_reply("  ", "3 + 4", "7").startswith("Check: the attempt gives no final number.")


def test_an_answer_that_disagrees_with_the_expression_is_an_error():
    with pytest.raises(DataError, match="field 'answer'"):
        reflection_reply("51", "40 + 14", "55")
    with pytest.raises(DataError, match="field 'expression'"):
        reflection_reply("51", "forty plus fourteen", "54")


def attempt(prompt, text, correct, expression="40 + 14", answer="54"):
    return {"prompt": prompt, "expression": expression, "answer": answer, "attempt": text,
            "extracted": extract_number(text), "correct": correct, "finished": True}


def test_rows_come_from_wrong_attempts_only_deduplicated():
    attempts = [
        attempt("Add 40 and 14.", "It is 54.", True),
        attempt("Add 40 and 14.", "It is 51.", False),
        attempt("Add 40 and 14.", "It is 51.  ", False),          # same text once stripped: one row
        attempt("What is 40 + 14?", "It is 51.", False),          # same text, another prompt: its own row
        attempt("Add 40 and 14.", "No idea.", False),
    ]
    rows = build_reflection_rows(attempts)
    assert [r["messages"][0]["content"] for r in rows] == ["Add 40 and 14.", "What is 40 + 14?",
                                                           "Add 40 and 14."]
    assert [r["extracted"] for r in rows] == ["51", "51", None]
    assert all(r["answer"] == "54" and extract_number(r["messages"][1]["content"]) == "54" for r in rows)
    stats = attempt_stats(attempts)
    assert stats == {"attempts": 5, "correct": 1, "wrong": 4, "no_number": 1, "unique_wrong": 3,
                     "accuracy": 0.2}


def test_turns_style_trains_on_the_correction_only(tokenizer):
    rows = build_reflection_rows([attempt("Add 40 and 14.", "It is 51.", False)], style="turns")
    (row,) = rows
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["prompt"][1]["content"] == "It is 51." and row["prompt"][2]["content"] == CHECK_REQUEST
    assert row["completion"][0]["content"].startswith("Check: 40 + 14 = 54, not 51.\nRevised:\n")
    ex = sft_example(tokenizer, {"prompt": row["prompt"], "completion": row["completion"]})
    trained = tokenizer.decode([t for t, m in zip(ex["input_ids"], ex["assistant_masks"]) if m])
    assert "It is 51." not in trained and trained.startswith("Check: 40 + 14 = 54")
    trace = build_reflection_rows([attempt("Add 40 and 14.", "It is 51.", False)])[0]
    ex = sft_example(tokenizer, trace)
    assert "It is 51." in tokenizer.decode([t for t, m in zip(ex["input_ids"], ex["assistant_masks"]) if m])


def test_bad_style_and_missing_expression_are_errors():
    with pytest.raises(ConfigError, match="style"):
        build_reflection_rows([], style="essay")
    with pytest.raises(DataError, match="attempts, row 0, field 'expression'"):
        build_reflection_rows([attempt("Add 40 and 14.", "51", False, expression=None)])


def test_collect_attempts_samples_k_per_row_and_verifies_them(tiny):
    model, tok = tiny
    rows = load_sample("arithmetic_prompts", "train")[:2]
    attempts = collect_attempts(model, tok, rows, k=3, max_new_tokens=6, temperature=1.0, seed=0)
    assert len(attempts) == 6
    assert [a["prompt"] for a in attempts] == [rows[0]["prompt"]] * 3 + [rows[1]["prompt"]] * 3
    assert all(a["expression"] == rows[i // 3]["expression"] and a["split"] == "train"
               for i, a in enumerate(attempts))
    assert all(a["attempt"] and not a["correct"] for a in attempts)  # a random model never answers right
    assert len({a["attempt"] for a in attempts}) > 1                 # sampled, not greedy
    again = collect_attempts(model, tok, rows, k=3, max_new_tokens=6, temperature=1.0, seed=0)
    assert [a["attempt"] for a in again] == [a["attempt"] for a in attempts]  # the seed fixes the samples
    # The verifier is pluggable; whatever it accepts counts as correct.
    accept = collect_attempts(model, tok, rows, k=1, max_new_tokens=4, temperature=1.0, seed=1,
                              reward=lambda prompts, completions, **kw: [1.0] * len(completions))
    assert all(a["correct"] and a["reward"] == 1.0 for a in accept)
    # Wrong attempts become reflection rows that the trainer's masking accepts.
    rows_out = build_reflection_rows(attempts)
    assert 1 <= len(rows_out) <= 6
    for r in rows_out:
        assert sum(sft_example(tok, {"messages": r["messages"]})["assistant_masks"]) > 0


def test_collect_attempts_rejects_rows_without_an_answer(tiny):
    model, tok = tiny
    with pytest.raises(DataError, match="row 1, field 'answer'"):
        collect_attempts(model, tok, [{"prompt": "a", "answer": "1"}, {"prompt": "b"}], k=1, max_new_tokens=2,
                         temperature=1.0, seed=0)
    with pytest.raises(ConfigError, match="k"):
        collect_attempts(model, tok, [{"prompt": "a", "answer": "1"}], k=0, max_new_tokens=2, temperature=1.0,
                         seed=0)
