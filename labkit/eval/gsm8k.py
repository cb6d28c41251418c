"""GSM8K: grade-school word problems answered in free text; the final number is extracted and compared
exactly.

Rows use GSM8K's own schema: `question`, and `answer`, a worked solution with `<<a*b=c>>` calculator notes
ending in `#### <number>` (the fixture adds `split`: "test" rows are scored, "train" rows are few-shot
examples). The model is asked to end its reply with `#### <answer>`.

Metrics, each per row and sliced by `steps` ("1-2" or "3+" calculations in the reference solution, a rough
measure of how much reasoning an item takes):

- `accuracy`, the headline: the reply's answer, read by labkit's one reader (labkit.rewards.read_answer:
  the first `#### n`, else the last `\\boxed{}`, else "the answer is n", else the last number before a
  trailing check, else the last number), equals the reference as an exact rational. The `correctness`
  reward reads replies the same way, so the eval and RL agree on what counts as right.
- `format`: the reply states its answer as `#### <number>` (low format with low accuracy means the model
  was cut off or ignored the format, not necessarily that it computed wrongly).
- `strict_accuracy` and `flexible_accuracy`: the two scores lm-evaluation-harness's `gsm8k` task publishes
  (its "strict-match" and "flexible-extract" filters, see strict_answer and flexible_answer), computed the
  way that harness computes them, so a labkit card can be set beside published numbers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

from labkit.config import EvalConfig
from labkit.errors import ConfigError, DataError
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
from labkit.rewards.verifiable import HASH_RE, extract_number, format_number, gold_answer, is_correct

HUB = "openai/gsm8k"
FIXTURE = "data_samples/eval/gsm8k.jsonl"
INSTRUCTION = "Solve the problem step by step, then give the final answer on its own line as '#### <number>'."
_NOTE_RE = re.compile(r"<<[^<>]*>>")


def target_answer(answer: str) -> str:
    """The reference answer of a GSM8K solution, canonical: the number after its first `####` ("#### 1,250"
    -> "1250"), or that text normalised when it is not a number."""
    gold = gold_answer(answer)
    return format_number(gold) if isinstance(gold, Fraction) else gold


def steps(answer: str) -> int:
    """Calculation steps in a reference solution: its `<<…>>` notes, else its working lines."""
    notes = len(_NOTE_RE.findall(answer))
    return notes or max(1, len([ln for ln in answer.split("####")[0].splitlines() if ln.strip()]))


def steps_slice(answer: str) -> str:
    return "1-2" if steps(answer) <= 2 else "3+"


# ---- prompts -----------------------------------------------------------------------------------------------

def user_turn(question: str) -> dict:
    return {"role": "user", "content": f"{question}\n\n{INSTRUCTION}"}


def few_shot_messages(train_rows: list[dict], k: int) -> list[dict]:
    """Chat turns for the first k worked examples: the question as a user turn, its solution as the reply.

    The `<<…>>` calculator notes are removed from the shown solutions: they were hooks for a calculator
    during GSM8K's collection, and a model imitating them only spends tokens on text it cannot execute.
    """
    turns: list[dict] = []
    for row in train_rows[:k]:
        solution = _NOTE_RE.sub("", row["answer"]).strip()
        turns += [user_turn(row["question"]), {"role": "assistant", "content": solution}]
    return turns


def prompt_messages(row: dict, shots: list[dict] = ()) -> list[dict]:
    """The conversation for one test row: its few-shot examples, then the question."""
    return [*few_shot_messages(list(shots), len(shots)), user_turn(row["question"])]


# ---- scoring -----------------------------------------------------------------------------------------------

def final_answer(reply: str) -> str | None:
    """The reply's answer as a canonical number string (labkit.rewards.extract_number), or None."""
    return extract_number(reply)


