"""Verifiable rewards: the answer reader (numbers, markers, references by type), each reward in TRL's
protocol, the registry and playground."""

import pickle
from fractions import Fraction
from functools import partial

import pytest

from labkit.errors import ConfigError, DataError
from labkit.rewards import (
    REWARDS,
    PreflightError,
    answer_text,
    completion_text,
    correctness,
    exact_match,
    extract_number,
    format_number,
    format_reward,
    get_rewards,
    gold_answer,
    is_correct,
    length,
    length_reward,
    numbers_equal,
    parse_number,
    playground,
    read_answer,
    repetition,
    repetition_penalty,
    score_completions,
)


def conv(text):
    """A TRL conversational completion."""
    return [{"role": "assistant", "content": text}]


# ------------------------------------------------------------------------------------------- extraction

@pytest.mark.parametrize("text, expected", [
    ("#### 54", "54"),
    ("first 3 then 4\n#### 12", "12"),                       # #### beats a later/earlier plain number
    ("#### 5\nwait, #### 6", "5"),                           # the first ####, as the GSM8K eval reads it
    ("#### 7\nso the total was 9", "7"),                     # #### wins even when numbers follow it
    ("the answer is \\boxed{42} (not 7)", "42"),             # boxed beats the last number
    ("\\boxed{1} or rather \\boxed{2}", "2"),                # the last boxed
    ("\\boxed{3} but #### 4", "4"),                          # #### beats boxed
    ("We add 2 and 3 to get 5", "5"),                        # last number
    ("1,234", "1234"),                                       # thousands commas
    ("#### 1,234,567", "1234567"),
    ("it is -5", "-5"),                                      # negatives
    ("#### -12", "-12"),
    ("10-3", "3"),                                           # a binary minus is not a sign
    ("3.50", "3.5"),                                         # decimals, trailing zeros dropped
    ("4.0", "4"),
    ("-0.50", "-0.5"),
    ("$12", "12"),                                           # currency
    ("It costs $1,200.00.", "1200"),
    ("12 apples", "12"),                                     # units
    ("12%", "12"),
    ("The answer is 7.", "7"),                               # sentence full stop
    ("007", "7"),                                            # leading zeros
    ("-0", "0"),
    ("1, 2, 3", "3"),                                        # a list is not a thousands number
    ("3, 4", "4"),
    ("1,2345", "2345"),                                      # not a thousands group: two numbers
    ("1,234.5", "1234.5"),
    ("1\u2009234", "1234"),                                  # thin space
    ("1\u00a0234\u00a0567", "1234567"),                      # no-break spaces
    ("1 234 567 people", "1234567"),
    ("0.5", "0.5"),
    ("It is 2.5.", "2.5"),
    ("-.5", "-0.5"),
    ("v1.2.3", "3"),                                         # a version is not a decimal
    ("\\dfrac{3}{4}", "0.75"),                                # LaTeX fractions, exact
    ("\\tfrac{1}{4}", "0.25"),
    ("\\frac12", "0.5"),
    ("\\frac{-3}{4}", "-0.75"),
    ("-\\frac{3}{4}", "-0.75"),
    ("1/3", "1/3"),                                          # no finite decimal: stays a fraction
    ("\\boxed{\\frac{1}{3}}", "1/3"),                          # nested braces in a box
    ("2 3/4 cups", "2.75"),                                  # mixed numbers
    ("-1 1/2", "-1.5"),
    ("3 4/2", "2"),                                          # an improper "fraction" is not a mixed number
    ("3/4/2020", "2020"),                                    # a date is not a fraction
    ("It took 17/8.5 hours", "8.5"),                         # a decimal denominator is not a fraction
    ("$-12", "-12"),
    ("-$12", "-12"),
    ("\u22125 degrees", "-5"),                               # the Unicode minus sign
    ("€3.50", "3.5"),
    ("25% of them", "25"),                                   # percent: the number as written (documented)
    ("#### **18**", "18"),                                   # markdown bold after the marker
    ("#### The total is 7", "7"),                            # a marker without a number falls through
    ("The answer is 18 because 3 * 6 = 18", "18"),           # the stated answer before its reason
    ("Final answer: 42. That used 6 * 7 = 42 and 2 + 4 = 6", "42"),
    ("**Answer:** $18", "18"),
    ("Final Answer: The final answer is 18. I hope it is correct.", "18"),
    ("The answer is 12.\nThe answer is 14.", "12"),          # the first stated answer
    ("18. Check: 3 * 6 = 18, 2 + 4 = 6", "18"),              # a trailing check is not the answer
    ("So 5 + 3 = 8.\nLet me verify: 8 - 3 = 5.", "8"),
    ("Check: 3 * 6 = 18. So the total is 18.", "18"),        # a check with no answer before it
    ("\\boxed{x = 5}", "5"),                                  # a box: after its last "="
    ("\\boxed{18 \\text{ cm}^2}", "18"),                       # ... else its first number
    ("12 \\boxed{}", "12"),                                  # an empty box falls through
    ("It is 51.\nCheck: 40 + 14 = 54, not 51.\nRevised:\n40 + 14 = 54\n#### 54", "54"),  # reflection
    ("#### 51\nRevised:\n#### 54", "54"),                    # a revision replaces the first answer
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


# The cases an independent review found, each its own case (issue 14): what they read as before -> now.
@pytest.mark.parametrize("text, expected", [
    pytest.param(".5", "0.5", id="leading-dot-decimal"),                     # was 5
    pytest.param("1/2", "0.5", id="fraction"),                                # was 2
    pytest.param("\\frac{1}{2}", "0.5", id="latex-fraction"),                  # was 2
    pytest.param("1 234", "1234", id="space-thousands"),                      # was 234
    pytest.param("18. Check: 3 * 6 = 18, 2 + 4 = 6", "18", id="trailing-check"),   # was 6
    pytest.param("#### 18\n\nQuestion: Tom has 5.\n#### 5", "18", id="first-hash"),  # reward read 5
])
def test_review_cases(text, expected):
    assert extract_number(text) == expected
    assert correctness(["p"], [text], answer=[expected]) == [1.0]


@pytest.mark.parametrize("gold, reply", [
    pytest.param("12:30", "It ends at 12:30, so 30", id="time-gold-not-last-number"),   # was paid
    pytest.param("1/2", "Half of 4 is 2", id="fraction-gold-not-last-number"),          # was paid
    pytest.param("12:30", "#### 30", id="time-gold-marker"),
])
def test_review_gold_is_not_read_by_the_last_number_rule(gold, reply):
    assert correctness(["p"], [reply], answer=[gold]) == [0.0]


@pytest.mark.parametrize("text", ["", "no digits here", "#### ", "\\boxed{}", "\\frac{1}{0}",
                                  "Revised:\nI am not sure"])
def test_extract_number_none(text):
    assert extract_number(text) is None


def test_read_answer_is_exact_and_marker_only_reads_only_the_marker():
    assert read_answer("\\frac{2}{4}") == Fraction(1, 2) == read_answer("0.5")
    assert read_answer("1/3") == Fraction(1, 3) and isinstance(read_answer("#### 4.0"), Fraction)
    assert read_answer("It is 12", marker_only=True) is None
    assert read_answer("it is 3 #### 012 and #### 4", marker_only=True) == 12


@pytest.mark.parametrize("text, value", [
    ("1,234", 1234), ("-3", -3), (".5", Fraction(1, 2)), ("1/2", Fraction(1, 2)), ("$4.50", Fraction(9, 2)),
    ("25%", 25), ("7.", 7), (" 1 1/2 ", Fraction(3, 2)), ("\\dfrac{3}{4}", Fraction(3, 4)), (54, 54),
    (0.1, Fraction(1, 10)), (Fraction(2, 4), Fraction(1, 2)),
    ("12:30", None), ("18 apples", None), ("x = 5", None), ("3, 4", None), ("", None), (None, None),
    (True, None), ("#### 5", None),
])
def test_parse_number_reads_exactly_one_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("value, text", [
    (Fraction(1234), "1234"), (Fraction(-1, 2), "-0.5"), (Fraction(1, 8), "0.125"), (Fraction(7, 3), "7/3"),
    (Fraction(0), "0"), (Fraction(-1, 3), "-1/3"), (Fraction(1, 100), "0.01"),
])
def test_format_number(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize("gold, expected", [
    ("54", Fraction(54)), ("1/2", Fraction(1, 2)), ("working\n#### 1,234", Fraction(1234)),
    ("#### -3", Fraction(-3)), (7, Fraction(7)), ("12:30", "12:30"), (" Paris. ", "paris"),
    ("#### 18\n#### 5", Fraction(18)),
])
def test_gold_answer_keeps_its_own_type(gold, expected):
    assert gold_answer(gold) == expected


@pytest.mark.parametrize("gold", [None, "", "   ", "#### "])
def test_an_empty_reference_fails_loudly(gold):
    with pytest.raises(DataError, match="empty"):
        gold_answer(gold)
    with pytest.raises(DataError, match="row 1, field 'answer'"):
        correctness(["p", "p"], ["#### 1", "#### 1"], answer=["1", gold])


@pytest.mark.parametrize("reply, gold, right", [
    ("#### 12:30", "12:30", True),                  # non-numeric references compare as normalised text
    ("The answer is 12:30.", "12:30", True),
    ("12:30", "12:30", True),
    ("\\boxed{Paris}", "paris", True),
    ("It is 12:30", "12:30", False),                # no stated answer: the whole reply must be it
    ("The answer is 1/2.", "1/2", True),            # a fraction reference is a number
    ("The answer is 0.5.", "1/2", True),
    ("#### 2/4", "0.5", True),
    ("#### 18.0", "18", True),
    ("\\boxed{\\dfrac{1}{2}}", "0.50", True),
    ("1 1/2 cups", "3/2", True),
    ("#### 2", "1/2", False),
    ("#### 0.33", "1/3", False),                    # exact: no rounding tolerance
])
def test_is_correct_compares_by_the_references_type(reply, gold, right):
    assert is_correct(reply, gold) is right
    assert correctness(["p"], [reply], answer=[gold]) == [float(right)]


def test_answer_text():
    assert answer_text("#### 12:30 pm\nmore") == "12:30 pm"
    assert answer_text("The answer is Paris. It is in France.") == "Paris"
    assert answer_text("  just this  ") == "just this"
    assert answer_text("") is None


def test_extract_number_reads_a_message_list():
    assert extract_number(conv("so #### 8")) == "8"


def test_completion_text():
    assert completion_text("plain") == "plain"
    assert completion_text(conv("hi")) == "hi"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}]) == "ab"
    with pytest.raises(DataError, match="completion must be a string or a list of messages"):
        completion_text(3)


