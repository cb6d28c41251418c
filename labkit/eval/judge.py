"""LLM-as-judge: a local model compares two answers pairwise, in both orders,
and says how often it agrees with itself.

A judge reads "question, answer A, answer B" and names the better one. Small judges lean towards whichever
answer comes first (position bias), so every pair is judged twice with the answers swapped. A verdict that
flips with the order is no verdict: it counts as a tie, and the share of pairs whose verdict survives the
swap (`agreement`) says how far the judge itself can be trusted.

The verdict is read from the judge's next-token distribution over the letters "A" and "B" after the
assistant turn opens, one forward pass per order: no sampling, no parsing of free text.
"""

from __future__ import annotations

from typing import Any

import torch

from labkit.config import EvalConfig
from labkit.eval.tasks import (
    Metric,
    Scored,
    Task,
    TaskOutput,
    letter_ids,
    load_hub,
    read_fixture,
    register,
    require_fields,
    rows_from,
    subsample,
)
from labkit.models.generate import as_prompt_text, generate

JUDGE_PROMPT = (
    "You are grading two answers to the same question. Judge which one is more correct and more helpful; "
    "ignore which one comes first and how long each is.\n\n"
    "Question:\n{question}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\n"
    "Which answer is better? Reply with one letter: A or B."
)


@torch.inference_mode()
def prefer_a(judge, tok, question: str, a: str, b: str) -> float:
    """P(judge names A | A and B only), from the next-token logits of the two letters."""
    text = as_prompt_text(tok, JUDGE_PROMPT.format(question=question, a=a, b=b))
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids.to(judge.device)  # [1, T]
    logits = judge(input_ids=ids).logits[0, -1].float()                                       # [V]
    pair = logits[letter_ids(tok, "AB")]                                                             # [2]
    return float(pair.softmax(-1)[0])


def judge_pairs(judge, tok, questions: list[str], first: list[str],
                second: list[str]) -> list[dict[str, Any]]:
    """Judge `first[i]` against `second[i]` in both orders.

    Returns per pair: p_first_as_a (P(first wins) with first shown as A), p_first_as_b (with it shown as B),
    verdict ("first", "second" or "tie" when the two orders disagree) and agree (bool).
    """
    out = []
    for q, x, y in zip(questions, first, second):
        p1 = prefer_a(judge, tok, q, x, y)          # first shown as A
        p2 = 1.0 - prefer_a(judge, tok, q, y, x)    # first shown as B: it wins when B is named
        w1, w2 = p1 > 0.5, p2 > 0.5
        verdict = "first" if w1 and w2 else "second" if not (w1 or w2) else "tie"
        out.append({"p_first_as_a": p1, "p_first_as_b": p2, "verdict": verdict, "agree": w1 == w2,
                    "picked_a": [p1 > 0.5, p2 <= 0.5]})  # which judgments named position A
    return out


def win_score(verdict: str) -> float:
    """A verdict as the first answer's win: 1 if it won both orders, 0 if it lost both, 0.5 for a tie."""
    return {"first": 1.0, "second": 0.0, "tie": 0.5}[verdict]


def fixture_rows() -> list[dict]:
    """Open questions with a short, correct reference answer, written for labkit."""
    pairs = [
        ("Why do we see lightning before we hear thunder?",
         "Light travels much faster than sound, so the flash reaches us almost at once while the sound of "
         "the same discharge arrives seconds later."),
        ("Give two tips for remembering new vocabulary.",
         "Review the words a few times spread over several days, and use each new word in a sentence of your "
         "own."),
        ("What is the difference between weather and climate?",
         "Weather is the state of the air on a given day; climate is the average pattern of weather in a "
         "place over many years."),
        ("How can I make a cup of tea?",
         "Boil water, pour it over a tea bag or leaves in a cup, wait three to five minutes, remove the tea "
         "and add milk or sugar if you like."),
        ("Why do leaves change colour in autumn?",
         "Trees stop making green chlorophyll as days shorten, so the yellow and orange pigments already in "
         "the leaves show through."),
        ("What does a thermometer measure?", "Temperature: how hot or cold something is."),
        ("Name three primary colours of paint.", "Red, yellow and blue."),
        ("What is a good way to start learning to program?",
         "Pick one beginner-friendly language such as Python, follow a short tutorial and write small "
         "programs that solve problems you care about."),
        ("Why should you wash your hands before eating?",
         "Washing removes germs picked up from surfaces, so they do not get into your mouth "
         "and make you ill."),
        ("What is the capital of Japan?", "Tokyo."),
        ("Explain what a noun is.",
         "A noun is a word that names a person, place, thing or idea, like 'teacher' or "
         "'city'."),
        ("How many minutes are there in two hours?", "There are 120 minutes in two hours."),
        ("Suggest a name for a friendly robot dog.",
         "Bolt: short, easy to call out, and it suits a quick pet."),
        ("What do bees make?", "Bees make honey, and wax for their honeycomb."),
        ("Why is the sky blue on a clear day?",
         "Air scatters blue sunlight more than red, so blue light reaches our eyes from every part of the "
         "sky."),
        ("Write one sentence encouraging a friend before an exam.",
         "You have prepared well, so trust yourself and take it one question at a time."),
    ]
    return [{"id": i, "prompt": q, "reference": a} for i, (q, a) in enumerate(pairs)]


