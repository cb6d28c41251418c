"""Long context: a needle-in-a-haystack probe, one fact hidden at several depths of filler text of several
lengths.

The haystack is bland filler; the needle is "The secret number for <place> is <n>." The model is asked for
the number. Accuracy by context length and by depth shows where retrieval breaks down (the middle of a long
context first, in most models). Rows are generated, not downloaded: there is no benchmark file to fetch, so
"hub" and "fixture" give the same probe.
"""

from __future__ import annotations

import random

from labkit.config import EvalConfig
from labkit.eval.tasks import Metric, Scored, Task, TaskOutput, register
from labkit.models.generate import generate
from labkit.rewards.verifiable import extract_number, numbers_equal

FILLER = [
    "The morning train left the station a few minutes late.",
    "A light rain fell over the hills for most of the afternoon.",
    "The garden had rows of beans, carrots and tall sunflowers.",
    "Someone had left a blue umbrella leaning against the door.",
    "The library stayed open late on Thursdays during the winter.",
    "Two cats slept in a patch of sunlight on the kitchen floor.",
    "The river was calm, and a few boats drifted near the bridge.",
    "At the market, the baker sold out of bread before noon.",
    "The old clock in the hall chimed every quarter of an hour.",
    "A group of students walked to the museum after lunch.",
    "The road curved gently past fields of wheat and barley.",
    "In the evening the wind dropped and the sky turned orange.",
    "The shop on the corner repaired bicycles and sold maps.",
    "Fresh snow covered the roofs of the village overnight.",
    "The teacher wrote the date neatly in the corner of the board.",
    "A kettle whistled somewhere upstairs and then fell silent.",
]
PLACES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Quebec", "Tbilisi", "Perth", "Cusco", "Bergen"]
QUESTION = "What is the secret number for {place}? Reply with the number only."


def load(cfg: EvalConfig) -> list[dict]:
    """One row per (context length, depth): the place, its secret number and where it goes."""
    rng = random.Random(cfg.seed)
    return [{"id": f"{length}@{depth:g}", "length": length, "depth": depth, "place": rng.choice(PLACES),
             "number": str(rng.randint(1000, 9999))}
            for length in cfg.ints("needle_lengths") for depth in cfg.floats("needle_depths")]


def haystack(tok, row: dict, seed: int = 0) -> str:
    """Filler sentences up to about row["length"] tokens, with the needle sentence at row["depth"] of the way
    in."""
    rng = random.Random(f"{seed}/{row['id']}")
    needle = f"The secret number for {row['place']} is {row['number']}."
    budget = row["length"] - len(tok.encode(QUESTION.format(place=row["place"]),
                                            add_special_tokens=False)) - 16
    sentences, used = [], len(tok.encode(needle, add_special_tokens=False))
    while True:
        s = rng.choice(FILLER)
        cost = len(tok.encode(" " + s, add_special_tokens=False))
        if used + cost > budget:
            break
        sentences.append(s)
        used += cost
    sentences.insert(round(row["depth"] * len(sentences)), needle)
    return " ".join(sentences)


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    """Ask for each hidden number, sliced by length and depth; lengths beyond the model's are skipped.

    Half the usual batch size, since these prompts are long; info lists the skipped lengths.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    fits = [r for r in rows if limit is None or r["length"] <= limit]
    prompts = [f"{haystack(tok, r, cfg.seed)}\n\n{QUESTION.format(place=r['place'])}" for r in fits]
    outs = generate(model, tok, prompts, max_new_tokens=24, batch_size=max(1, cfg.batch_size // 2))
    scores, samples = [], []
    for r, p, o in zip(fits, prompts, outs):
        ok = numbers_equal(extract_number(o.text), r["number"])
        scores.append(Scored("accuracy", r["id"], float(ok),
                             {"length": str(r["length"]), "depth": f"{r['depth']:g}"}))
        samples.append({"prompt": f"[{r['length']} tokens, needle at {r['depth']:.0%}] …{p[-160:]}",
                        "output": o.text, "target": r["number"], "score": float(ok)})
    info = {"skipped_longer_than_model": sorted({r["length"] for r in rows if r not in fits})}
    return TaskOutput(scores, samples, info)


TASK = register(Task(
    "needle", (Metric("accuracy", True, "the hidden number was given back, by context length and depth"),),
    load, run, about="needle in a haystack over context lengths and depths",
))
