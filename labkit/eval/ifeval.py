"""Instruction following in the IFEval style: each prompt carries constraints that code can check.

Rows use google/IFEval's schema: `key`, `prompt`, `instruction_id_list` and `kwargs` (one dict per
instruction; IFEval's dicts carry every possible key, most of them None, so None means absent). Each
supported instruction id has a small checker in CHECKERS. An id labkit has no checker for is skipped and
counted in the output's info, never scored as passed or failed; a row left with no checkable instruction is
dropped (and counted).

Metrics (strict, as IFEval's paper defines them): `prompt_accuracy`, every instruction of a prompt followed;
`instruction_accuracy`, per instruction, sliced by instruction id.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable

from labkit.config import EvalConfig
from labkit.errors import DataError
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


def _words(text: str) -> list[str]:
    return re.findall(r"\b\w+\b", text)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def _compare(n: int, relation: str, target: int) -> bool:
    if relation == "less than":
        return n < target
    if relation == "at least":
        return n >= target
    raise ValueError(f"relation must be 'less than' or 'at least', got {relation!r}")


def _json_body(text: str) -> str:
    """The reply without a surrounding ``` fence (IFEval accepts fenced JSON)."""
    text = text.strip()
    fenced = re.fullmatch(r"```(?:json|JSON)?\s*(.*?)\s*```", text, re.S)
    return fenced.group(1) if fenced else text


def _is_json(text: str) -> bool:
    try:
        json.loads(_json_body(text))
    except ValueError:
        return False
    return True


def _bullets(text: str) -> int:
    return len(re.findall(r"^\s*[*-]\s", text, re.M))


CHECKERS: dict[str, Callable[..., bool]] = {
    "length_constraints:number_words": lambda r, relation, num_words: _compare(len(_words(r)), relation, num_words),
    "length_constraints:number_sentences":
        lambda r, relation, num_sentences: _compare(len(_sentences(r)), relation, num_sentences),
    "keywords:existence": lambda r, keywords: all(re.search(rf"\b{re.escape(k)}\b", r, re.I) for k in keywords),
    "keywords:forbidden_words":
        lambda r, forbidden_words: not any(re.search(rf"\b{re.escape(w)}\b", r, re.I) for w in forbidden_words),
    "keywords:frequency": lambda r, keyword, frequency, relation: _compare(
        len(re.findall(rf"\b{re.escape(keyword)}\b", r, re.I)), relation, frequency),
    "detectable_format:json_format": lambda r: _is_json(r),
    "detectable_format:number_bullet_lists": lambda r, num_bullets: _bullets(r) == num_bullets,
    "detectable_format:title": lambda r: bool(re.search(r"<<[^<>\n]+>>", r)),
    "change_case:english_lowercase": lambda r: bool(re.search(r"[a-z]", r)) and r == r.lower(),
    "change_case:english_capital": lambda r: bool(re.search(r"[A-Z]", r)) and r == r.upper(),
    "punctuation:no_comma": lambda r: "," not in r,
    "startend:end_checker": lambda r, end_phrase: r.strip().lower().endswith(end_phrase.strip().lower()),
    "startend:quotation": lambda r: len(r.strip()) > 1 and r.strip()[0] == r.strip()[-1] == '"',
    "detectable_content:postscript":
        lambda r, postscript_marker: bool(re.search(rf"^\s*{re.escape(postscript_marker)}", r, re.M | re.I)),
}


def check(instruction: str, reply: str, kwargs: dict | None) -> bool:
    """Whether `reply` follows one instruction (KeyError for an id without a checker)."""
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return CHECKERS[instruction](reply, **args)


def score_reply(row: dict, reply: str, index: int = 0) -> tuple[list[Scored], list[str]]:
    """Scored items (one per supported instruction, then the prompt-level one) and the unsupported ids."""
    key = str(row.get("key", index))
    pairs = list(zip(row["instruction_id_list"], row["kwargs"]))
    supported = [(i, (iid, kw)) for i, (iid, kw) in enumerate(pairs) if iid in CHECKERS]
    scores = [Scored("instruction_accuracy", f"{key}/{i}", float(check(iid, reply, kw)), {"instruction": iid})
              for i, (iid, kw) in supported]
    if scores:
        n = "1" if len(scores) == 1 else "2+"
        scores.append(Scored("prompt_accuracy", key, float(all(s.score for s in scores)), {"n_instructions": n}))
    return scores, [iid for iid, _ in pairs if iid not in CHECKERS]


def fixture_rows() -> list[dict]:
    """30 prompts written for labkit, every checker at least once, some with two instructions."""
    R = [  # (prompt, [(instruction id, kwargs), ...])
        ("Describe a rainy day in fewer than 40 words.", [("length_constraints:number_words",
                                                          {"relation": "less than", "num_words": 40})]),
        ("Write at least 60 words about why people keep pets.", [("length_constraints:number_words",
                                                                  {"relation": "at least", "num_words": 60})]),
        ("Explain what a rainbow is in fewer than 3 sentences.",
         [("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3})]),
        ("Tell a short story about a fox. Use at least 4 sentences.",
         [("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 4})]),
        ("Give advice for a first job interview. Mention the words 'punctual' and 'questions'.",
         [("keywords:existence", {"keywords": ["punctual", "questions"]})]),
        ("Describe the ocean without using the words 'blue' or 'water'.",
         [("keywords:forbidden_words", {"forbidden_words": ["blue", "water"]})]),
        ("Write a short poem in which the word 'moon' appears at least 3 times.",
         [("keywords:frequency", {"keyword": "moon", "frequency": 3, "relation": "at least"})]),
        ("List three fruits and their colours. Answer in JSON format.", [("detectable_format:json_format", {})]),
        ("Give me exactly 3 tips for sleeping better, as a markdown bullet list using '* '.",
         [("detectable_format:number_bullet_lists", {"num_bullets": 3})]),
        ("Write a two-line poem about spring with a title wrapped in double angular brackets, like <<title>>.",
         [("detectable_format:title", {})]),
        ("Explain how a bicycle works. Your whole reply must be in lowercase letters, no capitals at all.",
         [("change_case:english_lowercase", {})]),
        ("Write a short motivational message. Your whole reply must be in capital letters.",
         [("change_case:english_capital", {})]),
        ("Describe your ideal weekend without using any commas.", [("punctuation:no_comma", {})]),
        ("Say something kind about teachers. End your reply with the exact phrase 'Thank you.'",
         [("startend:end_checker", {"end_phrase": "Thank you."})]),
        ("Wrap your entire reply in double quotation marks. What is your favourite season and why?",
         [("startend:quotation", {})]),
        ("Write a short note to a neighbour about a lost cat. At the end, add a postscript starting with P.S.",
         [("detectable_content:postscript", {"postscript_marker": "P.S."})]),
        ("Describe a city at night in fewer than 50 words and without commas.",
         [("length_constraints:number_words", {"relation": "less than", "num_words": 50}),
          ("punctuation:no_comma", {})]),
        ("Give two reasons to learn to cook, all in lowercase, and mention the word 'healthy'.",
         [("change_case:english_lowercase", {}), ("keywords:existence", {"keywords": ["healthy"]})]),
        ("Return a JSON object with keys 'name' and 'age' for a made-up person. Do not use the word 'John'.",
         [("detectable_format:json_format", {}), ("keywords:forbidden_words", {"forbidden_words": ["John"]})]),
        ("Write 2 bullet points using '* ' about recycling and end with the phrase 'Any questions?'",
         [("detectable_format:number_bullet_lists", {"num_bullets": 2}),
          ("startend:end_checker", {"end_phrase": "Any questions?"})]),
        ("Name four planets. Use fewer than 20 words.", [("length_constraints:number_words",
                                                          {"relation": "less than", "num_words": 20})]),
        ("Write a haiku about snow in capital letters only and with a title in double angular brackets.",
         [("change_case:english_capital", {}), ("detectable_format:title", {})]),
        ("Explain photosynthesis to a child and use the word 'sunlight' at least twice.",
         [("keywords:frequency", {"keyword": "sunlight", "frequency": 2, "relation": "at least"})]),
        ("What is a good breakfast? Answer in at least 2 sentences and mention 'protein'.",
         [("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2}),
          ("keywords:existence", {"keywords": ["protein"]})]),
        ("Write a thank-you message for a gift, wrapped in double quotes, without commas.",
         [("startend:quotation", {}), ("punctuation:no_comma", {})]),
        ("Give 4 study tips as a bullet list using '* '.", [("detectable_format:number_bullet_lists", {"num_bullets": 4})]),
        ("Summarise why exercise matters in fewer than 25 words.",
         [("length_constraints:number_words", {"relation": "less than", "num_words": 25})]),
        ("Invite a friend to a picnic. End with a postscript that starts with P.S. and mention 'sandwiches'.",
         [("detectable_content:postscript", {"postscript_marker": "P.S."}),
          ("keywords:existence", {"keywords": ["sandwiches"]})]),
        ("Write one sentence about trees that does not use the word 'green'.",
         [("keywords:forbidden_words", {"forbidden_words": ["green"]})]),
        ("Describe a robot in JSON format with keys 'name', 'colour' and 'job'.", [("detectable_format:json_format", {})]),
    ]
    return [{"key": 1000 + i, "prompt": p, "instruction_id_list": [iid for iid, _ in ins],
             "kwargs": [kw for _, kw in ins]} for i, (p, ins) in enumerate(R)]


def load(cfg: EvalConfig) -> list[dict]:
    rows = rows_from(cfg.source, lambda: read_fixture("ifeval"), lambda: load_hub("google/IFEval", split="train"),
                     "ifeval")
    rows = subsample(rows, cfg.limit, cfg.seed)
    require_fields(rows, ("prompt", "instruction_id_list", "kwargs"), "ifeval rows")
    for i, r in enumerate(rows):
        if len(r["instruction_id_list"]) != len(r["kwargs"]):
            raise DataError("ifeval rows", i, "kwargs", f"{len(r['kwargs'])} kwargs dicts for "
                            f"{len(r['instruction_id_list'])} instructions; IFEval pairs them one to one")
    return rows


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    replies = [g.text for g in generate(model, tok, [r["prompt"] for r in rows], max_new_tokens=cfg.max_new_tokens,
                                        batch_size=cfg.batch_size)]
    scores, samples, unsupported, dropped = [], [], Counter(), 0
    for i, (row, reply) in enumerate(zip(rows, replies)):
        got, missing = score_reply(row, reply, i)
        unsupported.update(missing)
        dropped += not got
        scores += got
        if got:
            samples.append({"prompt": row["prompt"], "output": reply, "target": ", ".join(row["instruction_id_list"]),
                            "score": got[-1].score})
    return TaskOutput(scores, samples, {"unsupported": dict(unsupported), "rows_without_checkable_instructions": dropped})


TASK = register(Task(
    "ifeval",
    (Metric("prompt_accuracy", True, "every checkable instruction of the prompt followed (strict)"),
     Metric("instruction_accuracy", True, "share of instructions followed, sliced by instruction id")),
    load, run, about="verifiable instructions (word counts, keywords, JSON, bullets, case…) checked by code",
))
