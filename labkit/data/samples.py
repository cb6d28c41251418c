"""Build the small datasets in data_samples/ (arithmetic in a fixed answer format) and check they are current.

    python -m labkit.data.samples build [--out data_samples]   # (re)write the files and README.md
    python -m labkit.data.samples check [--out data_samples]   # exit 1 if the files differ from a build

Everything is generated here from seeded `random.Random` instances: no downloaded data, and the
same bytes on every run. The answer format (see `format_ok`) is one working line and a final line:

    7 + 5 = 12
    #### 12

SmolLM2-135M-Instruct does not answer like this on its own, the shape is short enough for it to
learn in a few SFT steps, and a regex checks it exactly, which makes it a clean signal for SFT,
preference and RL stages alike. Problems are split once into a train pool and a heldout pool
(commutative duplicates such as 3 + 4 and 4 + 3 count as one problem), and every file draws its
train rows from the first and its heldout rows from the second, so no heldout problem is ever
trained on, in any file.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import itertools
import os
import random
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.data.answers import extract_number
from labkit.data.io import read_jsonl, write_jsonl
from labkit.data.types import Kind
from labkit.data.validate import validate_rows

# The data_samples/ folder, the package labkit.data_samples: the checkout's folder in an editable install,
# the copy inside site-packages in a wheel install. A real filesystem path in both.
SAMPLES_DIR = Path(os.fspath(importlib.resources.files("labkit.data_samples")))

FORMAT_RE = re.compile(r"(\d+) ([+\-*]) (\d+) = (-?\d+)\n#### (-?\d+)")


def format_ok(text: str) -> bool:
    """True when the text is exactly `a <op> b = r` then `#### n` (op one of + - *),
    ignoring outer whitespace.

    This checks the shape only; whether the numbers are right is `extract_answer`'s job.
    """
    return FORMAT_RE.fullmatch(text.strip()) is not None


def extract_answer(text: str) -> str | None:
    """The number after the first `####` in the text, canonical ("012" -> "12"), or None when no `####`
    carries a number.

    labkit's one answer reader (labkit.data.answers) restricted to its `####` rule: the probes
    score the trained format, so a right number written without the marker does not count here.
    """
    return extract_number(text, marker_only=True)


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem `a op b`."""

    a: int
    op: str
    b: int

    @property
    def result(self) -> int:
        """The right answer."""
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    @property
    def key(self) -> tuple[int, str, int]:
        """Identity for the train/heldout split: a + b and b + a are the same problem."""
        if self.op == "-":
            return (self.a, self.op, self.b)
        return (min(self.a, self.b), self.op, max(self.a, self.b))

    @property
    def expression(self) -> str:
        """The problem as code would write it: "40 + 14", "7 * 12"."""
        return f"{self.a} {self.op} {self.b}"

    def reply(self, result: int | None = None) -> str:
        """The answer in the trained format; pass another result to write a wrong answer the same way."""
        r = self.result if result is None else result
        return f"{self.a} {self.op} {self.b} = {r}\n#### {r}"


NAMES = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Milo", "Nia"]
ITEMS = ["apples", "stickers", "marbles", "books", "pencils", "cards", "shells", "coins"]
QUESTIONS = {
    "+": [
        "What is {a} + {b}?",
        "Add {a} and {b}.",
        "{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
        "A jar holds {a} {item}. {name} puts in {b} more. How many {item} are in the jar?",
    ],
    "-": [
        "What is {a} - {b}?",
        "Subtract {b} from {a}.",
        "{name} has {a} {item} and gives away {b}. How many {item} are left?",
        "There are {a} {item} on a table. {name} takes {b} of them. How many {item} stay on the table?",
    ],
    "*": [
        "What is {a} times {b}?",
        "Multiply {a} by {b}.",
        "{name} has {a} bags with {b} {item} in each bag. How many {item} are there in total?",
        "There are {a} rows of {item} with {b} in each row. How many {item} are there?",
    ],
}
PADDING_OPENERS = [
    "Sure! Let me work through this carefully, step by step, so that nothing gets missed.",
    "What a great question! Arithmetic like this comes up all the time in everyday life.",
    "Okay, let's think about this problem together and take it one step at a time.",
]
PADDING_CLOSERS = [
    "So, after doing the calculation above, the final answer is {r}.",
    "Therefore, putting it all together, we can say that the result is {r}.",
    "I hope this helps! The answer to the question is {r}.",
]

