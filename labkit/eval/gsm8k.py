"""GSM8K: grade-school word problems answered in free text; the final number is extracted and compared exactly.

Rows use GSM8K's own schema: `question`, and `answer`, a worked solution with `<<a*b=c>>` calculator notes
ending in `#### <number>`. Few-shot prompts put worked examples from the train split before the question as
earlier chat turns. Slice: how many calculation steps the reference solution takes.
"""

from __future__ import annotations

import random

from labkit.config import EvalConfig
from labkit.eval.tasks import (
    Metric,
    Scored,
    Task,
    TaskOutput,
    load_hub,
    read_fixture,
    register,
    require_fields,
    rows_from,
    subsample,
)
from labkit.models.generate import generate
from labkit.rewards.verifiable import extract_number, numbers_equal

INSTRUCTION = "Solve the problem step by step, then give the final answer on its own line as '#### <number>'."


def target_answer(answer: str) -> str:
    """The number after `####` in a GSM8K solution, thousands commas removed."""
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


def steps(answer: str) -> int:
    """Calculation steps in a reference solution: its `<<…>>` notes, else its working lines."""
    notes = answer.count("<<")
    return notes or max(1, len([ln for ln in answer.split("####")[0].splitlines() if ln.strip()]))


def user_turn(question: str) -> dict:
    return {"role": "user", "content": f"{question}\n\n{INSTRUCTION}"}


def prompt_messages(row: dict, shots: list[dict]) -> list[dict]:
    """Chat turns: each worked example as a user/assistant pair, then the question."""
    turns = []
    for s in shots:
        turns += [user_turn(s["question"]), {"role": "assistant", "content": s["answer"]}]
    return [*turns, user_turn(row["question"])]


def score_replies(rows: list[dict], replies: list[str]) -> list[Scored]:
    scores = []
    for i, (row, reply) in enumerate(zip(rows, replies)):
        ok = numbers_equal(extract_number(reply), target_answer(row["answer"]))
        n = steps(row["answer"])
        scores.append(Scored("accuracy", str(row.get("id", i)), float(ok), {"steps": "1-2" if n <= 2 else "3+"}))
    return scores


# ---- rows ---------------------------------------------------------------------------------------------------

def _problem(rng: random.Random) -> tuple[str, str]:
    """One templated word problem and its GSM8K-style solution."""
    kind = rng.randrange(6)
    if kind == 0:
        n, price, paid = rng.randint(2, 9), rng.randint(2, 12), 0
        paid = n * price + rng.choice([0, 5, 10, 20])
        cost = n * price
        return (f"Maya buys {n} notebooks at ${price} each and pays with ${paid}. How much change does she get?",
                f"The notebooks cost {n} * {price} = <<{n}*{price}={cost}>>{cost} dollars.\n"
                f"Her change is {paid} - {cost} = <<{paid}-{cost}={paid - cost}>>{paid - cost} dollars.\n"
                f"#### {paid - cost}")
    if kind == 1:
        speed, hours = rng.randint(40, 90), rng.randint(2, 6)
        d = speed * hours
        return (f"A train travels at {speed} km per hour for {hours} hours. How many kilometres does it travel?",
                f"It travels {speed} * {hours} = <<{speed}*{hours}={d}>>{d} km.\n#### {d}")
    if kind == 2:
        people, each = rng.randint(3, 8), rng.randint(3, 9)
        extra = rng.randint(1, people - 1)
        total = people * each + extra
        return (f"{total} stickers are shared equally among {people} children, and the leftover stickers go to the "
                "teacher. How many stickers does the teacher get?",
                f"Each child gets {total} // {people} = <<{total}//{people}={each}>>{each} stickers.\n"
                f"The children get {each} * {people} = <<{each}*{people}={each * people}>>{each * people}.\n"
                f"The teacher gets {total} - {each * people} = <<{total}-{each * people}={extra}>>{extra}.\n"
                f"#### {extra}")
    if kind == 3:
        weekly, weeks = rng.randint(120, 480), rng.randint(4, 12)
        total = weekly * weeks
        return (f"A bakery sells {weekly} loaves every week. How many loaves does it sell in {weeks} weeks?",
                f"It sells {weekly} * {weeks} = <<{weekly}*{weeks}={total}>>{total} loaves.\n#### {total:,}")
    if kind == 4:
        price, n = rng.choice([1.5, 2.25, 3.75, 4.5]), rng.randint(2, 6)
        total = price * n
        return (f"Apples cost ${price:.2f} each. How much do {n} apples cost, in dollars?",
                f"They cost {price} * {n} = <<{price}*{n}={total:g}>>{total:g} dollars.\n#### {total:g}")
    start, spent, earned = rng.randint(20, 60), rng.randint(5, 19), rng.randint(5, 30)
    end = start - spent + earned
    return (f"Leo has {start} marbles. He loses {spent} in a game and then wins {earned}. How many marbles does "
            "he have now?",
            f"After losing he has {start} - {spent} = <<{start}-{spent}={start - spent}>>{start - spent}.\n"
            f"After winning he has {start - spent} + {earned} = <<{start - spent}+{earned}={end}>>{end}.\n#### {end}")


def fixture_rows() -> list[dict]:
    """40 test and 8 train word problems from six templates (change, distance, remainders, thousands,
    decimals, two-step counts), in GSM8K's schema plus a `split` column."""
    rng = random.Random("labkit/gsm8k")
    return [{"question": q, "answer": a, "split": split}
            for split, n in (("test", 40), ("train", 8)) for q, a in (_problem(rng) for _ in range(n))]


def _split(rows: list[dict], split: str) -> list[dict]:
    return [r for r in rows if r.get("split", split) == split]


def load(cfg: EvalConfig) -> list[dict]:
    """Test rows (subsampled), each carrying its few-shot examples from the train split under `shots`."""
    def hub():
        test = load_hub("openai/gsm8k", name="main", split="test")
        train = load_hub("openai/gsm8k", name="main", split="train") if cfg.gsm8k_shots else []
        return [{**r, "split": "test"} for r in test] + [{**r, "split": "train"} for r in train[:64]]

    rows = rows_from(cfg.source, lambda: read_fixture("gsm8k"), hub, "gsm8k")
    require_fields(rows, ("question", "answer"), "gsm8k rows")
    test = subsample(_split(rows, "test"), cfg.limit, cfg.seed)
    shots = random.Random(cfg.seed).sample(_split(rows, "train"), min(cfg.gsm8k_shots, len(_split(rows, "train"))))
    return [{**r, "shots": shots} for r in test]


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    prompts = [prompt_messages(r, r.get("shots", [])) for r in rows]
    replies = [g.text for g in generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens,
                                        batch_size=cfg.batch_size)]
    scores = score_replies(rows, replies)
    samples = [{"prompt": r["question"], "output": reply, "target": target_answer(r["answer"]), "score": s.score}
               for r, reply, s in zip(rows, replies, scores)]
    return TaskOutput(scores, samples, {"shots": len(rows[0].get("shots", [])) if rows else 0})


TASK = register(Task("gsm8k", (Metric("accuracy", True, "final number equals the reference answer"),), load, run,
                     about="grade-school word problems, exact match on the final number"))