@pytest.mark.parametrize("a, b, equal", [
    ("54", "54", True), ("54.0", "54", True), ("-3", "-3", True), ("1,234", "1234", True),
    ("53", "54", False), (None, "54", False), ("0.5", "0.50", True),
    ("0.5", "1/2", True), ("2/4", "0.5", True), ("18", "18.0", True), ("1.5", "1 1/2", True),
    ("0.1", 0.1, True), ("54", "#### 54", True), ("1/3", "0.333", False),
    ("30", "12:30", False), ("2", "1/2", False), ("12:30", "12:30", True),  # the reference's own type
    ("The answer is 54", "54", False),  # `a` is an extracted answer, not a reply to read
])
def test_numbers_equal(a, b, equal):
    assert numbers_equal(a, b) is equal


# ---------------------------------------------------------------------------------------------- rewards

def test_correctness_strings_and_conversational():
    prompts = ["What is 40 + 14?"] * 4
    completions = ["40 + 14 = 54", "#### 54", "I think 45.", "The answer is $54.00."]
    assert correctness(prompts, completions, answer=["54"] * 4) == [1.0, 1.0, 0.0, 1.0]
    assert correctness(prompts, [conv(c) for c in completions], answer=["54"] * 4) == [1.0, 1.0, 0.0, 1.0]


