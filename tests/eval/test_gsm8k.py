"""GSM8K task: answer extraction edge cases, the harness-style strict and flexible scores, one reader shared
with the RL reward, real GSM8K gold answers, exact accuracy on fake replies, the fixture, few-shot prompts,
the loader (hub schema through a patched `datasets.load_dataset`, auto fallback, malformed rows)
and a tiny-model run."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

import pytest

from labkit.config import EvalConfig
from labkit.errors import ConfigError, DataError
from labkit.eval import gsm8k
from labkit.eval.tasks import read_fixture
from labkit.metrics.reward_hacking import final_number
from labkit.rewards import correctness, extract_number, gold_answer

ROW = {"question": "q", "answer": "Step <<1000+234=1234>>1234.\n#### 1,234"}


def accuracy(rows, replies):
    return [s.score for s in gsm8k.score_replies(rows, replies) if s.metric == "accuracy"]


def test_target_answer_drops_commas():
    assert gsm8k.target_answer(ROW["answer"]) == "1234"
    assert gsm8k.target_answer("a\n#### -3") == "-3"
    assert gsm8k.target_answer("a\n#### 7.5 ") == "7.5"
    assert gsm8k.target_answer("a\n#### 18\n#### 5") == "18"   # the first ####, like the reader
    assert gsm8k.target_answer("a\n#### 1/2") == "0.5"


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
    ("1 234 in all", True),                              # space thousands
    ("1\u2009234", True),                                # thin space
    ("The answer is 1234 because 1000 + 234 = 1234", True),
    ("1234. Check: 1000 + 234 = 1234, 1234 - 234 = 1000", True),  # a trailing check is not the answer
    ("\\boxed{1234} since 1 + 1 = 2", True),
    ("#### 1234.0", True),                               # exact rationals: 1234.0 == 1234
    ("#### 1,23,4", False),                              # not a thousands grouping
])
def test_extraction_edge_cases(reply, right):
    assert accuracy([ROW], [reply]) == [float(right)]


@pytest.mark.parametrize(("answer", "reply", "right"), [
    ("#### 0.5", "Half: .5", True),                      # a decimal without a leading zero
    ("#### 0.5", "1/2 of it", True),                     # fractions are exact rationals
    ("#### 0.75", "\\boxed{\\dfrac{3}{4}}", True),
    ("#### 1.5", "1 1/2 cups", True),                    # a mixed number
    ("#### 2", "1/2", False),                            # was read as 2
    ("#### 12", "12% of them", True),                    # percent: the number as written
])
def test_fractions_and_decimals(answer, reply, right):
    assert accuracy([{"question": "q", "answer": answer}], [reply]) == [float(right)]


def harness(reply, answer=ROW["answer"]):
    """(strict_accuracy, flexible_accuracy) of one reply."""
    scores = gsm8k.score_replies([{"question": "q", "answer": answer}], [reply])
    return tuple(s.score for s in scores if s.metric in ("strict_accuracy", "flexible_accuracy"))


@pytest.mark.parametrize(("reply", "strict", "flexible", "ours"), [
    ("#### 1,234", 1, 1, 1),
    ("Working.\n#### 1234.", 1, 1, 1),                   # a final "." is ignored
    ("#### 1234.00", 0, 0, 1),                           # strings, not numbers, in the harness
    ("#### $1234", 0, 1, 1),                             # strict wants a digit right after "#### "
    ("####1234", 0, 1, 1),                               # ... and exactly "#### "
    ("The answer is 1,234.", 0, 1, 1),
    ("#### 1234\n\nQuestion: Tom has 5 apples.\n#### 5", 1, 0, 1),  # strict: first; flexible: last
    ("So 1234 apples. Done...", 0, 0, 1),                # flexible reads "..." as the last "number"
    ("\\boxed{1234}", 0, 1, 1),
    ("#### -1234", 0, 0, 0),
    ("I do not know", 0, 0, 0),
])
def test_strict_and_flexible_follow_lm_evaluation_harness(reply, strict, flexible, ours):
    assert harness(reply) == (float(strict), float(flexible))
    assert accuracy([ROW], [reply]) == [float(ours)]


def test_harness_readings():
    assert gsm8k.strict_answer("#### 18\n#### 5") == "18" and gsm8k.strict_answer("18") is None
    assert gsm8k.flexible_answer("It is 7, not $1,200.") == "$1,200."
    assert gsm8k.flexible_answer("none") is None
    assert gsm8k.harness_normalise("$1,200.") == "1200"
    assert gsm8k.harness_normalise("Step <<1000+234=1234>>1234.\n#### 1,234") == "1234"


def test_task_lists_every_metric_with_its_direction():
    assert [(m.name, m.higher_is_better) for m in gsm8k.TASK.metrics] == [
        ("accuracy", True), ("format", True), ("strict_accuracy", True), ("flexible_accuracy", True)]


# Replies that have tripped number readers, with the number each one states. The GSM8K eval, the RL
# `correctness` reward and the reward-hacking lab's final_number must all read the same number.
TRICKY = [
    (".5", "0.5"),
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{3}{4}", "0.75"),
    ("1 1/2 cups", "1.5"),
    ("1 234", "1234"),
    ("1,234", "1234"),
    ("3, 4", "4"),
    ("18. Check: 3 * 6 = 18, 2 + 4 = 6", "18"),
    ("The answer is 18 because 3 * 6 = 18", "18"),
    ("#### 18", "18"),
    ("\\boxed{18}", "18"),
    ("#### 18\n\nQuestion: Ann has 2 pens and buys 3 more. How many?\n#### 5", "18"),
    ("The answer is 12.\n\nQuestion: what is 2 + 3?\nThe answer is 5.", "12"),
    ("\\boxed{3} but #### 4", "4"),
    ("It costs $1,200.00.", "1200"),
    ("It drops to -12 degrees.", "-12"),
    ("$-3.50 each", "-3.5"),
    ("10-3", "3"),
    ("25% of them", "25"),
    ("1/3", "1/3"),
    ("It is 51.\nCheck: 40 + 14 = 54, not 51.\nRevised:\n40 + 14 = 54\n#### 54", "54"),
]
READERS = {
    "eval": lambda reply, gold: accuracy([{"question": "q", "answer": f"#### {gold}"}], [reply])[0],
    "reward": lambda reply, gold: correctness(["q"], [reply], answer=[gold])[0],
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(("reply", "number"), TRICKY)
def test_eval_and_reward_read_the_same_number(reader, reply, number):
    assert gsm8k.final_answer(reply) == extract_number(reply) == final_number(reply) == number
    assert READERS[reader](reply, number) == 1.0
    assert READERS[reader](reply, str(Fraction(number) + 1)) == 0.0


# Real GSM8K gold answers: the last lines of rows of the test split (github.com/openai/grade-school-math,
# grade_school_math/data/test.jsonl, MIT licence, Copyright (c) 2021 OpenAI), chosen for thousands commas,
# negatives, dollar signs, decimals, percents and divisions in the working. The full split is checked by
# scripts/check_gsm8k_gold.py (tests/eval/test_gsm8k_gold.py).
GOLD = [
    ('In total, that means Johnny picked up 500 + 1500+ 125= <<500+1500+125=2125>>2125 '
     'blocks\n#### 2,125',
     2125),  # row 146
    ('So in total he made 109,200+5,000=$<<109200+5000=114200>>114,200\n#### 114,200',
     114200),  # row 201
    ('So his total cost is 264,000+12,000=$<<264000+12000=276000>>276,000\n#### 276,000',
     276000),  # row 230
    ('Sue consumed 28*200=<<28*200=5600>>5,600 more calories.\n#### 5,600',
     5600),  # row 249
    ('He can make 1600 sticks if he buys the cheapest lumber because 1600 > 1200\n#### 1,600',
     1600),  # row 505
    ('It costs 95,060-29,100 = <<95060-29100=65960>>65,960 more dollars to repave Lewis’ '
     'street.\n#### 65,960',
     65960),  # row 610
    ('So the total cost was 1,350,000+100,000=$<<1350000+100000=1450000>>1,450,000\n#### '
     '1,450,000',
     1450000),  # row 611
    ('The average highest temperature recorded in Southlandia, Northlandia, and Midlandia is -10 '
     'degrees Fahrenheit.\n#### -10',
     -10),  # row 489
    ('It was -3 degrees Celsius in the morning.\n#### -3',
     -3),  # row 1113
    ('She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n#### 18',
     18),  # row 0
    ('So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000',
     70000),  # row 2
    ('So in total Kylar needs to pay 24 + 40 = $<<24+40=64>>64 for the glasses he wants to '
     'buy.\n#### 64',
     64),  # row 5
    ("Thus, Eliza will receive a total of $400 + $60 = $<<400+60=460>>460 for this week's "
     'work.\n#### 460',
     460),  # row 9
    ('Therefore the total amount Toula paid for the pastries was $204 + $160 + $330 = '
     '$<<204+160+330=694>>694.\n#### 694',
     694),  # row 11
    ('If he wants to maximize profit, since $125 > $96, he will choose to purchase jewelry, '
     'thereby making a profit of $<<125=125>>125\n#### 125',
     125),  # row 15
    ('Then multiply that number by the number of weeks Jill works in a year to find her annual '
     'salary: $1150/week * 50 weeks/year = $<<1150*50=57500>>57,500\n#### 57500',
     57500),  # row 17
    ('Therefore, Marie ordered $17/$8.50 = <<17/8.5=2>>2 boxes of pizza.\n#### 2',
     2),  # row 25
    ('If each carton costs $4.00 and she needs 4 containers then it will cost her 4*4 = '
     '$<<4*4=16.00>>16.00\n#### 16',
     16),  # row 27
    ('Each 4-pack is $5.00 and he needs 15 4-packs so he will spend $5*15 = $<<5*15=75.00>>75.00 '
     'on yogurt\n#### 75',
     75),  # row 36
    ('If he makes $40.00 selling candles and his supplies cost $20.00 then his net profit is '
     '40-20 = $<<40-20=20.00>>20.00\n#### 20',
     20),  # row 44
    ('He needs to remove 15 toys because 7.5 / .5 = <<15=15>>15\n#### 15',
     15),  # row 52
    ("His groceries were $40.00, there's a $10.00 fee plus another $7.00 in delivery/tip fees "
     'for a final total of $40 + $10 + $7 = $<<40+10+7=57.00>>57.00\n#### 57',
     57),  # row 58
    ('Each student pays $15.00 per class and there are 495 students so Judy makes 15*495 = '
     '$<<15*495=7425>>7,425\n#### 7425',
     7425),  # row 70
    ('This is 12/20 x 100% = 60% of the entire students.\n#### 60',
     60),  # row 14
    ('Then multiply that percentage by the total amount of the full pension to find how much she '
     'gets: $50,000 * 50% = $<<50000*50*.01=25000>>25,000\n#### 25000',
     25000),  # row 62
    ('Therefore, the percentage of semi-automatic cars is 4/20 x 100% = 20%.\n#### 20',
     20),  # row 140
    ('The difference between these two probabilities is 50% - 25% = 25%.\n#### 25',
     25),  # row 184
    ('They make 10% more per day because 1000 +(1000 x (X/100)) = 1,100 if X = 10\n#### 10',
     10),  # row 348
    ('Then divide her editing time by her total work time and multiply by 100% to express the '
     'answer as a percentage: 90 minutes / 450 minutes * 100% = 20%\n#### 20',
     20),  # row 393
    ('Then multiply that percentage by the number of candles to find the number of them that '
     'have both defects: 0.05% * 50000 candles = <<0.05*.01*50000=25>>25 candles\n#### 25',
     25),  # row 413
    ('The average distance for the two days is 460 miles / 2 trains = <<460/2=230>>230 '
     'miles/train\n#### 230',
     230),  # row 16
    ('So he runs 60/6=<<60/6=10>>10 mph.\n#### 10',
     10),  # row 38
]


@pytest.mark.parametrize(("answer", "number"), GOLD)
def test_real_gsm8k_gold_answers_read_right(answer, number):
    assert gold_answer(answer) == number and extract_number(answer) == str(number)
    assert gsm8k.target_answer(answer) == str(number)
    row = {"question": "q", "answer": answer}
    gsm8k.validate([row], "gold")
    assert [s.score for s in gsm8k.score_replies([row], [answer])] == [1.0] * 4  # every metric
    for reply in (f"#### {number}", f"The answer is {number:,}.", f"\\boxed{{{number}}}"):
        assert accuracy([row], [reply]) == [1.0], reply
    assert accuracy([row], [f"#### {number + 1}"]) == [0.0]


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
    assert [s.metric for s in scores[:5]] == ["accuracy", "format", "strict_accuracy", "flexible_accuracy",
                                              "accuracy"]
    by = {m: [s.score for s in scores if s.metric == m]
          for m in ("accuracy", "format", "strict_accuracy", "flexible_accuracy")}
    assert {m: sum(v) for m, v in by.items()} == {"accuracy": 20, "format": 20, "strict_accuracy": 10,
                                                  "flexible_accuracy": 20}
    assert all(len(v) == 40 for v in by.values())
    assert by["accuracy"][:4] == [1.0, 1.0, 0.0, 0.0] and by["format"][:4] == [1.0, 0.0, 1.0, 0.0]
    assert by["strict_accuracy"][:4] == [1.0, 0.0, 0.0, 0.0]
    assert by["flexible_accuracy"][:4] == by["accuracy"][:4]
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
    assert len(scores) == 4 * len(rows) and all(s.score == 1.0 for s in scores)


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


def test_auto_falls_back_to_the_shipped_real_items_when_the_hub_fails(monkeypatch):
    from labkit.eval.tasks import read_real

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    rows = gsm8k.load(EvalConfig(source="auto", limit=0))
    real = [r["question"] for r in read_real("gsm8k") if r.get("split", "test") == "test"]
    assert real and [r["question"] for r in rows] == real
    fixture = gsm8k.load(EvalConfig(source="fixture", limit=0))
    assert [r["question"] for r in fixture] == [r["question"] for r in read_fixture("gsm8k")
                                                if r["split"] == "test"]
    with pytest.raises(ConnectionError):
        gsm8k.load(EvalConfig(source="hub"))


@pytest.mark.parametrize(("row", "field"), [
    ({"question": "q"}, "answer"),
    ({"question": "q", "answer": "It is 4."}, "answer"),              # no #### line
    ({"question": "q", "answer": "#### four"}, "answer"),
    ({"question": "q", "answer": "It is 4.\n#### "}, "answer"),     # nothing after the marker
    ({"question": "q", "answer": "It is 4.\n#### 12:30"}, "answer"),  # not a number
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
    assert Counter(s.metric for s in out.scores) == {"accuracy": 3, "format": 3, "strict_accuracy": 3,
                                                     "flexible_accuracy": 3}
    assert all(s.score in (0.0, 1.0) for s in out.scores) and {s.id for s in out.scores} == {r["id"]
                                                                                             for r in rows}
    assert len(out.samples) == 3 and {"prompt", "output", "target", "extracted", "strict", "flexible",
                                      "score"} <= set(out.samples[0])
    assert out.info["shots"] == 0 and 0 <= out.info["cut_off"] <= 3