# General-knowledge questions with short answers written for this project, for a forgetting probe:
# ask the question, then check (case-insensitively) that the keyword appears in the reply.
GENERAL = [
    ("What is the capital of France?", "The capital of France is Paris.", "Paris"),
    ("How many days are there in a week?", "There are seven days in a week.", "seven"),
    ("What is the chemical formula of water?", "The chemical formula of water is H2O.", "H2O"),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun.", "Mercury"),
    (
        "Who wrote the play Romeo and Juliet?",
        "Romeo and Juliet was written by William Shakespeare.",
        "Shakespeare",
    ),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth.", "Pacific"),
    (
        "At what temperature in degrees Celsius does water boil at sea level?",
        "At sea level, water boils at 100 degrees Celsius.",
        "100",
    ),
    (
        "Which gas do plants take in from the air for photosynthesis?",
        "Plants take in carbon dioxide for photosynthesis.",
        "carbon dioxide",
    ),
    ("How many continents are there on Earth?", "There are seven continents on Earth.", "seven"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "Tokyo"),
    (
        "What is the tallest mountain on Earth above sea level?",
        "Mount Everest is the tallest mountain above sea level.",
        "Everest",
    ),
    (
        "What colour do you get when you mix blue and yellow paint?",
        "Mixing blue and yellow paint gives green.",
        "green",
    ),
    ("How many legs does a spider have?", "A spider has eight legs.", "eight"),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci.", "Leonardo"),
    (
        "At what temperature in degrees Celsius does water freeze?",
        "Water freezes at 0 degrees Celsius.",
        "0 degrees",
    ),
    (
        "What is the largest planet in the Solar System?",
        "Jupiter is the largest planet in the Solar System.",
        "Jupiter",
    ),
    (
        "What is the main language spoken in Brazil?",
        "The main language spoken in Brazil is Portuguese.",
        "Portuguese",
    ),
    ("How many hours are there in a day?", "There are 24 hours in a day.", "24"),
    (
        "Which organ pumps blood around the human body?",
        "The heart pumps blood around the human body.",
        "heart",
    ),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "Rome"),
]

TRAIN_POOL, HELDOUT_POOL = 400, 100


def draw_problem(rng: random.Random) -> Problem:
    """A small problem a 135M model can sometimes solve: two-digit add/sub, single-digit-ish multiply."""
    op = rng.choices(["+", "-", "*"], weights=[2, 2, 1])[0]
    if op == "+":
        return Problem(rng.randint(1, 50), op, rng.randint(1, 50))
    if op == "-":
        a = rng.randint(5, 99)
        return Problem(a, op, rng.randint(1, a - 1))  # results stay positive
    return Problem(rng.randint(2, 9), op, rng.randint(2, 12))


def problem_pools(seed: int = 0) -> dict[str, list[Problem]]:
    """Disjoint train and heldout pools of distinct problems (by `Problem.key`)."""
    rng = random.Random(seed)
    seen: dict[tuple[int, str, int], Problem] = {}
    while len(seen) < TRAIN_POOL + HELDOUT_POOL:
        p = draw_problem(rng)
        seen.setdefault(p.key, p)
    problems = list(seen.values())
    return {"train": problems[:TRAIN_POOL], "heldout": problems[TRAIN_POOL:]}


def question(p: Problem, rng: random.Random) -> str:
    """The problem asked in words: a bare question or a word problem with a random name and item."""
    return rng.choice(QUESTIONS[p.op]).format(a=p.a, b=p.b, name=rng.choice(NAMES), item=rng.choice(ITEMS))


def wrong_result(p: Problem, rng: random.Random) -> int:
    """A plausible slip: off by one or two, a carry error (10), or one row of the times table."""
    deltas = [-p.a, p.a, -p.b, p.b, -1, 1] if p.op == "*" else [-10, -2, -1, 1, 2, 10]
    while True:
        wrong = p.result + rng.choice(deltas)
        if wrong >= 0 and wrong != p.result:
            return wrong


def user(text: str) -> list[dict[str, str]]:
    """A one-message conversation: a user turn."""
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    """A one-message conversation: an assistant turn."""
    return [{"role": "assistant", "content": text}]


def padded(p: Problem, rng: random.Random) -> str:
    """The right answer wrapped in filler: it still ends `#### r`, so only length and chatter differ."""
    closer = rng.choice(PADDING_CLOSERS).format(r=p.result)
    return f"{rng.choice(PADDING_OPENERS)}\n{p.a} {p.op} {p.b} = {p.result}\n{closer}\n#### {p.result}"


