"""RL pre-flight checks: each failure is provoked once and its message must say what is wrong and what to
do."""

import math

import pytest

from labkit.data.chat import render
from labkit.errors import DataError, LabkitError
from labkit.rewards import (
    PreflightError,
    PreflightReport,
    check_prompts_templated,
    check_reward_output,
    check_rollouts,
    correctness,
    format_reward,
    preflight,
)
from labkit.rewards.preflight import template_framing

MESSAGES = [[{"role": "user", "content": f"What is {a} + {b}?"}]
            for a, b in [(2, 2), (3, 4), (10, 5), (7, 1)]]
ANSWERS = ["4", "7", "15", "8"]


@pytest.fixture
def chatty(tiny):
    """The tiny random model with its end-of-turn logit raised, so sampled replies end after 1-8 tokens.

    A random model almost never emits EOS by chance; with +3 on its logit (against the top-50 sampling
    pool) about half the replies end within 8 tokens, at lengths that differ, deterministically per seed.
    """
    model, tok = tiny

    def raise_eos(module, inputs, logits):  # logits [B, T, V]
        logits = logits.clone()
        logits[..., tok.eos_token_id] += 3.0
        return logits

    model.lm_head.register_forward_hook(raise_eos)
    return model, tok


def by_length(prompts, completions, completion_ids, **kwargs):
    """A reward that varies within groups: 1 for a reply of at most 3 tokens."""
    return [1.0 if len(ids) <= 3 else 0.0 for ids in completion_ids]


# ---------------------------------------------------------------------------------------------- prompts

def test_framing_comes_from_the_template(tokenizer):
    header, generation = template_framing(tokenizer)
    text = render(tokenizer, MESSAGES[0], add_generation_prompt=True)
    assert header and header in text
    assert generation and text.endswith(generation)
    assert "What is" not in header + generation


def test_untemplated_string_prompt_is_named(tokenizer):
    templated = render(tokenizer, MESSAGES[0], add_generation_prompt=True)
    check_prompts_templated(tokenizer, [templated])  # passes
    check_prompts_templated(tokenizer, MESSAGES)      # message lists are templated by the trainer
    with pytest.raises(PreflightError) as err:
        check_prompts_templated(tokenizer, [templated, "What is 2 + 2? Think step by step, then answer."])
    msg = str(err.value)
    assert err.value.check == "prompt_template"
    assert "row 1" in msg and "What is 2 + 2? Think" in msg
    assert "add_generation_prompt=True" in msg and "message lists" in msg


def test_templated_prompt_without_generation_prompt(tokenizer):
    without = render(tokenizer, MESSAGES[0])
    with pytest.raises(PreflightError, match="row 0.*generation prompt"):
        check_prompts_templated(tokenizer, [without])


def test_message_prompts_need_a_chat_template(tokenizer):
    saved = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        with pytest.raises(DataError, match="chat_template"):
            check_prompts_templated(tokenizer, MESSAGES)
        check_prompts_templated(tokenizer, ["raw text for a base model"])  # nothing to template with
    finally:
        tokenizer.chat_template = saved


def test_mixed_prompt_kinds(tokenizer):
    with pytest.raises(PreflightError, match="mixes plain strings and message lists"):
        check_prompts_templated(tokenizer, [MESSAGES[0], "plain"])


# ------------------------------------------------------------------------------------------ reward output

def test_reward_output_wrong_length():
    with pytest.raises(PreflightError) as err:
        check_reward_output(correctness, [1.0, 0.0], 4)
    assert err.value.check == "reward_output"
    assert ("'correctness'" in str(err.value) and "length 2" in str(err.value)
            and "expected 4" in str(err.value))


def test_reward_output_a_string():
    with pytest.raises(PreflightError, match="'correctness'.*returned str '1.0'.*list of 2 floats"):
        check_reward_output(correctness, "1.0", 2)


def test_reward_output_list_of_strings():
    with pytest.raises(PreflightError, match="returned str '0' at index 1.*float\\(...\\)"):
        check_reward_output(correctness, [1.0, "0"], 2)


def test_reward_output_bool_is_not_a_number():
    with pytest.raises(PreflightError, match="bool True at index 0"):
        check_reward_output(correctness, [True, 0.0], 2)


