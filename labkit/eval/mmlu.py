"""MMLU: four-option multiple choice, scored by log-likelihood of the option letters and by a generated letter.

Rows use cais/mmlu's schema: `question`, `subject`, `choices` (4 strings), `answer` (index 0-3).

- loglik: one forward pass over the templated prompt; the model's next-token log-probabilities of the
  letters "A".."D" are compared and the highest wins. The original MMLU harness scores the same way:
  only the four letters compete, so a model that would rather chat than answer still gets scored.
- generate: greedy reply of a few tokens, parsed for a letter (or an option's text). A model that knows
  the answer but will not say it in the asked format loses here, which is what a user would see.

Slices: subject.
"""

from __future__ import annotations

import re

import torch

from labkit.config import EvalConfig
from labkit.errors import DataError
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

LETTERS = "ABCD"


def question_text(row: dict) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
    subject = row["subject"].replace("_", " ")
    return (f"The following is a multiple choice question about {subject}.\n\n{row['question']}\n{options}\n\n"
            "Answer with the letter of the correct option only.")


@torch.inference_mode()
def letter_logprobs(model, tok, rows: list[dict], batch_size: int = 8) -> list[list[float]]:
    """log p(letter | prompt) for A-D, per row, from the next-token distribution after the assistant turn opens."""
    letters = letter_ids(tok, LETTERS)
    texts = [as_prompt_text(tok, question_text(r)) for r in rows]
    side, tok.padding_side = tok.padding_side, "left"  # left padding: every prompt ends at the last position
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            logits = model(**enc).logits[:, -1].float()                   # [B, V]
            out += logits.log_softmax(-1)[:, letters].tolist()             # [B, 4]
    finally:
        tok.padding_side = side
    return out


def parse_choice(text: str, choices: list[str]) -> int | None:
    """The option a free-text reply picks: the first standalone letter A-D ("B", "(c)", "Answer: D."), else the
    one option whose text it contains; None when it names none or several options by text."""
    m = re.search(r"(?<![A-Za-z])\(?([ABCDabcd])[).:]?(?![A-Za-z])", text.strip())
    if m and (m.group(1).isupper() or m.start(1) <= 1 or text[m.start(1) - 1] == "("):
        return LETTERS.index(m.group(1).upper())
    named = [i for i, c in enumerate(choices) if c.strip() and c.strip().lower() in text.lower()]
    return named[0] if len(named) == 1 else None


def score_rows(rows: list[dict], picks: list[int | None], metric: str) -> list[Scored]:
    return [Scored(metric, str(r.get("id", i)), float(p == r["answer"]), {"subject": r["subject"]})
            for i, (r, p) in enumerate(zip(rows, picks))]