def build_sft(pools: dict[str, list[Problem]], rng: random.Random) -> list[dict[str, Any]]:
    """sft_format.jsonl: a question and the reply in the format, with an `answer` column."""
    rows = []
    for split, n in (("train", 200), ("heldout", 50)):
        for p in rng.sample(pools[split], n):
            messages = user(question(p, rng)) + assistant(p.reply())
            rows.append({"messages": messages, "answer": str(p.result), "split": split})
    return rows


def guess(p: Problem, rng: random.Random) -> str:
    """A bare final answer with no working, and wrong: the shortcut a small model takes when it skips the
    steps."""
    return f"#### {wrong_result(p, rng)}"


# (kind, train rows, heldout rows). `slip` can only be told apart by doing the arithmetic (a 135M reward
# model stays near chance on it); `guess` by the missing working, a cue preference training picks up fast;
# `padded` by length and filler alone.
PREFERENCE_KINDS = (("slip", 80, 20), ("guess", 160, 40), ("padded", 80, 20))


def rejected_reply(kind: str, p: Problem, rng: random.Random) -> str:
    """The losing reply of a preference pair of this `kind` (see PREFERENCE_KINDS)."""
    if kind == "slip":
        return p.reply(wrong_result(p, rng))
    return guess(p, rng) if kind == "guess" else padded(p, rng)


def build_preference(pools: dict[str, list[Problem]], rng: random.Random) -> list[dict[str, Any]]:
    """preference_pairs.jsonl: chosen = the right reply, rejected by kind, shuffled within each split."""
    rows = []
    for split in ("train", "heldout"):
        counts = [(kind, n_train if split == "train" else n_held)
                  for kind, n_train, n_held in PREFERENCE_KINDS]
        problems = iter(rng.sample(pools[split], sum(n for _, n in counts)))
        chunk = []
        for kind, n in counts:
            for p in itertools.islice(problems, n):
                rejected = rejected_reply(kind, p, rng)
                chunk.append({"prompt": user(question(p, rng)), "chosen": assistant(p.reply()),
                              "rejected": assistant(rejected), "source_kind": kind, "split": split})
        rng.shuffle(chunk)
        rows += chunk
    return rows


def build_kto(pools: dict[str, list[Problem]], rng: random.Random) -> list[dict[str, Any]]:
    """kto_unpaired.jsonl: one labelled reply per prompt, half right (True), half slipped (False)."""
    rows = []
    for split, n in (("train", 160), ("heldout", 40)):
        chunk = []
        for k, p in enumerate(rng.sample(pools[split], n)):
            label = k < n // 2  # balanced desirable / undesirable
            completion = p.reply() if label else p.reply(wrong_result(p, rng))
            chunk.append(
                {
                    "prompt": user(question(p, rng)),
                    "completion": assistant(completion),
                    "label": label,
                    "split": split,
                }
            )
        rng.shuffle(chunk)
        rows += chunk
    return rows


def build_prompts(pools: dict[str, list[Problem]], rng: random.Random) -> list[dict[str, Any]]:
    """arithmetic_prompts.jsonl: a plain-string question, its `answer` and `expression`, for RL."""
    # `expression` is derived from the problem (no rng call), so adding it left every prompt, answer and
    # split as before; labkit.reasoning builds and checks worked solutions from it.
    return [
        {"prompt": question(p, rng), "answer": str(p.result), "expression": p.expression, "split": split}
        for split, n in (("train", 200), ("heldout", 50))
        for p in rng.sample(pools[split], n)
    ]


def build_general(pools: dict[str, list[Problem]], rng: random.Random) -> list[dict[str, Any]]:
    """general_prompts.jsonl: the GENERAL questions as written (pools and rng unused; same signature)."""
    return [{"prompt": user(q), "completion": assistant(a), "keyword": kw} for q, a, kw in GENERAL]


@dataclass(frozen=True)
class Sample:
    """One file of data_samples/: how it is built and what its README row says."""

    name: str
    kind: Kind
    build: Callable[[dict[str, list[Problem]], random.Random], list[dict[str, Any]]]
    how: str


