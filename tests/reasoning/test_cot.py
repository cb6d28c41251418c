"""Chain-of-thought data: hand-checked worked solutions, every sample row verifies,
and the step checker catches errors."""

from __future__ import annotations

import itertools

import pytest

from labkit.data import validate_rows
from labkit.data.samples import Problem, format_ok, load_sample
from labkit.errors import DataError
from labkit.reasoning.cot import build_cot_rows, cot_reply, cot_steps, parse_expression, verify_steps
from labkit.rewards import extract_number


@pytest.mark.parametrize(("a", "op", "b", "steps"), [
    (47, "+", 38, ["40 + 30 = 70", "7 + 8 = 15", "70 + 15 = 85"]),      # carry out of the ones
    (40, "+", 14, ["40 + 10 = 50", "50 + 4 = 54"]),                      # a has no ones
    (47, "+", 8, ["7 + 8 = 15", "40 + 15 = 55"]),                        # b has no tens
    (40, "+", 8, ["40 + 8 = 48"]),                                       # nothing to split
    (7, "+", 5, ["7 + 5 = 12"]),
    (0, "+", 0, ["0 + 0 = 0"]),
    (85, "-", 38, ["85 - 30 = 55", "55 - 8 = 47"]),                      # borrow inside 55 - 8
    (62, "-", 34, ["62 - 30 = 32", "32 - 4 = 28"]),
    (15, "-", 15, ["15 - 10 = 5", "5 - 5 = 0"]),                         # down to zero
    (85, "-", 30, ["85 - 30 = 55"]),
    (85, "-", 8, ["85 - 8 = 77"]),
    (20, "-", 0, ["20 - 0 = 20"]),
    (7, "*", 12, ["7 * 10 = 70", "7 * 2 = 14", "70 + 14 = 84"]),         # larger factor on the right
    (12, "*", 7, ["10 * 7 = 70", "2 * 7 = 14", "70 + 14 = 84"]),         # ... and on the left
    (9, "*", 10, ["9 * 10 = 90"]),
    (3, "*", 4, ["3 * 4 = 12"]),
    (0, "*", 15, ["0 * 15 = 0"]),
    (1, "*", 23, ["1 * 23 = 23"]),
])
def test_hand_checked_steps(a, op, b, steps):
    assert cot_steps(a, op, b) == steps


def test_reply_is_steps_then_the_answer_line_and_one_step_is_the_sample_format():
    assert cot_reply("47 + 38") == "40 + 30 = 70\n7 + 8 = 15\n70 + 15 = 85\n#### 85"
    assert cot_reply("  7 x 12 ") == "7 * 10 = 70\n7 * 2 = 14\n70 + 14 = 84\n#### 84"  # times written as x
    # A problem with nothing to split is exactly the one-line format the SFT samples use.
    assert cot_reply("9 * 3") == Problem(9, "*", 3).reply() and format_ok(cot_reply("9 * 3"))


def test_every_small_problem_verifies_and_ends_on_its_value():
    ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
    for a, b, op in itertools.product(range(100), range(100), ops):
        reply = cot_reply(f"{a} {op} {b}")
        check = verify_steps(reply)
        assert check["all_correct"] and check["steps"] == len(cot_steps(a, op, b)), reply
        assert reply.endswith(f"#### {ops[op](a, b)}") and extract_number(reply) == str(ops[op](a, b)), reply
        assert 1 <= check["steps"] <= 3  # short enough for a small model to imitate


def test_every_arithmetic_prompt_gets_a_verified_reply_with_its_answer():
    rows = load_sample("arithmetic_prompts")
    cot = build_cot_rows(rows, source="arithmetic_prompts")
    assert len(cot) == len(rows) == 250
    for row, out in zip(rows, cot):
        user, reply = out["messages"]
        assert user == {"role": "user", "content": row["prompt"]} and reply["role"] == "assistant"
        assert verify_steps(reply["content"])["all_correct"], reply["content"]
        assert extract_number(reply["content"]) == row["answer"] == out["answer"]
        assert out["split"] == row["split"] and out["expression"] == row["expression"]
    # 1-3 steps + answer line
    assert {len(r["messages"][1]["content"].splitlines()) for r in cot} == {2, 3, 4}


def test_cot_rows_are_valid_conversational_sft_data(tokenizer):
    rows = build_cot_rows(load_sample("arithmetic_prompts")[:20])
    assert validate_rows(rows, None, source="cot", tokenizer=tokenizer,
                         max_length=256).value == "conversational"


def test_verify_steps_catches_a_planted_wrong_step():
    good = cot_reply("47 + 38").splitlines()
    planted = "\n".join([good[0], "7 + 8 = 16", "70 + 16 = 86", "#### 86"])
    check = verify_steps(planted)
    assert check == {"steps": 3, "correct_steps": 2, "all_correct": False,
                     "first_error": "7 + 8 = 16 (is 15)"}
    # a right process with a wrong answer line passes the step check: that is the outcome check's job
    assert verify_steps("\n".join([*good[:-1], "#### 58"]))["all_correct"]


def test_verify_steps_reads_free_text_the_way_arithmetic_does():
    text = "So 2 + 3 * 4 = 14, and 10-3=7; 5 x 3 = 15, -5 + 3 = -2 and 5 - -3 = 8. Then 1.5 + 2 = 3.5."
    assert verify_steps(text) == {"steps": 5, "correct_steps": 5, "all_correct": True, "first_error": None}
    assert verify_steps("We have 12 apples.") == {"steps": 0, "correct_steps": 0, "all_correct": False,
                                                  "first_error": None}
    assert verify_steps("71 - 14 = 37 marbles")["first_error"] == "71 - 14 = 37 (is 57)"


def test_malformed_rows_raise_data_errors_naming_row_and_field():
    rows = [{"prompt": "Add 1 and 2.", "answer": "3", "expression": "1 + 2"},
            {"prompt": "What is 3 / 4?", "answer": "0.75", "expression": "3 / 4"}]
    with pytest.raises(DataError, match=r"prompts.jsonl, row 1, field 'expression'") as err:
        build_cot_rows(rows, source="prompts.jsonl")
    assert err.value.row == 1
    with pytest.raises(DataError, match="field 'answer'.*disagree"):
        build_cot_rows([{"prompt": "Add 1 and 2.", "answer": "4", "expression": "1 + 2"}])
    with pytest.raises(DataError, match="field 'expression'.*missing"):
        build_cot_rows([{"prompt": "Add 1 and 2.", "answer": "3"}])
    with pytest.raises(DataError, match="field 'expression'"):
        parse_expression(None)