def fixture_rows() -> list[dict]:
    """42 easy questions over six subjects, written for labkit; the right option's position cycles A-D."""
    raw = [
        ("elementary_mathematics", "What is 7 times 8?", "56", ["54", "64", "48"]),
        ("elementary_mathematics", "What is half of 90?", "45", ["40", "35", "50"]),
        ("elementary_mathematics", "How many sides does a hexagon have?", "6", ["5", "8", "7"]),
        ("elementary_mathematics", "What is 100 minus 37?", "63", ["73", "67", "53"]),
        ("elementary_mathematics", "Which number is prime?", "13", ["9", "15", "21"]),
        ("elementary_mathematics", "What is 3 squared?", "9", ["6", "12", "27"]),
        ("elementary_mathematics", "What fraction is equal to 0.5?", "1/2", ["1/4", "2/3", "1/5"]),
        ("high_school_geography", "What is the capital of France?", "Paris", ["Lyon", "Madrid", "Rome"]),
        ("high_school_geography", "Which is the largest ocean on Earth?", "The Pacific Ocean",
         ["The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean"]),
        ("high_school_geography", "On which continent is Egypt?", "Africa", ["Asia", "Europe", "South America"]),
        ("high_school_geography", "What is the capital of Japan?", "Tokyo", ["Kyoto", "Osaka", "Seoul"]),
        ("high_school_geography", "Which river flows through London?", "The Thames",
         ["The Seine", "The Danube", "The Nile"]),
        ("high_school_geography", "Which is the largest country by area?", "Russia", ["Canada", "China", "Brazil"]),
        ("high_school_geography", "The Sahara is a large what?", "Desert", ["Forest", "Lake", "Mountain range"]),
        ("high_school_biology", "Which organ pumps blood around the body?", "The heart",
         ["The lungs", "The liver", "The kidneys"]),
        ("high_school_biology", "What gas do plants take in for photosynthesis?", "Carbon dioxide",
         ["Oxygen", "Nitrogen", "Helium"]),
        ("high_school_biology", "What is the basic unit of life?", "The cell", ["The atom", "The organ", "The tissue"]),
        ("high_school_biology", "Which part of a plant takes up water from the soil?", "The roots",
         ["The flowers", "The leaves", "The seeds"]),
        ("high_school_biology", "How many legs does an insect have?", "Six", ["Four", "Eight", "Ten"]),
        ("high_school_biology", "What do bees collect from flowers to make honey?", "Nectar",
         ["Pollen only", "Sap", "Water"]),
        ("high_school_biology", "Which blood cells carry oxygen?", "Red blood cells",
         ["White blood cells", "Platelets", "Plasma"]),
        ("computer_science", "What does CPU stand for?", "Central processing unit",
         ["Computer power unit", "Central program utility", "Core processing user"]),
        ("computer_science", "How many bits are in a byte?", "8", ["4", "16", "2"]),
        ("computer_science", "Which of these is a programming language?", "Python", ["HTML", "JPEG", "HTTP"]),
        ("computer_science", "What number does the binary 101 stand for?", "5", ["3", "6", "101"]),
        ("computer_science", "Which data structure works first in, first out?", "A queue",
         ["A stack", "A tree", "A set"]),
        ("computer_science", "What does RAM stand for?", "Random access memory",
         ["Read append memory", "Rapid array module", "Remote access machine"]),
        ("computer_science", "Which value is a boolean?", "True", ["3.14", "'hello'", "[1, 2]"]),
        ("world_history", "Who was the first person to walk on the Moon?", "Neil Armstrong",
         ["Yuri Gagarin", "Buzz Aldrin", "John Glenn"]),
        ("world_history", "Which ancient people built the pyramids of Giza?", "The Egyptians",
         ["The Romans", "The Vikings", "The Aztecs"]),
        ("world_history", "In which century did the First World War begin?", "The 20th century",
         ["The 18th century", "The 19th century", "The 21st century"]),
        ("world_history", "Which city was the centre of the Roman Empire?", "Rome", ["Athens", "Cairo", "Paris"]),
        ("world_history", "Who painted the Mona Lisa?", "Leonardo da Vinci",
         ["Vincent van Gogh", "Pablo Picasso", "Claude Monet"]),
        ("world_history", "What did the Wright brothers build and fly in 1903?", "An aeroplane",
         ["A steam train", "A rocket", "A submarine"]),
        ("world_history", "Which wall fell in 1989?", "The Berlin Wall",
         ["Hadrian's Wall", "The Great Wall of China", "The Western Wall"]),
        ("physics", "What force pulls objects towards the Earth?", "Gravity", ["Magnetism", "Friction", "Tension"]),
        ("physics", "At what temperature does water boil at sea level?", "100 degrees Celsius",
         ["50 degrees Celsius", "0 degrees Celsius", "200 degrees Celsius"]),
        ("physics", "What is the unit of electrical resistance?", "The ohm", ["The volt", "The watt", "The newton"]),
        ("physics", "Which travels faster?", "Light", ["Sound", "A jet plane", "A bullet"]),
        ("physics", "What do we call the energy of a moving object?", "Kinetic energy",
         ["Potential energy", "Chemical energy", "Nuclear energy"]),
        ("physics", "What does a thermometer measure?", "Temperature", ["Mass", "Speed", "Pressure"]),
        ("physics", "Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Earth"]),
    ]
    rows = []
    for i, (subject, q, right, wrong) in enumerate(raw):
        pos = i % 4
        choices = wrong[:pos] + [right] + wrong[pos:]
        rows.append({"question": q, "subject": subject, "choices": choices, "answer": pos})
    return rows


def load(cfg: EvalConfig) -> list[dict]:
    rows = rows_from(cfg.source, lambda: read_fixture("mmlu"), lambda: load_hub("cais/mmlu", name="all", split="test"),
                     "mmlu")
    rows = subsample(rows, cfg.limit, cfg.seed)
    require_fields(rows, ("question", "subject", "choices", "answer"), "mmlu rows")
    for i, r in enumerate(rows):
        if len(r["choices"]) != 4 or r["answer"] not in range(4):
            raise DataError("mmlu rows", i, "choices" if len(r["choices"]) != 4 else "answer",
                            "needs exactly 4 choices and an answer index 0-3")
    return rows


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    modes = {m.strip() for m in cfg.mmlu_modes.split(",")}
    scores, info = [], {}
    picks_ll = picks_gen = replies = None
    if "loglik" in modes:
        lps = letter_logprobs(model, tok, rows, cfg.batch_size)
        picks_ll = [max(range(4), key=lp.__getitem__) for lp in lps]
        scores += score_rows(rows, picks_ll, "accuracy_loglik")
    if "generate" in modes:
        replies = [g.text for g in generate(model, tok, [question_text(r) for r in rows], max_new_tokens=8,
                                            batch_size=cfg.batch_size)]
        picks_gen = [parse_choice(t, r["choices"]) for t, r in zip(replies, rows)]
        scores += score_rows(rows, picks_gen, "accuracy_generate")
        info["unparsed_replies"] = sum(p is None for p in picks_gen)
    samples = [{"prompt": r["question"], "target": LETTERS[r["answer"]],
                **({"loglik pick": LETTERS[picks_ll[i]]} if picks_ll else {}),
                **({"output": replies[i]} if replies else {})} for i, r in enumerate(rows)]
    return TaskOutput(scores, samples, info)


TASK = register(Task(
    "mmlu",
    (Metric("accuracy_loglik", True, "the letter with the highest next-token log-probability is the answer"),
     Metric("accuracy_generate", True, "the greedy reply names the answer")),
    load, run, about="four-option multiple choice, by letter log-likelihood and by generation, sliced by subject",
))
