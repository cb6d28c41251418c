"""The process reward: per-step verdicts from the worked-solution checker, folded into one reward three
ways."""

from __future__ import annotations

import pickle

import pytest

from labkit.errors import ConfigError
from labkit.reasoning.cot import cot_reply, verify_steps
from labkit.reasoning.process import fold, process_reward, step_verdicts

RIGHT = "40 + 30 = 70\n7 + 8 = 15\n70 + 15 = 85\n#### 85"
WRONG_MIDDLE = "40 + 30 = 70\n7 + 8 = 16\n70 + 16 = 86\n#### 85"   # 2 of 3 hold; the first is right


def test_step_verdicts_agree_with_verify_steps():
    for text in (RIGHT, WRONG_MIDDLE, cot_reply("7 * 12"), "no working\n#### 3", "2 + 3 * 4 = 14"):
        verdicts = step_verdicts(text)
        check = verify_steps(text)
        assert len(verdicts) == check["steps"]
        assert sum(v["correct"] for v in verdicts) == check["correct_steps"]
    assert [v["correct"] for v in step_verdicts(WRONG_MIDDLE)] == [True, False, True]
    assert step_verdicts(WRONG_MIDDLE)[1]["value"] == 15


@pytest.mark.parametrize("mode, right, wrong", [("fraction", 1.0, 2 / 3), ("all", 1.0, 0.0),
                                                ("prefix", 1.0, 1 / 3)])
def test_modes(mode, right, wrong):
    fn = process_reward(mode)
    got = fn(["q", "q"], [RIGHT, [{"role": "assistant", "content": WRONG_MIDDLE}]])
    assert got == pytest.approx([right, wrong])


def test_no_steps_pays_the_no_steps_value_and_bad_mode_is_refused():
    assert process_reward()(["q"], ["#### 85"]) == [0.0]
    assert process_reward(no_steps=0.5)(["q"], ["#### 85"]) == [0.5]
    assert fold([], "all", no_steps=0.25) == 0.25
    with pytest.raises(ConfigError, match="mode"):
        process_reward("steps")


def test_pickles_and_is_named_for_trl():
    fn = pickle.loads(pickle.dumps(process_reward("prefix")))
    assert fn.__name__ == "process" and fn.mode == "prefix"
