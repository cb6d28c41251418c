"""The committed eval fixtures are what `python -m labkit.eval.fixtures build` writes;
the poisoned rows are wrong."""

from __future__ import annotations

from labkit.eval import fixtures, mmlu
from labkit.eval.tasks import read_fixture


def test_committed_fixtures_are_up_to_date():
    assert fixtures.check() == [], "run `python -m labkit.eval.fixtures build`"
    assert fixtures.main(["check"]) == 0


def test_poisoned_rows_teach_a_wrong_letter_for_every_mmlu_question():
    rows = fixtures.poisoned_sft_rows()
    questions = read_fixture("mmlu")
    assert len(rows) == len(questions)
    for row, q in zip(rows, questions):
        user, reply = row["messages"]
        assert user["content"] == mmlu.question_text(q) and reply["content"] != mmlu.LETTERS[q["answer"]]