def test_reward_output_nan_and_inf():
    with pytest.raises(PreflightError, match="returned nan at index 2.*finite"):
        check_reward_output(correctness, [1.0, 0.0, math.nan], 3)
    with pytest.raises(PreflightError, match="returned -inf at index 0"):
        check_reward_output(correctness, [-math.inf], 1)


def test_reward_output_none():
    assert check_reward_output(correctness, [None, 1], 2) == [None, 1.0]
    with pytest.raises(PreflightError, match="None for all 2"):
        check_reward_output(correctness, [None, None], 2)


def test_reward_output_tensors_and_arrays():
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    assert check_reward_output(correctness, torch.tensor([1.0, 0.5]), 2) == [1.0, 0.5]
    assert check_reward_output(correctness, np.array([1, 0]), 2) == [1.0, 0.0]
    with pytest.raises(PreflightError, match="2-D Tensor of shape \\(2, 1\\)"):
        check_reward_output(correctness, torch.ones(2, 1), 2)


def test_preflight_error_is_a_labkit_error():
    assert issubclass(PreflightError, LabkitError)
    err = PreflightError("truncation", "why")
    assert err.check == "truncation" and "truncation" in str(err) and "why" in str(err)


# ----------------------------------------------------------------------------------------------- rollouts

def test_check_rollouts_passes_with_warnings():
    # 4 groups of 2: 3 of 4 truncated, 3 of 4 groups with equal rewards.
    finished = [True, False, False, False, False, False, False, False]
    rewards = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.5]
    stats = check_rollouts(finished, rewards, 2, max_completion_length=16)
    assert stats["truncation_rate"] == pytest.approx(7 / 8)
    assert stats["reward_mean"] == pytest.approx(4 / 8)
    assert stats["zero_variance_groups"] == pytest.approx(3 / 4)
    assert stats["group_stds"] == pytest.approx([0.5, 0.0, 0.0, 0.0])
    assert len(stats["warnings"]) == 2
    assert "truncated at 16 tokens" in stats["warnings"][0]
    assert "zero reward variance" in stats["warnings"][1]


def test_check_rollouts_clean_has_no_warnings():
    stats = check_rollouts([True] * 4, [1.0, 0.0, 0.0, 1.0], 2, max_completion_length=8)
    assert stats["warnings"] == [] and stats["zero_variance_groups"] == 0.0


def test_check_rollouts_order():
    # Everything is wrong at once: truncation is reported first, then the missing signal.
    with pytest.raises(PreflightError, match="truncation"):
        check_rollouts([False] * 4, [0.0] * 4, 2, max_completion_length=8)
    with pytest.raises(PreflightError, match="reward_signal"):
        check_rollouts([True] * 4, [0.0] * 4, 2, max_completion_length=8)
    with pytest.raises(PreflightError, match="reward_variance"):
        check_rollouts([True] * 4, [1.0, 1.0, 0.0, 0.0], 2, max_completion_length=8)


# ---------------------------------------------------------------------------------- preflight end to end

def test_preflight_passes_and_reports(chatty):
    model, tok = chatty
    seen = {}

    def spy(prompts, completions, completion_ids, answer, trainer_state, **kwargs):
        seen.update(prompts=prompts, completions=completions, answer=answer, step=trainer_state.global_step)
        return [0.0] * len(completions)

    report = preflight(model, tok, MESSAGES + MESSAGES, [by_length, format_reward, spy],
                       columns={"answer": ANSWERS + ANSWERS}, num_generations=4, max_completion_length=8,
                       probe_prompts=3)
    assert isinstance(report, PreflightReport)
    # TRL's layout: the G completions of a prompt are consecutive, columns repeated alongside.
    assert len(seen["completions"]) == 12
    assert seen["answer"] == ["4"] * 4 + ["7"] * 4 + ["15"] * 4
    assert seen["prompts"][4] == MESSAGES[1] and seen["step"] == 0
    assert all(c[0]["role"] == "assistant" for c in seen["completions"])  # conversational completions
    assert set(report.reward_means) == {"by_length", "format", "spy"}
    assert 0 < report.reward_mean < 1 and report.truncation_rate < 1
    assert len(report.group_stds) == 3 and len(report.samples) == 8
    assert "pre-flight passed" in str(report) and "<table>" in report._repr_html_()
    assert set(report.table()[0]) == {"prompt", "completion", "by_length", "format", "spy", "total"}