def test_correctness_ignores_trl_extras_and_needs_answer():
    out = correctness(["p"], ["#### 3"], answer=["3"], completion_ids=[[1, 2]], trainer_state=None)
    assert out == [1.0]
    with pytest.raises(DataError, match="'answer'"):
        correctness(["p"], ["#### 3"])


def test_exact_match():
    completions = [" 54\n", "54.", "#### 54", conv("54")]
    assert exact_match(["p"] * 4, completions, answer=["54"] * 4) == [1.0, 0.0, 0.0, 1.0]


def test_format_reward():
    completions = [
        "40 + 14 = 54\n#### 54",     # ends on the answer line
        "#### 54\n",                 # trailing newline is fine
        "#### 54 and more words",    # #### somewhere, not a clean final line
        "so \\boxed{54}",            # boxed
        "the answer is 54",          # no marker
        "#### \n",                   # marker without a number
        "work\n#### 1/2",            # any one number on the answer line
        "so \\boxed{\\frac{1}{2}}",     # a box with a fraction
    ]
    assert format_reward(["p"] * 8, completions) == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 1.0, 0.5]
    assert format_reward(["p"], [conv("x\n#### -3")]) == [1.0]


def test_length_penalty_linear_past_budget():
    fn = length_reward(max_tokens=4)
    texts = ["a b", "a b c d", "a b c d e f", "a " * 8, "a " * 20]
    assert fn(["p"] * 5, texts) == [0.0, 0.0, -0.5, -1.0, -1.0]