# lm-evaluation-harness's GSM8K scoring, re-implemented from its task definition
# (EleutherAI/lm-evaluation-harness, lm_eval/tasks/gsm8k/gsm8k.yaml, task version 3.0, MIT licence):
# the "strict-match" filter takes the FIRST match of `#### (\-?[0-9\.\,]+)`; "flexible-extract" takes the
# LAST match of `(-?[$0-9.,]{2,})|(-?[0-9]+)` (group_select -1). `exact_match` then ignores case and
# deletes, from prediction and reference alike, every ",", every "$", everything up to the last "#### "
# and a final ".", and compares the strings: "18.0" is not "18" there, unlike in `accuracy`.
_STRICT_RE = re.compile(r"#### (-?[\d.,]+)", re.ASCII)
_FLEXIBLE_RE = re.compile(r"-?[\d$.,]{2,}|-?\d+", re.ASCII)  # the two alternatives, tried in that order
_HARNESS_IGNORE = (re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))


def harness_normalise(text: str) -> str:
    """A string as lm-evaluation-harness's GSM8K exact_match sees it (see the comment above)."""
    for pattern in _HARNESS_IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def strict_answer(reply: str) -> str | None:
    """The harness's "strict-match" reading: the number right after the first "#### ", else None."""
    found = _STRICT_RE.search(reply)
    return found[1] if found else None


def flexible_answer(reply: str) -> str | None:
    """The harness's "flexible-extract" reading: the last run of digits (and "$", ".", ",") in the reply,
    else None. Like the harness, it can read a run of punctuation such as "..." as the answer."""
    found = _FLEXIBLE_RE.findall(reply)
    return found[-1] if found else None


def harness_match(extracted: str | None, answer: str) -> bool:
    """The harness's exact_match of an extracted string against a GSM8K reference solution."""
    return extracted is not None and harness_normalise(extracted) == harness_normalise(answer)


def score_replies(rows: list[dict], replies: list[str]) -> list[Scored]:
    """Per row, in this order: `accuracy` (the reply's answer equals the reference, labkit's reader),
    `format` (the reply contains `#### <number>` anywhere), `strict_accuracy` and `flexible_accuracy`
    (lm-evaluation-harness's two GSM8K scores), all sliced by reasoning steps."""
    if len(rows) != len(replies):
        raise ValueError(f"{len(rows)} rows but {len(replies)} replies")
    scores = []
    for i, (row, reply) in enumerate(zip(rows, replies)):
        item, where = str(row.get("id", i)), {"steps": steps_slice(row["answer"])}
        per_metric = {
            "accuracy": is_correct(reply, row["answer"]),
            "format": HASH_RE.search(reply) is not None,
            "strict_accuracy": harness_match(strict_answer(reply), row["answer"]),
            "flexible_accuracy": harness_match(flexible_answer(reply), row["answer"]),
        }
        scores += [Scored(metric, item, float(ok), dict(where)) for metric, ok in per_metric.items()]
    return scores


# ---- fixture -----------------------------------------------------------------------------------------------
# Templated problems written for labkit (none is taken from GSM8K). Amounts are chosen so that every answer
# is exact: money is computed in cents, divisions are set up to come out whole.

NAMES = ("Maya", "Leo", "Priya", "Tom", "Aisha", "Ben", "Sofia", "Kenji", "Nora", "Omar")