def _hub_rows() -> list[dict]:
    # AlpacaEval's prompts with its reference model's answers: the same (prompt, reference) shape.
    rows = load_hub("tatsu-lab/alpaca_eval", name="alpaca_eval", split="eval")
    return [{"id": i, "prompt": r["instruction"], "reference": r["output"]} for i, r in enumerate(rows)]


def load(cfg: EvalConfig) -> list[dict]:
    """(prompt, reference) rows from AlpacaEval or the fixture, subsampled, then checked for both fields."""
    rows = rows_from(cfg.source, lambda: read_fixture("judge"), _hub_rows, "judge")
    rows = subsample(rows, cfg.limit, cfg.seed)
    require_fields(rows, ("prompt", "reference"), "judge rows")
    return rows


def _judge_model(model, cfg: EvalConfig):
    """cfg.judge_model, or the evaluated model with its adapter switched off:
    one judge for base and adapter alike."""
    if cfg.judge_model:
        from labkit.models import load_model

        judge, _ = load_model(cfg.judge_model, device=cfg.device, dtype=cfg.dtype)
        return judge.eval(), None
    if hasattr(model, "disable_adapter"):
        return model, model.disable_adapter
    return model, None


def _is_merged(model) -> bool:
    return any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merged_adapters"))


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    """Greedy answers judged against the references in both orders, by cfg.judge_model or the base model.

    The adapter is switched off while judging so base and adapter face the same judge (and re-merged
    after, if it was merged); info has the judge and how often it named position A.
    """
    prompts = [r["prompt"] for r in rows]
    answers = [g.text.strip() for g in generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens,
                                                 batch_size=cfg.batch_size)]
    judge, switch_off = _judge_model(model, cfg)
    judge_tok = tok
    if cfg.judge_model:
        from labkit.models import load_tokenizer

        judge_tok = load_tokenizer(cfg.judge_model)
    refs = [r["reference"] for r in rows]
    if switch_off is not None:
        merged = _is_merged(model)
        with switch_off():
            verdicts = judge_pairs(judge, judge_tok, prompts, answers, refs)
        if merged:  # switching the adapter off unmerged it; fold it back in for the tasks that follow
            model.merge_adapter()
    else:
        verdicts = judge_pairs(judge, judge_tok, prompts, answers, refs)
    scores, samples = [], []
    for r, ans, v in zip(rows, answers, verdicts):
        scores.append(Scored("win_rate", str(r.get("id", r["prompt"])), win_score(v["verdict"])))
        scores.append(Scored("agreement", str(r.get("id", r["prompt"])), float(v["agree"])))
        samples.append({"prompt": r["prompt"], "output": ans, "target": r["reference"],
                        "verdict": v["verdict"],
                        "P(answer wins), shown first": round(v["p_first_as_a"], 3),
                        "P(answer wins), shown second": round(v["p_first_as_b"], 3)})
    picked_a = [p for v in verdicts for p in v["picked_a"]]
    info = {"judge": cfg.judge_model or "the evaluated base model (adapter off)",
            "position_a_rate": sum(picked_a) / max(len(picked_a), 1)}
    return TaskOutput(scores, samples, info)


TASK = register(Task(
    "judge",
    (Metric("win_rate", True,
            "answer beats the reference in both orders = 1, loses in both = 0, order-dependent = 0.5"),
     Metric("agreement", True,
            "share of pairs whose verdict survives swapping the answers' order (judge consistency)")),
    load, run,
    about="pairwise LLM-as-judge against reference answers, judged in both orders",
))