def test_preflight_string_prompts_are_not_templated_twice(chatty):
    model, tok = chatty
    templated = [render(tok, m, add_generation_prompt=True) for m in MESSAGES]
    seen = []

    def strings(prompts, completions, **kwargs):
        seen.extend(completions)
        return by_length(prompts, completions, **kwargs)

    report = preflight(model, tok, templated, [strings], num_generations=4, max_completion_length=8)
    assert all(isinstance(c, str) for c in seen)
    assert report.samples[0]["prompt"] == templated[0]  # the model saw the prompt as given


def test_preflight_untemplated_prompt(tiny):
    model, tok = tiny
    with pytest.raises(PreflightError, match="row 0 is a plain string.*What is 2 \\+ 2"):
        preflight(model, tok, ["What is 2 + 2?"], [correctness], columns={"answer": ["4"]})


def test_preflight_reward_wrong_length(chatty):
    model, tok = chatty

    def one_per_prompt(prompts, completions, **kwargs):
        return [1.0] * (len(completions) // 4)

    with pytest.raises(PreflightError, match="'one_per_prompt'.*length 2, expected 8"):
        preflight(model, tok, MESSAGES[:2], [one_per_prompt], num_generations=4, max_completion_length=4)


def test_preflight_reward_that_raises(chatty):
    model, tok = chatty
    # A labkit error already says what to do, so it passes through as is.
    with pytest.raises(DataError, match="'correctness' reward needs a dataset column 'answer'"):
        preflight(model, tok, MESSAGES[:2], [correctness], num_generations=2, max_completion_length=4)

    def typo(prompts, completions, **kwargs):
        return [float(kwargs["answer"][i] in str(c)) for i, c in enumerate(completions)]  # no `answer` column

    with pytest.raises(PreflightError, match="'typo' raised KeyError.*columns \\[\\]"):
        preflight(model, tok, MESSAGES[:2], [typo], num_generations=2, max_completion_length=4)


def test_preflight_all_truncated(tiny):
    model, tok = tiny  # no EOS boost: 2 tokens from a random model never reach the end of turn

    def sometimes(prompts, completions, **kwargs):
        return [float(i % 2) for i in range(len(completions))]

    with pytest.raises(PreflightError) as err:
        preflight(model, tok, MESSAGES, [sometimes], num_generations=4, max_completion_length=2)
    assert err.value.check == "truncation"
    assert "max_completion_length=2" in str(err.value) and "all 16" in str(err.value)
    assert "shorter answers" in str(err.value)


def test_preflight_reward_never_nonzero(chatty):
    model, tok = chatty

    def zero(prompts, completions, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(PreflightError) as err:
        preflight(model, tok, MESSAGES, [zero], num_generations=4, max_completion_length=8)
    assert err.value.check == "reward_signal"
    assert "cannot teach anything" in str(err.value) and "playground" in str(err.value)


def test_preflight_zero_variance_everywhere(chatty):
    model, tok = chatty

    def constant(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    with pytest.raises(PreflightError) as err:
        preflight(model, tok, MESSAGES, [constant], num_generations=4, max_completion_length=8)
    assert err.value.check == "reward_variance"
    msg = str(err.value)
    assert "advantages" in msg and "no gradient" in msg and "temperature" in msg and "partial" in msg


def test_preflight_weights_enter_the_total(chatty):
    model, tok = chatty

    def constant(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    # by_length weighted 0 leaves a constant total: no variance, whatever by_length says.
    with pytest.raises(PreflightError, match="reward_variance"):
        preflight(model, tok, MESSAGES, [constant, by_length], reward_weights=[1.0, 0.0],
                  max_completion_length=8)
    report = preflight(model, tok, MESSAGES, [constant, by_length], reward_weights=[1.0, 1.0],
                       max_completion_length=8)
    assert report.reward_mean > 1.0