def test_length_penalty_uses_completion_ids_when_given():
    fn = length_reward(max_tokens=2)
    # One word, but three tokens: the ids decide.
    assert fn(["p"], ["word"], completion_ids=[[5, 6, 7]]) == [-0.5]
    assert fn(["p"], ["word"]) == [0.0]
    with pytest.raises(ConfigError, match="max_tokens"):
        length_reward(0)


def test_repetition_penalty():
    assert repetition(["p"], ["the cat sat on the mat"]) == [0.0]
    assert repetition(["p"], ["hi"]) == [0.0]  # fewer words than n
    # "a b a b a b": trigrams aba, bab, aba, bab -> 2 of 4 repeat an earlier one.
    assert repetition(["p"], ["a b a b a b"]) == [-0.5]
    assert repetition_penalty(n=1)(["p"], [conv("x x x x")]) == [-0.75]


def test_names_are_what_trl_logs():
    assert {name: fn.__name__ for name, fn in REWARDS.items()} == {n: n for n in REWARDS}
    assert length.__name__ == "length" and length_reward(10).__name__ == "length"
    assert format_reward.__name__ == "format"
    assert format is not format_reward  # the builtin is untouched


def test_rewards_pickle():
    # TRL may ship reward functions to worker processes.
    for fn in [*REWARDS.values(), length_reward(7)]:
        again = pickle.loads(pickle.dumps(fn))
        assert again.__name__ == fn.__name__
        assert again(["p"], ["#### 1"], answer=["1"]) == fn(["p"], ["#### 1"], answer=["1"])


def test_get_rewards():
    assert get_rewards(["format", "correctness"]) == [format_reward, correctness]
    with pytest.raises(ConfigError, match="unknown reward 'accuracy'.*correctness, exact_match, format"):
        get_rewards(["correctness", "accuracy"])


# -------------------------------------------------------------------------------- scoring and playground

def test_score_completions_weights_and_none():
    def sometimes(prompts, completions, **kw):
        return [None, 2.0]

    scored = score_completions([correctness, sometimes], ["p", "p"], ["#### 1", "#### 2"],
                               weights=[1.0, 0.5], answer=["1", "1"])
    assert scored["per_function"] == {"correctness": [1.0, 0.0], "sometimes": [None, 2.0]}
    assert scored["total"] == [1.0, 1.0]


def test_score_completions_keeps_repeated_names_apart():
    short, long = length_reward(1), length_reward(100)
    scored = score_completions([short, long, partial(correctness)], ["p"], ["a b c"], answer=["1"])
    assert scored["per_function"] == {"length": [-1.0], "length#2": [0.0], "correctness": [0.0]}


def test_score_completions_names_a_broken_function():
    def broken(prompts, completions, **kw):
        return [1.0]

    with pytest.raises(PreflightError, match="'broken'.*length 1, expected 2"):
        score_completions([broken], ["p", "p"], ["a", "b"])
    with pytest.raises(ConfigError, match="reward_weights"):
        score_completions([correctness], ["p"], ["a"], weights=[1, 2], answer=["1"])


def test_playground_rows():
    rows = playground([correctness, format_reward, length_reward(4)], "What is 40 + 14?",
                      ["#### 54", "It is 54 apples, I am quite sure of that.", "\\boxed{45}"], answer="54")
    assert [r["completion"] for r in rows][0] == "#### 54"
    assert [r["correctness"] for r in rows] == [1.0, 1.0, 0.0]
    assert [r["format"] for r in rows] == [1.0, 0.0, 0.5]
    assert [r["length"] for r in rows] == [0.0, -1.0, 0.0]
    assert [r["total"] for r in rows] == [2.0, 0.0, 0.5]
    assert [r["extracted"] for r in rows] == ["54", "54", "45"]
    assert list(rows[0]) == ["completion", "correctness", "format", "length", "total", "extracted"]


def test_playground_conversational():
    prompt = [{"role": "user", "content": "What is 2 + 2?"}]
    rows = playground([correctness, repetition], prompt, [conv("#### 4"), conv("5 5 5 5 5")], answer="4")
    assert [(r["completion"], r["correctness"], r["extracted"]) for r in rows] == [("#### 4", 1.0, "4"),
                                                                                  ("5 5 5 5 5", 0.0, "5")]
    assert rows[0]["repetition"] == 0.0
    assert rows[1]["repetition"] == pytest.approx(-2 / 3)  # three identical trigrams: two repeat the first
