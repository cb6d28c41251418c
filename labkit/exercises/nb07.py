"""Checks for notebook 07 (reasoning): rejection sampling's yield, and a step-checking reward."""

from __future__ import annotations

from labkit.exercises import cases, close, exercise, number, wrong
from labkit.reasoning.cot import cot_reply


@exercise("07.1", hints=["It is easier to count the prompts that get no verified answer.",
                         "P(all four wrong) = 0.75⁴; the answer is 1 minus that."])
def yield_of_k(answer) -> str:
    p = number(answer, "a fraction")
    expected = 1 - 0.75**4
    if close(p, 0.25):
        wrong("that is the chance for one sample; with k = 4 a prompt has four tries")
    if close(p, 1.0):
        wrong("probabilities of independent tries do not add (4 × 0.25): count the prompts with no success")
    if close(p, 0.25**4):
        wrong("that is the chance that all four samples are right; one is enough to keep the prompt")
    if not close(p, expected, rel=0.01):
        wrong(f"{p:g} is not 1 − P(all four samples fail)")
    return (f"1 − 0.75⁴ = {expected:.3f}: sampling k answers turns a 25 % solver into a 68 % data "
            "source, which is why rejection sampling improves on the model that made the data.")


@exercise("07.2", hints=["labkit.reasoning.cot.verify_steps(text)['all_correct'] checks every `a op b = c`.",
                         "labkit.rewards.verifiable.correctness([p], [c], answer=[a]) checks the answer."])
def step_reward(answer) -> str:
    good = cot_reply("23 + 19")                                    # every step right, #### 42
    bad_step = good.replace("3 + 9 = 12", "3 + 9 = 13")            # a wrong step, right final answer
    bad_final = good.replace("#### 42", "#### 41")                 # right steps, wrong final answer

    def reward(completion: str, ref: str) -> float:
        return answer(["What is 23 + 19?"], [completion], answer=[ref])[0]

    out = answer(["p", "q"], [good, good], answer=["42", "42"])
    if not isinstance(out, list) or len(out) != 2:
        wrong(f"a reward function returns one float per completion (a list of 2 here), got {out!r}")
    cases(reward, [
        ((good, "42"), 1.0, "a fully correct worked answer"),
        ((bad_step, "42"), 0.0, "a wrong step but the right final answer"),
        ((bad_final, "42"), 0.0, "right steps but the wrong final answer"),
        (("#### 42", "42"), 0.0, "the right answer with no working (no steps to credit)"),
    ], same=lambda a, b: close(a, b, abs_=1e-9))
    return ("an outcome reward pays for lucky arithmetic; checking every step keeps only traces worth "
            "imitating: process supervision, here done by code instead of a learned verifier.")
