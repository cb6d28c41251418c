"""labkit.exercises: every check accepts its right answer, rejects the common wrong ones with a reason,
and says "not answered yet" to the untouched notebook; plus the machinery (hints, errors, ids)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit import exercises as ex
from labkit.config import SFTConfig
from labkit.errors import ConfigError
from labkit.eval.gates import Gate, Rule
from labkit.reasoning.cot import verify_steps
from labkit.rewards.verifiable import correctness
from labkit.runs.nightly import higher, lower

N_PARAMS = 134_515_008
CONVERSATION = [{"role": "user", "content": "What is 3 + 4?"}, {"role": "assistant", "content": "7"}]
BASE_CFG = SFTConfig(max_steps=8)
CONTEXT = {"00.1": {"n_params": N_PARAMS}, "00.2": {"original": CONVERSATION}, "01.2": {"base": BASE_CFG},
           "00b.1": {"zero_shot": 40.0, "few_shot": 160.0}}
INSTRUCTION = {"role": "system", "content": "Show the sum, then a last line #### n."}


def _hash_line(prompts, completions, **kw):
    import re
    return [1.0 if (lines := c.strip().splitlines()) and re.fullmatch(r"####\s*-?\d+", lines[-1].strip())
            else 0.0 for c in completions]


def _rloo(rewards, g):
    out = []
    for i in range(0, len(rewards), g):
        grp = rewards[i:i + g]
        out += [r - (sum(grp) - r) / (g - 1) for r in grp]
    return out


def _step_reward(prompts, completions, answer, **kw):
    right = correctness(prompts, completions, answer=answer)
    return [float(r == 1.0 and verify_steps(c)["all_correct"]) for r, c in zip(right, completions)]


def _not_implemented(*args, **kwargs):
    raise NotImplementedError("your code")


RIGHT = {
    "00.1": N_PARAMS * 4 / 1e6,
    "00.2": [{"role": "system", "content": "Answer briefly."}, *CONVERSATION],
    "00b.1": 120_000,
    "00b.2": lambda row: [INSTRUCTION, *row["messages"][:-1]],
    "01.1": "b",
    "01.2": BASE_CFG.replace(method="full", max_steps=4),
    "02.1": 9216,
    "02.2": lambda r, shapes: sum(r * (o + i) for o, i in shapes.values()),
    "03.1": 0.731,
    "03.2": lambda c, r: -F.logsigmoid(c - r).mean(),
    "04.1": "c",
    "04.2": lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean(),
    "05.1": [0.866, -0.866, -0.866, 0.866],
    "05.2": _hash_line,
    "06.1": "a",
    "06.2": _rloo,
    "07.1": 0.684,
    "07.2": _step_reward,
    "08.1": 0.136,
    "08.2": Gate([Rule("safety", "refusal_rate", min=0.9), Rule("gsm8k", "accuracy", max_regression=0.02)]),
    "09.1": 2 * 30 * 3 * 64 * 2 * 32 * 2048 / 2**20,
    "09.2": 1 - 152 / 320,
    "09.3": lambda a, k, c: (1 - a ** (k + 1)) / ((1 - a) * (1 + k * c)),
    "09.4": lambda e, t, eps: ((t - e).exp() - 1).abs().gt(eps).float().mean(),
    "10.1": "b",
    "10.2": lower(2.31, tol="10%"),
    "11.1": 768,
    "11.2": lambda x, w, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w,
    "12.1": 16 * 1_543_714_304 / 2**30,
    "12.2": 3,
    "12.3": lambda logp, behaviour, cap: torch.exp(logp - behaviour).clamp(max=cap),
    "12.4": lambda w, u: ((w.float() + u).to(torch.bfloat16) != w).float().mean(),
    "13.1": math.log(16) - 15 / 16,
    "13.2": (0.70 - 0.56) / (1 - 0.56),
    "13.3": lambda p_a1, p_a2: (p_a1 + 1 - p_a2) / 2,
    "13.4": lambda s: (s.index(False) if False in s else len(s)) / len(s) if s else 0.0,
}

# (wrong answer, a phrase the reason must contain): the mistakes each check names.
WRONG = {
    "00.1": [(N_PARAMS * 2 / 1e6, "bf16"), (N_PARAMS / 1e6, "parameter count"),
             ("a lot", "expected megabytes")],
    "00.2": [(CONVERSATION, "no turn with role 'system'"),
             ([*CONVERSATION, {"role": "system", "content": "x"}], "must come first"),
             ([{"role": "system", "content": " "}, *CONVERSATION], "empty")],
    "00b.1": [(160_000, "extra ones"), (120, "1000 questions"), ("many", "expected a number")],
    "00b.2": [(lambda row: row["messages"][:-1], "first turn"),
              (lambda row: [{"role": "system", "content": "Be brief."}, *row["messages"][:-1]], "####"),
              (lambda row: [INSTRUCTION, *row["messages"]], "never the answer"),
              ("Answer with ####", "expected a function")],
    "01.1": [("a", "loss_on='all'"), ("c", "whole reply"), ("z", "answer with one of")],
    "01.2": [(BASE_CFG.replace(max_steps=4), "method is 'lora'"),
             (BASE_CFG.replace(method="full"), "max_steps is 8"),
             (BASE_CFG.replace(method="full", max_steps=4, learning_rate=1e-3), "learning_rate"),
             ({"method": "full"}, "expected a SFTConfig")],
    "02.1": [(576 * 576, "frozen"), (8 * 576, "one of the two factors"), (9000, "is not")],
    "02.2": [(lambda r, shapes: sum(r * 2 * o for o, i in shapes.values()), "non-square"),
             (lambda r, shapes: sum(o * i for o, i in shapes.values()), "one square layer"),
             (42, "expected a function")],
    "03.1": [(0.269, "rejected"), (0.5, "equal rewards"), (1, "never makes a preference certain")],
    "03.2": [(lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), "200 apart"),
             (lambda c, r: -F.logsigmoid(c - r), "0-d tensor"),
             (lambda c, r: -F.logsigmoid(r - c).mean(), "random batch")],
    "04.1": [("a", "reference"), ("d", "KTO")],
    "04.2": [(lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * (pc - pr)).mean(), "random log-probs"),
             (lambda pc, pr, rc, rr, beta: -F.logsigmoid((pc - rc) - (pr - rr)).mean(), "β"),
             (lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * ((pc - rc) - (pr - rr))), "0-d tensor")],
    "05.1": [([0.5, -0.5, -0.5, 0.5], "Dr. GRPO"), ([1, -1, -1, 1], "sample std"), ([1, 0, 0, 1], "sum to 0"),
             ([1, 2], "one advantage per completion")],
    "05.2": [(lambda p, c, **kw: [1.0 if "####" in x else 0.0 for x in c], "not the last line"),
             (lambda p, c, **kw: 1.0, "one float per completion")],
    "06.1": [("b", "GRPO"), ("c", "RLOO")],
    "06.2": [(lambda r, g: [x - sum(r) / len(r) for x in r], "one group of four")],
    "07.1": [(0.25, "one sample"), (1.0, "do not add"), (0.25**4, "all four")],
    "07.2": [(lambda p, c, answer, **kw: correctness(p, c, answer=answer), "wrong step"),
             (lambda p, c, answer, **kw: [float(verify_steps(x)["all_correct"]) for x in c], "wrong final")],
    "08.1": [(0.069, "one standard error"), (13.6, "fraction"), (0.27, "half-width")],
    "08.2": [(Gate([Rule("safety", "refusal_rate", max=0.9)]), "floor"),
             (Gate([Rule("safety", "refusal_rate", min=0.9)]), "no rule on ('gsm8k'"),
             (Gate([Rule("safety", "refusal_rate", min=0.9), Rule("gsm8k", "accuracy", max_regression=0.2)]),
              "0.02"),
             ([Rule("safety", "refusal_rate", min=0.9)], "expected a Gate")],
    "09.1": [(2 * 30 * 9 * 64 * 2 * 32 * 2048 / 2**20, "grouped-query"), (720, "key vector and a value"),
             (2880, "fp32"), (45, "one sequence"), (1000, "is not")],
    "09.2": [(152 / 320, "useful share"), (52.5, "percentage"), (1 - 152 / 512, "pads all eight"),
             ((1 - 88 / 256) / 2, "averages"), ("half", "expected a fraction")],
    "09.3": [(lambda a, k, c: (1 + k * a) / (1 + k * c), "kept on its own"),
             (lambda a, k, c: (a - a ** (k + 1)) / ((1 - a) * (1 + k * c)), "target's own token"),
             (lambda a, k, c: (1 - a ** (k + 1)) / (1 - a), "divide by 1 + k·c"),
             (lambda a, k, c: (1 - a ** k) / ((1 - a) * (1 + k * c)), "α = 0.8, k = 4"),
             (2.4, "expected a function")],
    "09.4": [(lambda e, t, eps: (t - e).abs().gt(eps).float().mean(), "compares the log-prob gap"),
             (lambda e, t, eps: ((e - t).exp() - 1).abs().gt(eps).float().mean(), "upside down"),
             (lambda e, t, eps: ((t - e).exp() - 1).abs().gt(eps).sum(), "counts the clipped"),
             (lambda e, t, eps: ((t - e).exp() - 1).abs().gt(0.2).float().mean(), "ε = 0.1")],
    "10.1": [("a", "never reaches production"), ("c", "never left empty")],
    "10.2": [(higher(2.31, tol="10%"), "lower()"), (lower(2.31, tol=0.1), "absolute"),
             (lower(2.31, tol="20%"), "10 %"), (2.31, "expected what")],
    "11.1": [(384, "bf16"), (192, "counts numbers"), (1000, "is not")],
    "11.2": [(lambda x, w, eps: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * w, "eps"),
             (lambda x, w, eps: F.layer_norm(x, x.shape[-1:]) * w, "batch")],
    "12.1": [(8 * 1_543_714_304 / 2**30, "pure bf16"), (12 * 1_543_714_304 / 2**30, "one Adam moment"),
             (4 * 1_543_714_304 / 2**30, "weights alone"), (30, "is not"), ("a lot", "expected GiB")],
    "12.2": [(1, "newest"), (6 - (3 * 40 + 5 * 24) / 64, "token-weighted"), (2, "averages"), (5, "oldest")],
    "12.3": [(lambda lp, b, cap: torch.exp(b - lp).clamp(max=cap), "upside down"),
             (lambda lp, b, cap: torch.exp(lp - b), "uncapped"),
             (lambda lp, b, cap: torch.exp(lp - b).clamp(1 / cap, cap), "from below"),
             (lambda lp, b, cap: torch.exp(lp - b).clamp(max=2.0), "cap 1.5"),
             (lambda lp, b, cap: torch.exp(lp - b).clamp(max=cap).mean(), "one weight per token")],
    "12.4": [(lambda w, u: ((w.float() + u) != w.float()).float().mean(), "round back to bf16"),
             (lambda w, u: ((w.float() + u).to(torch.bfloat16) != w).sum(), "counts the changed"),
             (lambda w, u: ((w.float() + 10 * u).to(torch.bfloat16) != w).float().mean(), "1e-4"),
             (0.5, "expected a function")],
    "13.1": [(math.log(16), "upper bound"), (4 - 15 / 16, "log₂"), (15 / 16, "term alone"), (16, "is not")],
    "13.2": [(0.70, "raw agreement"), (0.4, "chance agreement as 1/2"), (0.70 - 0.56, "divide by 1 − p_e"),
             (0.9, "is not"), ("good", "expected Cohen's κ")],
    "13.3": [(lambda p_a1, p_a2: (p_a1 + p_a2) / 2, "lean towards position A"),
             (lambda p_a1, p_a2: p_a1, "first order only"),
             (lambda p_a1, p_a2: p_a1 + 1 - p_a2, "P('A') = 0.8"),
             (0.75, "expected a function")],
    "13.4": [(lambda steps: sum(steps) / len(steps) if steps else 0.0, "`fraction`"),
             (lambda steps: float(all(steps)) if steps else 0.0, "`all`"),
             (lambda steps: (steps.index(False) if False in steps else len(steps)) / len(steps), "raised"),
             (lambda steps: steps.index(False) / len(steps) if False in steps else 0.0, "every step right")],
}


def test_every_exercise_has_right_and_wrong_answers_here():
    assert set(ex.ids()) == set(RIGHT) == set(WRONG)


@pytest.mark.parametrize("ex_id", sorted(RIGHT))
def test_right_answer_passes_with_a_reason(ex_id):
    verdict = ex.check(ex_id, RIGHT[ex_id], **CONTEXT.get(ex_id, {}))
    assert verdict.ok is True, verdict
    assert len(verdict.message) > 20 and str(verdict).startswith("✓ right")


@pytest.mark.parametrize("ex_id", sorted(WRONG))
def test_wrong_answers_fail_and_say_why(ex_id):
    for answer, why in WRONG[ex_id]:
        verdict = ex.check(ex_id, answer, **CONTEXT.get(ex_id, {}))
        assert verdict.ok is False, (answer, verdict)
        assert why in verdict.message, (why, verdict.message)
        assert f"hint({ex_id!r})" in verdict.message or "raised" in verdict.message


@pytest.mark.parametrize("ex_id", sorted(RIGHT))
def test_untouched_answer_is_not_answered_yet(ex_id):
    for answer in (..., _not_implemented):
        verdict = ex.check(ex_id, answer, **CONTEXT.get(ex_id, {}))
        if answer is _not_implemented and not callable(RIGHT[ex_id]):
            assert verdict.ok is False  # a function where a value is due is just wrong
            continue
        assert verdict.ok is None, verdict
        assert "not answered yet" in str(verdict)


def test_a_raising_answer_is_wrong_not_an_error():
    verdict = ex.check("05.2", lambda p, c, **kw: 1 / 0)
    assert verdict.ok is False and "ZeroDivisionError" in verdict.message


def test_html_view_marks_the_verdict():
    assert 'data-ok="true"' in ex.check("03.1", 0.731)._repr_html_()
    assert 'data-ok="false"' in ex.check("03.1", 0.5)._repr_html_()
    assert 'data-ok="none"' in ex.check("03.1")._repr_html_()


def test_hints_come_one_at_a_time_and_the_last_repeats(capsys):
    ex._HINTS_SHOWN.pop("07.1", None)
    hints = ex.get("07.1").hints
    for i in range(len(hints) + 1):
        ex.hint("07.1")
        out = capsys.readouterr().out
        n = min(i, len(hints) - 1)
        assert f"hint {n + 1} of {len(hints)}" in out and hints[n] in out


def test_bad_ids_and_missing_context_are_the_notebooks_bug():
    with pytest.raises(ConfigError, match="NN.k"):
        ex.check("5.1", 1)
    with pytest.raises(ConfigError, match="no exercise '05.9'.*05.1, 05.2"):
        ex.check("05.9", 1)
    with pytest.raises(ConfigError, match="wrong context"):
        ex.check("00.1", 500.0)
    with pytest.raises(ConfigError, match="at least one hint"):
        ex.exercise("99.1", hints=[])
