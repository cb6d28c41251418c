"""GSM8K task: answer extraction edge cases, exact accuracy on fake replies, the fixture, few-shot prompts,
the loader (hub schema through a patched `datasets.load_dataset`, auto fallback, malformed rows)
and a tiny-model run."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from labkit.config import EvalConfig
from labkit.errors import ConfigError, DataError
from labkit.eval import gsm8k
from labkit.eval.tasks import read_fixture

ROW = {"question": "q", "answer": "Step <<1000+234=1234>>1234.\n#### 1,234"}


def accuracy(rows, replies):
    return [s.score for s in gsm8k.score_replies(rows, replies) if s.metric == "accuracy"]


def test_target_answer_drops_commas():
    assert gsm8k.target_answer(ROW["answer"]) == "1234"
    assert gsm8k.target_answer("a\n#### -3") == "-3"
    assert gsm8k.target_answer("a\n#### 7.5 ") == "7.5"


@pytest.mark.parametrize(("reply", "right"), [
    ("#### 1,234", True),
    ("#### 1234", True),
    ("The answer is 1234.", True),
    ("The answer is 1,234.", True),                    # thousands comma
    ("\\boxed{1,234}", True),
    ("It costs $1,234.", True),                          # currency and a sentence's full stop
    ("1234 dollars", True),                              # trailing units
    ("That is 1,234 km", True),
    ("1234.00", True),                                   # trailing zeros
    ("So 1000 + 234 = 1234", True),                      # last number
    ("#### 1234\n\nQuestion: Tom has 5 apples.\n#### 5", True),  # the first #### wins over a run-on question
    ("#### 1234 apples, and 7 pears", True),            # #### beats the last number
    ("The answer is 1234.\n#### 99", False),             # … also when it is wrong
    ("1234? No: 1243", False),
    ("#### -1234", False),                               # the sign counts
    ("#### 123", False),
    ("twelve hundred thirty-four", False),
    ("", False),
])
def test_extraction_edge_cases(reply, right):
    assert accuracy([ROW], [reply]) == [float(right)]


def test_negative_and_decimal_answers():
    rows = [{"question": "q", "answer": "#### -12"}, {"question": "q", "answer": "#### 6.75"},
            {"question": "q", "answer": "#### 4.5"}]
    assert accuracy(rows, ["It drops to -12 degrees.", "That costs $6.75.", "#### $4.50"]) == [1.0, 1.0, 1.0]
    assert accuracy(rows, ["It drops 12 degrees.", "About 6.7 dollars.", "\\boxed{45}"]) == [0.0, 0.0, 0.0]


def test_accuracy_and_format_on_fake_replies_are_exact():
    rows = [r for r in gsm8k.fixture_rows() if r["split"] == "test"]
    replies = []
    for i, r in enumerate(rows):
        n = gsm8k.target_answer(r["answer"])
        # i % 4: right with ####, right without it, wrong with ####, nothing usable
        replies.append([f"Working.\n#### {n}", f"The answer is {n}.", "#### 99999", "I do not know."][i % 4])
    scores = gsm8k.score_replies(rows, replies)
    assert [s.metric for s in scores[:4]] == ["accuracy", "format", "accuracy", "format"]
    acc = [s.score for s in scores if s.metric == "accuracy"]
    fmt = [s.score for s in scores if s.metric == "format"]
    assert sum(acc) == 20 and sum(fmt) == 20 and len(acc) == len(fmt) == 40
    assert acc[:4] == [1.0, 1.0, 0.0, 0.0] and fmt[:4] == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="3 rows but 2 replies"):
        gsm8k.score_replies(rows[:3], replies[:2])


def test_fixture_is_deterministic_and_well_formed():
    rows = gsm8k.fixture_rows()
    assert rows == gsm8k.fixture_rows()
    assert Counter(r["split"] for r in rows) == {"test": 40, "train": 8}
    assert len({r["question"] for r in rows}) == len(rows)
    gsm8k.validate(rows, "fixture")
    for r in rows:
        assert re.fullmatch(r"#### [\d,.]+", r["answer"].splitlines()[-1])
        # every calculator note is true arithmetic, and the answer line repeats the last result
        notes = re.findall(r"<<([^=<>]+)=([^<>]+)>>", r["answer"])
        assert notes
        for expr, result in notes:
            assert re.fullmatch(r"[\d.+\-*/ ]+", expr)
            assert abs(eval(expr) - float(result)) < 1e-9, (expr, result)  # noqa: S307 - our own digits and operators
        assert float(notes[-1][1]) == float(gsm8k.target_answer(r["answer"]))
    targets = [gsm8k.target_answer(r["answer"]) for r in rows]
    assert any("," in r["answer"].splitlines()[-1] for r in rows)          # "#### 2,450"
    assert any("." in t for t in targets) and all(not t.startswith("-") for t in targets)
    assert {gsm8k.steps_slice(r["answer"]) for r in rows if r["split"] == "test"} == {"1-2", "3+"}


def test_fixture_answers_score_100_percent():
    rows = gsm8k.fixture_rows()
    scores = gsm8k.score_replies(rows, [r["answer"] for r in rows])
    assert len(scores) == 2 * len(rows) and all(s.score == 1.0 for s in scores)


def test_steps_slice_counts_calculator_notes_or_lines():
    assert gsm8k.steps("<<1+1=2>>2 and <<2*3=6>>6\n#### 6") == 2
    assert gsm8k.steps_slice("a <<1+1=2>> b <<2+1=3>> c <<3+1=4>>\n#### 4") == "3+"
    assert gsm8k.steps("Add them.\nDouble it.\nHalve it.\n#### 4") == 3  # no notes: working lines


def test_few_shot_messages():
    train = [r for r in gsm8k.fixture_rows() if r["split"] == "train"]
    turns = gsm8k.few_shot_messages(train, 3)
    assert [t["role"] for t in turns] == ["user", "assistant"] * 3
    assert turns[0]["content"].startswith(train[0]["question"]) and gsm8k.INSTRUCTION in turns[0]["content"]
    for t in turns[1::2]:
        assert t["content"].splitlines()[-1].startswith("#### ") and "<<" not in t["content"]
    assert gsm8k.few_shot_messages(train, 0) == []
    msgs = gsm8k.prompt_messages({"question": "How many?"}, train[:2])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[-1]["content"] == f"How many?\n\n{gsm8k.INSTRUCTION}"


def test_fixture_loader_shots_limit_and_stable_ids():
    every = gsm8k.load(EvalConfig(source="fixture"))
    assert len(every) == sum(r["split"] == "test" for r in read_fixture("gsm8k"))
    assert all(r["split"] == "test" and r["shots"] == [] for r in every)
    by_id = {r["id"]: r["question"] for r in every}
    some = gsm8k.load(EvalConfig(source="fixture", limit=5, gsm8k_shots=2, seed=3))
    assert len(some) == 5 and all(by_id[r["id"]] == r["question"] for r in some)  # ids pair across limits
    assert all(len(r["shots"]) == 2 and r["shots"] == some[0]["shots"] for r in some)
    with pytest.raises(ConfigError, match="gsm8k_shots"):
        gsm8k.load(EvalConfig(source="fixture", gsm8k_shots=9))


class FakeHub:
    """Stands in for datasets.load_dataset: GSM8K-schema rows per split,
    and a record of what was asked for."""

    def __init__(self, splits):
        self.splits, self.calls = splits, []

    def __call__(self, path, name=None, split=None):
        self.calls.append((path, name, split))
        return self.splits[split]


def test_hub_loader_reads_openai_gsm8k(monkeypatch):
    hub = FakeHub({"test": [{"question": "Tom has 2 + 3 apples. How many?",
                             "answer": "2+3=<<2+3=5>>5\n#### 5"}],
                   "train": [{"question": "1 + 1?", "answer": "<<1+1=2>>2\n#### 2"}]})
    monkeypatch.setattr("datasets.load_dataset", hub)
    rows = gsm8k.load(EvalConfig(source="hub"))
    assert hub.calls == [("openai/gsm8k", "main", "test")]  # no shots: the train split is not fetched
    assert rows == [{**hub.splits["test"][0], "split": "test", "id": "0", "shots": []}]
    rows = gsm8k.load(EvalConfig(source="auto", gsm8k_shots=1))
    assert hub.calls[-1] == ("openai/gsm8k", "main", "train")
    assert rows[0]["shots"] == hub.splits["train"]


def test_auto_falls_back_to_the_fixture_when_the_hub_fails(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    rows = gsm8k.load(EvalConfig(source="auto"))
    assert [r["question"] for r in rows] == [r["question"]
                                             for r in read_fixture("gsm8k") if r["split"] == "test"]
    with pytest.raises(ConnectionError):
        gsm8k.load(EvalConfig(source="hub"))


@pytest.mark.parametrize(("row", "field"), [
    ({"question": "q"}, "answer"),
    ({"question": "q", "answer": "It is 4."}, "answer"),              # no #### line
    ({"question": "q", "answer": "#### four"}, "answer"),
    ({"question": "", "answer": "#### 4"}, "question"),
])
def test_malformed_rows_raise_data_error(monkeypatch, row, field):
    good = {"question": "q", "answer": "#### 1"}
    monkeypatch.setattr("datasets.load_dataset", FakeHub({"test": [good, row]}))
    for source in ("hub", "auto"):  # auto must not hide a broken hub row behind the fixture
        with pytest.raises(DataError, match=f"openai/gsm8k.*row 1, field '{field}'"):
            gsm8k.load(EvalConfig(source=source))


def test_tiny_model_smoke_run(tiny):
    model, tok = tiny
    cfg = EvalConfig(limit=3, max_new_tokens=8, source="fixture")
    rows = gsm8k.load(cfg)
    out = gsm8k.run(model, tok, rows, cfg)
    assert Counter(s.metric for s in out.scores) == {"accuracy": 3, "format": 3}
    assert all(s.score in (0.0, 1.0) for s in out.scores) and {s.id for s in out.scores} == {r["id"]
                                                                                             for r in rows}
    assert len(out.samples) == 3 and {"prompt", "output", "target", "extracted",
                                      "score"} <= set(out.samples[0])
    assert out.info["shots"] == 0 and 0 <= out.info["cut_off"] <= 3
