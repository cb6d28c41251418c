"""Checks for notebook 13 (RLHF with learned rewards): best-of-n's KL, a judge's Cohen's κ, the
position-averaged judge label, and the "prefix" process reward."""

from __future__ import annotations

import math

from labkit.exercises import cases, close, exercise, number, wrong
from labkit.metrics.agreement import cohen_kappa
from labkit.metrics.overoptimisation import best_of_n_kl
from labkit.reasoning.process import fold

N = 16
# 13.2: 100 pairs; (judge's label, gold label) counts: the judge says "first" 80 times, gold is first 60
# times, and they agree on 55 + 15 = 70
COUNTS = {("first", "first"): 55, ("first", "second"): 25, ("second", "first"): 5, ("second", "second"): 15}


@exercise("13.1", hints=["Best-of-n keeps the sample the reward likes most of n drawn from the starting "
                         "model; its KL from that model has a closed form in n alone.",
                         "KL = log n − (n − 1) / n, in nats (natural log)."])
def best_of_kl(answer) -> str:
    kl = number(answer, "a KL in nats")
    right = best_of_n_kl(N)
    if close(kl, right, rel=0.01):
        return (f"{right:.3f} nats, and it grows only like log n: best-of-n buys reward with very little KL, "
                "which is why it is the baseline an RL curve is drawn against (same x-axis, √KL).")
    if close(kl, math.log(N), rel=0.01):
        wrong("that is log n, an upper bound; the exact KL subtracts (n − 1)/n")
    if close(kl, math.log2(N) - (N - 1) / N, rel=0.01) or close(kl, math.log2(N), rel=0.01):
        wrong("that uses log₂ (bits); the notebook's KL is in nats, with the natural log")
    if close(kl, (N - 1) / N, rel=0.01):
        wrong("that is the (n − 1)/n term alone; the KL is log n minus it")
    wrong(f"{kl:g} is not the KL of best-of-{N} from the starting model")


def _labels() -> tuple[list[str], list[str]]:
    judge, gold = [], []
    for (j, g), n in COUNTS.items():
        judge += [j] * n
        gold += [g] * n
    return judge, gold


@exercise("13.2", hints=["κ = (p_o − p_e) / (1 − p_e): p_o is the observed agreement, p_e the agreement two "
                         "labellers reach by chance with their own label frequencies.",
                         "p_e = P(judge first)·P(gold first) + P(judge second)·P(gold second) "
                         "= 0.8·0.6 + 0.2·0.4."])
def judge_kappa(answer) -> str:
    kappa = number(answer, "Cohen's κ")
    judge, gold = _labels()
    right = cohen_kappa(judge, gold)
    if close(kappa, right, abs_=0.005):
        return (f"κ = {right:.3f}: 70 % raw agreement is only a third of the way from chance (56 %, for a "
                "judge that says 'first' 80 % of the time) to perfect. Accuracy flatters a judge with a "
                "position bias; κ does not.")
    if close(kappa, 0.7, abs_=0.005):
        wrong("that is the raw agreement (accuracy); κ corrects it for the agreement expected by chance")
    if close(kappa, 0.4, abs_=0.005):
        wrong("that takes chance agreement as 1/2; with these label frequencies (the judge says 'first' 80 % "
              "of the time, gold is first 60 %) chance agreement is higher")
    if close(kappa, 0.7 - 0.56, abs_=0.005):
        wrong("close: that is p_o − p_e; divide by 1 − p_e, the most agreement above chance there is to get")
    wrong(f"{kappa:g} is not (p_o − p_e) / (1 − p_e) for these counts")


@exercise("13.3", hints=["In the second order the first reply is shown as B: it wins when the judge names B, "
                         "with probability 1 − P('A').",
                         "(p_a_first_as_a + (1 − p_a_first_as_b)) / 2"])
def position_averaged(answer) -> str:
    if not callable(answer):
        wrong(f"expected a function, got {type(answer).__name__}")
    got = number(answer(0.8, 0.3), "a probability")
    if close(got, 0.55, abs_=1e-6):
        wrong("that averages P('A') over both orders: it measures the judge's lean towards position A, not "
              "which reply it prefers. In the second order the first reply wins when the judge names B")
    if close(got, 0.8, abs_=1e-6):
        wrong("that reads the first order only; a judge leaning towards A would then prefer whatever reply "
              "happened to be shown first")
    cases(answer, [
        ((0.8, 0.3), 0.75, "P('A') = 0.8 with the first reply as A, 0.3 with it as B"),
        ((0.9, 0.9), 0.5, "a judge that says 'A' whatever it reads (no preference at all)"),
        ((0.3, 0.6), 0.35, "a judge that prefers the second reply"),
        ((0.5, 0.5), 0.5, "an undecided judge"),
    ], same=lambda a, b: close(a, b, abs_=1e-6))
    return ("a constant lean towards 'A' adds to one order's P('A') and subtracts from the other's win, so "
            "it cancels in the average; the table's `mean` labels are this number against 1/2.")


@exercise("13.4", hints=["Count the steps before the first wrong one, then divide by the number of steps.",
                         "first_wrong = steps.index(False) if False in steps else len(steps); "
                         "0.0 for no steps."])
def prefix_reward(answer) -> str:
    if not callable(answer):
        wrong(f"expected a function, got {type(answer).__name__}")
    if close(answer([True, True, False, True]), 0.75, abs_=1e-6):
        wrong("that is the share of steps that hold (`fraction`); `prefix` stops counting at the first wrong "
              "step")
    if close(answer([True, True, False, True]), 0.0, abs_=1e-6):
        wrong("that is `all` (1 only when every step holds); `prefix` pays for the steps before the first "
              "wrong one")

    def ref(steps):
        return fold([{"correct": s} for s in steps], "prefix")

    cases(answer, [
        (([True, True, False, True],), ref([True, True, False, True]), "two right steps, then a wrong one"),
        (([False, True, True],), ref([False, True, True]), "a wrong first step"),
        (([True, True, True],), ref([True, True, True]), "every step right"),
        (([],), 0.0, "no steps at all (no process to credit)"),
    ], same=lambda a, b: close(a, b, abs_=1e-6))
    return ("`prefix` rewards what a step-level PRM's 'first error' label rewards: everything after a "
            "mistake earns nothing, even steps that happen to hold, since they build on a wrong number.")
