"""Verifiable rewards: answer extraction edge cases, each reward in TRL's protocol,
the registry and playground."""

import pickle
from functools import partial

import pytest

from labkit.errors import ConfigError, DataError
from labkit.rewards import (
    REWARDS,
    PreflightError,
    completion_text,
    correctness,
    exact_match,
    extract_number,
    format_reward,
    get_rewards,
    length,
    length_reward,
    numbers_equal,
    playground,
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
    ("#### 5\nwait, #### 6", "6"),                           # the last ####
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
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize("text", ["", "no digits here", "#### ", "\\boxed{}"])
def test_extract_number_none(text):
    assert extract_number(text) is None


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
    ]
    assert format_reward(["p"] * 6, completions) == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
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