def _money(cents: int) -> str:
    """1375 -> "13.75", 450 -> "4.5", 1200 -> "12": how the solutions write dollar amounts."""
    return f"{Decimal(cents) / 100:f}".rstrip("0").rstrip(".") if cents % 100 else str(cents // 100)


def _change(rng: random.Random) -> tuple[str, str]:  # shopping, 2 steps
    name, item = rng.choice(NAMES), rng.choice(("notebooks", "pens", "candles", "mugs"))
    n, price = rng.randint(2, 8), rng.randint(2, 12)
    cost = n * price
    bill = next(b for b in (20, 50, 100) if b > cost)
    return (f"{name} buys {n} {item} at ${price} each and pays with a ${bill} bill. How much change does "
            f"{name} get, in dollars?",
            f"The {item} cost {n} * {price} = <<{n}*{price}={cost}>>{cost} dollars.\n"
            f"The change is {bill} - {cost} = <<{bill}-{cost}={bill - cost}>>{bill - cost} dollars.\n"
            f"#### {bill - cost}")


def _groceries(rng: random.Random) -> tuple[str, str]:  # shopping with cents, 3 steps, decimal answer
    apples, a = rng.randint(3, 9), rng.choice((45, 60, 75, 125))
    loaves, b = rng.randint(1, 3), rng.choice((225, 250, 375, 420))
    x, y = apples * a, loaves * b
    ma, mb, mx, my, mt = (_money(v) for v in (a, b, x, y, x + y))
    bread = "1 loaf" if loaves == 1 else f"{loaves} loaves"
    return (f"Apples cost ${a / 100:.2f} each and a loaf of bread costs ${b / 100:.2f}. How much do {apples} "
            f"apples and {bread} cost altogether, in dollars?",
            f"The apples cost {apples} * {ma} = <<{apples}*{ma}={mx}>>{mx} dollars.\n"
            f"The bread costs {loaves} * {mb} = <<{loaves}*{mb}={my}>>{my} dollars.\n"
            f"Altogether that is {mx} + {my} = <<{mx}+{my}={mt}>>{mt} dollars.\n#### {mt}")


def _timetable(rng: random.Random) -> tuple[str, str]:  # time, 4 steps
    k, length, gap = rng.randint(3, 5), rng.choice((30, 35, 40, 45, 50)), rng.choice((5, 10, 15))
    lessons, breaks = k * length, (k - 1) * gap
    return (f"A school day starts at 8:30 with {k} lessons of {length} minutes each and a {gap}-minute break "
            "between one lesson and the next. How many minutes after 8:30 does the last lesson end?",
            f"The lessons take {k} * {length} = <<{k}*{length}={lessons}>>{lessons} minutes.\n"
            f"There are {k} - 1 = <<{k}-1={k - 1}>>{k - 1} breaks, which take {k - 1} * {gap} = "
            f"<<{k - 1}*{gap}={breaks}>>{breaks} minutes.\n"
            f"The last lesson ends {lessons} + {breaks} = <<{lessons}+{breaks}={lessons + breaks}>>"
            f"{lessons + breaks} minutes after 8:30.\n#### {lessons + breaks}")


def _practice(rng: random.Random) -> tuple[str, str]:  # time (hours to minutes), 2 steps
    name, hours = rng.choice(NAMES), rng.randint(1, 3)
    extra, sunday = rng.choice((10, 15, 20, 45)), rng.randint(20, 55)
    saturday = hours * 60 + extra
    return (f"{name} practises the piano for {hours} hour{'s' if hours > 1 else ''} and {extra} minutes on "
            f"Saturday and for {sunday} minutes on Sunday. How many minutes does {name} practise that "
            "weekend?",
            f"On Saturday {name} practises {hours} * 60 + {extra} = "
            f"<<{hours}*60+{extra}={saturday}>>{saturday} minutes.\nOver the weekend that is {saturday} + "
            f"{sunday} = <<{saturday}+{sunday}={saturday + sunday}>>{saturday + sunday} minutes.\n#### "
            f"{saturday + sunday}")


def _stickers(rng: random.Random) -> tuple[str, str]:  # sharing with a remainder, 3 steps
    people, each = rng.randint(3, 8), rng.randint(3, 9)
    extra = rng.randint(1, people - 1)
    total, given = people * each + extra, people * each
    return (f"{total} stickers are shared equally among {people} children, and the stickers left over go to "
            "the teacher. How many stickers does the teacher get?",
            f"Each child gets {total} // {people} = <<{total}//{people}={each}>>{each} stickers.\n"
            f"The children get {each} * {people} = <<{each}*{people}={given}>>{given} stickers in all.\n"
            f"The teacher gets {total} - {given} = <<{total}-{given}={extra}>>{extra} stickers.\n"
            f"#### {extra}")


def _pizza(rng: random.Random) -> tuple[str, str]:  # sharing, 2 steps
    pizzas, slices = rng.randint(2, 6), rng.choice((6, 8, 10, 12))
    total = pizzas * slices
    friends = rng.choice([f for f in range(3, 13) if total % f == 0 and f != slices])
    return (f"{pizzas} pizzas are each cut into {slices} slices, and {friends} friends share all the slices "
            "equally. How many slices does each friend get?",
            f"There are {pizzas} * {slices} = <<{pizzas}*{slices}={total}>>{total} slices.\n"
            f"Each friend gets {total} / {friends} = "
            f"<<{total}/{friends}={total // friends}>>{total // friends} slices.\n#### {total // friends}")


def _tank(rng: random.Random) -> tuple[str, str]:  # rate, 1 step; the question has a thousands comma
    rate, minutes = rng.choice((25, 40, 45, 60, 75)), rng.randint(24, 60)
    litres = rate * minutes
    return (f"A tank holds {litres:,} litres. A pump fills it at {rate} litres per minute. How many minutes "
            "does the pump take to fill the empty tank?",
            f"It takes {litres} / {rate} = <<{litres}/{rate}={minutes}>>{minutes} minutes.\n#### {minutes}")


def _bakery(rng: random.Random) -> tuple[str, str]:  # rate, 2 steps, answer in the thousands with a comma
    daily, weeks = rng.randint(60, 180), rng.randint(2, 6)
    weekly = daily * 7
    total = weekly * weeks
    return (f"A bakery bakes {daily} loaves every day. How many loaves does it bake in {weeks} weeks?",
            f"In a week it bakes {daily} * 7 = <<{daily}*7={weekly}>>{weekly} loaves.\n"
            f"In {weeks} weeks it bakes {weekly} * {weeks} = <<{weekly}*{weeks}={total}>>{total} loaves.\n"
            f"#### {total:,}")


def _savings(rng: random.Random) -> tuple[str, str]:  # rate, 2 steps
    name, weekly = rng.choice(NAMES), rng.choice((5, 8, 10, 12, 15))
    weeks, have = rng.randint(4, 12), rng.randint(10, 60)
    price, need = have + weekly * weeks, weekly * weeks
    return (f"{name} wants a bike that costs ${price}. {name} has saved ${have} and saves ${weekly} more "
            "every week. How many weeks will it take to have enough for the bike?",
            f"{name} still needs {price} - {have} = <<{price}-{have}={need}>>{need} dollars.\n"
            f"That takes {need} / {weekly} = <<{need}/{weekly}={weeks}>>{weeks} weeks.\n#### {weeks}")


def _train(rng: random.Random) -> tuple[str, str]:  # rate, 1 step
    speed, hours = rng.randint(40, 95), rng.randint(2, 6)
    return (f"A train travels at {speed} km per hour for {hours} hours. How many kilometres does it travel?",
            f"It travels {speed} * {hours} = <<{speed}*{hours}={speed * hours}>>{speed * hours} km.\n"
            f"#### {speed * hours}")


TEMPLATES: tuple[Callable[[random.Random], tuple[str, str]], ...] = (
    _change, _groceries, _timetable, _practice, _stickers, _pizza, _tank, _bakery, _savings, _train)


def fixture_rows() -> list[dict]:
    """40 test and 8 train word problems in GSM8K's schema plus `split`: ten templates (shopping with change
    and with cents, timetables, hours to minutes, sharing with and without a remainder, pump and baking
    rates, saving up, speed) taken in turn, numbers from a generator seeded with a fixed string."""
    rng = random.Random("labkit/gsm8k/v2")  # a str seed hashes the same in every process
    rows, seen = [], set()
    for split, n in (("test", 40), ("train", 8)):
        for i in range(n):
            question, answer = TEMPLATES[i % len(TEMPLATES)](rng)
            while question in seen:  # small templates repeat now and then; no row may appear twice
                question, answer = TEMPLATES[i % len(TEMPLATES)](rng)
            seen.add(question)
            rows.append({"question": question, "answer": answer, "split": split})
    return rows


# ---- rows --------------------------------------------------------------------------------------------------

def validate(rows: list[dict], source: str) -> None:
    """Each row has a question and a solution ending in `#### <number>`;
    DataError names the first that does not."""
    require_fields(rows, ("question", "answer"), source)
    for i, row in enumerate(rows):
        for field in ("question", "answer"):
            if not isinstance(row[field], str) or not row[field].strip():
                raise DataError(source, i, field, f"expected non-empty text, got {row[field]!r:.60}")
        try:
            numeric = "####" in row["answer"] and isinstance(gold_answer(row["answer"]), Fraction)
        except DataError:  # nothing after the `####`
            numeric = False
        if not numeric:
            raise DataError(source, i, "answer",
                            f"must end with '#### <number>', got …{row['answer'][-40:]!r}")


def _split(rows: list[dict], split: str) -> list[dict]:
    return [r for r in rows if r.get("split", "test") == split]


def load(cfg: EvalConfig) -> list[dict]:
    """Test rows (subsampled by cfg.limit), each with an `id` (its position in the test split, stable across
    limits so two cards pair item by item) and its few-shot examples from the train split under `shots`."""
    used = {}

    def hub() -> list[dict]:
        test = load_hub(HUB, name="main", split="test")
        train = load_hub(HUB, name="main", split="train") if cfg.gsm8k_shots else []
        used["source"] = f"{HUB} (main)"
        return [{**r, "split": "test"} for r in test] + [{**r, "split": "train"} for r in train]

    def fixture() -> list[dict]:
        used["source"] = FIXTURE
        return read_fixture("gsm8k")

    rows = rows_from(cfg.source, fixture, hub, "gsm8k")
    # Checked outside rows_from: under "auto" a malformed hub row must fail,
    # not quietly switch to the fixture.
    test, train = _split(rows, "test"), _split(rows, "train")
    validate(test, f"{used['source']} test split")
    validate(train, f"{used['source']} train split")
    if cfg.gsm8k_shots > len(train):
        raise ConfigError("gsm8k_shots", f"{cfg.gsm8k_shots} examples asked for, but {used['source']} has "
                          f"{len(train)} train rows", config="EvalConfig")
    shots = random.Random(cfg.seed).sample(train, cfg.gsm8k_shots)
    shots = [{"question": s["question"], "answer": s["answer"]} for s in shots]
    test = [{**r, "id": str(r.get("id", i))} for i, r in enumerate(test)]
    return [{**r, "shots": shots} for r in subsample(test, cfg.limit, cfg.seed)]


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    """Greedy replies to every row, scored by score_replies; info counts replies cut off by max_new_tokens."""
    prompts = [prompt_messages(r, r.get("shots", [])) for r in rows]
    gens = generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    replies = [g.text for g in gens]
    scores = score_replies(rows, replies)
    accuracy = [s for s in scores if s.metric == "accuracy"]
    samples = [{"prompt": r["question"], "output": reply, "target": target_answer(r["answer"]),
                "extracted": final_answer(reply), "strict": strict_answer(reply),
                "flexible": flexible_answer(reply), "score": s.score, "steps": s.slices["steps"]}
               for r, reply, s in zip(rows, replies, accuracy)]
    info = {"shots": len(rows[0].get("shots", [])) if rows else 0,
            "cut_off": sum(not g.finished for g in gens), "max_new_tokens": cfg.max_new_tokens}
    return TaskOutput(scores, samples, info)


TASK = register(Task(
    "gsm8k",
    (Metric("accuracy", True, "the reply's final number equals the reference answer"),
     Metric("format", True, "the reply gives its answer as '#### <number>'"),
     Metric("strict_accuracy", True, "lm-evaluation-harness strict-match: the number after the first "
            "'#### ' equals the reference as a string"),
     Metric("flexible_accuracy", True, "lm-evaluation-harness flexible-extract: the last number in the "
            "reply equals the reference as a string")),
    load, run, about="grade-school word problems, exact numeric match on the final answer, sliced by steps",
))