SAMPLES = [
    Sample(
        "sft_format.jsonl",
        Kind.CONVERSATIONAL,
        build_sft,
        "user question (bare or word problem) → assistant reply in the format; `answer` column; "
        "200 train / 50 heldout",
    ),
    Sample(
        "preference_pairs.jsonl",
        Kind.PREFERENCE,
        build_preference,
        "chosen = correct reply in the format; rejected = the same working with a slipped result "
        "(`source_kind` slip, 80+20), a wrong bare answer with no working (`guess`, 160+40) or the right "
        "answer padded with filler (`padded`, 80+20); 320 train / 80 heldout",
    ),
    Sample(
        "kto_unpaired.jsonl",
        Kind.UNPAIRED_PREFERENCE,
        build_kto,
        "one reply per prompt, correct (label true) or slightly wrong (false), balanced; "
        "160 train / 40 heldout",
    ),
    Sample(
        "arithmetic_prompts.jsonl",
        Kind.PROMPT_ANSWER,
        build_prompts,
        "question string + integer answer as a string, for RL with a verifiable reward; `expression` "
        "column (`a op b`, e.g. `40 + 14`) for worked solutions; 200 train / 50 heldout",
    ),
    Sample(
        "general_prompts.jsonl",
        Kind.PROMPT_COMPLETION,
        build_general,
        "hand-written general-knowledge questions with short reference replies and a `keyword` "
        "to look for, for a forgetting probe",
    ),
]


def load_sample(name: str, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of a committed sample file by name ("sft_format" or "sft_format.jsonl"), optionally one split."""
    from labkit.errors import DataError

    file = name if name.endswith(".jsonl") else f"{name}.jsonl"
    known = [sample.name for sample in SAMPLES]
    if file not in known:
        raise DataError("data_samples", None, None, f"no sample '{name}'; have {', '.join(known)}")
    rows = read_jsonl(SAMPLES_DIR / file)
    if split is None:
        return rows
    picked = [r for r in rows if r.get("split") == split]
    if not picked:
        raise DataError(str(SAMPLES_DIR / file), None, "split", f"no rows with split '{split}'")
    return picked


def build_rows(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Every sample file's rows, validated under its kind. Each file has its own seeded generator."""
    pools = problem_pools(seed)
    files = {}
    for sample in SAMPLES:
        rows = sample.build(pools, random.Random(f"{seed}/{sample.name}"))
        validate_rows(rows, sample.kind, source=sample.name)
        files[sample.name] = rows
    return files


def readme(files: dict[str, list[dict[str, Any]]]) -> str:
    """data_samples/README.md: what the files are, the format rule and one table row per file."""
    lines = [
        "# data_samples",
        "",
        "Small datasets that labkit builds itself (no downloaded data). Generated by",
        "`python -m labkit.data.samples build`; do not edit by hand: `python -m labkit.data.samples check`",
        "(and the tests) fail when these files differ from what the build writes.",
        "",
        "Arithmetic replies follow one format, checked by `labkit.data.samples.format_ok` and read by",
        "`extract_answer`: a working line, then the result after `#### `:",
        "",
        "```",
        Problem(7, "+", 5).reply(),
        "```",
        "",
        "Problems are split once into disjoint train and heldout pools (a + b and b + a count as one",
        "problem); each file's `split` column says which pool a row came from, so no heldout problem is",
        "trained on in any file.",
        "",
        "| file | kind | rows | how built |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| `{s.name}` | {s.kind.value} | {len(files[s.name])} | {s.how} |" for s in SAMPLES]
    return "\n".join(lines) + "\n"


def build(out: str | Path = SAMPLES_DIR, seed: int = 0) -> dict[str, int]:
    """Write every sample file and README.md into `out`; returns rows per file."""
    out = Path(out)
    files = build_rows(seed)
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    tmp_readme = out / ".README.md.tmp"
    tmp_readme.write_text(readme(files), encoding="utf-8", newline="\n")
    tmp_readme.replace(out / "README.md")
    return {name: len(rows) for name, rows in files.items()}


def check(out: str | Path = SAMPLES_DIR, seed: int = 0) -> list[str]:
    """Names of the files in `out` that are missing or differ from what `build` would write."""
    with tempfile.TemporaryDirectory() as fresh:
        build(fresh, seed)
        names = [s.name for s in SAMPLES] + ["README.md"]
        return [
            n
            for n in names
            if not (Path(out) / n).is_file() or not filecmp.cmp(Path(fresh) / n, Path(out) / n, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    """`build` or `check` data_samples/; returns 1 when `check` finds stale files.

    Example: `main(["check", "--out", "data_samples"])`.
    """
    parser = argparse.ArgumentParser(
        prog="python -m labkit.data.samples", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["build", "check"])
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="folder of the sample files")
    args = parser.parse_args(argv)
    if args.command == "build":
        for name, n in build(args.out).items():
            print(f"{args.out / name}: {n} rows")
        return 0
    stale = check(args.out)
    if stale:
        print(
            f"out of date in {args.out}: {', '.join(stale)}; run `python -m labkit.data.samples build`",
            file=sys.stderr,
        )
        return 1
    print(f"{args.out}: all sample files are current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
