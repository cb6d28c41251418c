"""Instruction following in the IFEval style: each prompt carries constraints that code can check.

Rows use google/IFEval's schema: `key`, `prompt`, `instruction_id_list` and `kwargs` (one dict per
instruction; on the hub every dict carries every possible key, most of them None, so None means absent).
Each of IFEval's 25 instruction ids has a small checker in CHECKERS, so every row of google/IFEval is scored
on all its instructions. An id without a checker (none in IFEval itself; a variant dataset may add some) is
skipped and counted in the output's info, never scored as passed or failed; a row left with no checkable
instruction is dropped (and counted).

Metrics, as IFEval's paper defines them:
  prompt_accuracy / instruction_accuracy              strict: the reply as written
  prompt_accuracy_loose / instruction_accuracy_loose  loose: an instruction also counts as followed when a
      variant of the reply follows it (markdown asterisks removed, first and/or last line dropped), which
      forgives a "Sure! Here is…" preamble, a closing "Let me know…" line and ** markup.

Checkers follow IFEval's rules, odd ones included, so numbers stay comparable with published ones (fenced
JSON is JSON; an empty reply follows nothing; sections, paragraphs and placeholders are counted IFEval's way,
noted at each checker). language:response_language uses `langdetect`, as IFEval does. They differ where
IFEval needs nltk: sentences are split on . ! ? followed by a space, so "e.g. this" counts as two; capital
words come from a small regex tokenizer close to nltk's word_tokenize; and the lowercase/capital checks skip
IFEval's extra "is it English" detection.
"""

from __future__ import annotations

import inspect
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
    fixture_label,
    load_hub,
    read_fixture,
    register,
    require_fields,
    rows_from,
    subsample,
)
from labkit.models.generate import generate

HUB = "google/IFEval"
RELATIONS = ("less than", "at least")


# ---- text helpers ------------------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)  # IFEval's word tokenizer: "don't" is two words


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if re.search(r"\w", s)]


def _compare(n: int, relation: str, target: int) -> bool:
    return n < target if relation == "less than" else n >= target  # relation is validated in checker_args


def _word_re(word: str) -> re.Pattern:
    # Lookarounds rather than \b so keywords that start or end in punctuation ("P.S.", "C++") still match.
    return re.compile(rf"(?<!\w){re.escape(word.strip())}(?!\w)", re.I)


def _parts(text: str, separator: str) -> list[str] | None:
    """The non-blank pieces of `text` between `separator`s (a regex), or None when a blank piece sits between
    two separators: IFEval's rule for *** paragraphs and ****** responses (only the ends may be blank)."""
    pieces = re.split(separator, text)
    if any(not p.strip() for p in pieces[1:-1]):
        return None
    return [p for p in pieces if p.strip()]


# Words as nltk's word_tokenize splits them, near enough to count capitalised ones: contractions part at the
# apostrophe ("DON'T" -> DO N'T, "I'm" -> I 'm) and "&" splits ("AT&T" -> AT T); hyphens, dots, slashes and
# a curly apostrophe keep a word whole ("X-RAY", "U.S", "AND/OR"). Lone punctuation has no case: never counts.
_TOKEN = re.compile(r"\w+(?=n't)|n't|'\w+|\w+(?:[-./\u2019]\w+)*", re.I)


def _unfence(text: str) -> str:
    """The reply without a ``` fence around it, as IFEval strips it before parsing JSON."""
    text = text.strip()
    text = re.sub(r"^```(?:json)?", "", text, flags=re.I)
    return text.removesuffix("```").strip()


# ---- checkers: (reply, **kwargs) -> followed ---------------------------------------------------------------

def number_words(reply: str, *, relation: str, num_words: int) -> bool:
    """The word count (IFEval's `\\w+` words) is less than / at least `num_words`."""
    return _compare(len(_words(reply)), relation, num_words)


def number_sentences(reply: str, *, relation: str, num_sentences: int) -> bool:
    """The sentence count (split on . ! ? and a space) is less than / at least `num_sentences`."""
    return _compare(len(_sentences(reply)), relation, num_sentences)


def keywords_existence(reply: str, *, keywords: list[str]) -> bool:
    """Every keyword appears as a whole word, ignoring case."""
    return all(_word_re(k).search(reply) for k in keywords)


def no_forbidden_words(reply: str, *, forbidden_words: list[str]) -> bool:
    """None of the forbidden words appears as a whole word, ignoring case ("blueberry" is not "blue")."""
    return not any(_word_re(w).search(reply) for w in forbidden_words)


def keyword_frequency(reply: str, *, keyword: str, frequency: int, relation: str) -> bool:
    """The keyword's whole-word occurrences (any case) are less than / at least `frequency`."""
    return _compare(len(_word_re(keyword).findall(reply)), relation, frequency)


def json_format(reply: str) -> bool:
    """The reply parses as JSON, once a ``` or ```json fence around it is removed."""
    try:
        json.loads(_unfence(reply))
    except ValueError:
        return False
    return True


def number_bullet_lists(reply: str, *, num_bullets: int) -> bool:
    """Exactly `num_bullets` markdown bullet lines."""
    # A bullet is a line starting "* " or "- "; "**bold**" and "---" rules are not bullets.
    return len(re.findall(r"^[ \t]*[*-][ \t]", reply, re.M)) == num_bullets


def title(reply: str) -> bool:
    """A non-blank title in double angular brackets, <<like this>>, on one line."""
    return any(t.strip() for t in re.findall(r"<<([^\n]+?)>>", reply))


def english_lowercase(reply: str) -> bool:
    """No capital letter anywhere (and at least one letter), in English as langdetect reads it."""
    return reply.islower() and response_language(reply, language="en")


def english_capital(reply: str) -> bool:
    """No lowercase letter anywhere (and at least one letter), in English as langdetect reads it."""
    return reply.isupper() and response_language(reply, language="en")


def no_comma(reply: str) -> bool:
    """No ASCII comma anywhere in the reply."""
    return "," not in reply


def end_checker(reply: str, *, end_phrase: str) -> bool:
    """The reply ends with `end_phrase`, ignoring case and surrounding whitespace."""
    # Closing quotes are forgiven, as in IFEval, so this combines with startend:quotation.
    return reply.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def quotation(reply: str) -> bool:
    """The whole reply is wrapped in double quotation marks (a lone `"` does not count)."""
    reply = reply.strip()
    return len(reply) > 1 and reply[0] == reply[-1] == '"'


def postscript(reply: str, *, postscript_marker: str) -> bool:
    """A line starts with `postscript_marker` (e.g. "P.S."), ignoring case."""
    # At the start of a line, after optional markdown emphasis; "P. S." is accepted for "P.S.".
    marker = re.escape(postscript_marker.strip()).replace(r"\.", r"\.\s?")
    return bool(re.search(rf"^[ \t>*_]*{marker}", reply, re.M | re.I))


def highlighted_sections(reply: str, *, num_highlights: int) -> bool:
    """At least `num_highlights` non-blank markdown highlights, *like this* or **like this**, on one line."""
    # IFEval counts *…* and **…** spans in two separate passes; "**bold**" counts once (the single-asterisk
    # pass only sees its two empty "**" pairs) and a bullet's lone "* " never pairs up.
    spans = re.findall(r"\*([^\n*]*)\*", reply) + re.findall(r"\*\*([^\n*]*)\*\*", reply)
    return sum(bool(s.strip()) for s in spans) >= num_highlights


def repeat_prompt(reply: str, *, prompt_to_repeat: str) -> bool:
    """The reply opens with `prompt_to_repeat`, word for word but ignoring case and surrounding whitespace."""
    return reply.strip().lower().startswith(prompt_to_repeat.strip().lower())


def letter_frequency(reply: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    """The character `letter` occurs less than / at least `let_frequency` times, ignoring case."""
    # Every occurrence counts, inside words too; IFEval's data also asks for "#" and "!" this way.
    return _compare(reply.lower().count(letter.strip().lower()), let_relation, let_frequency)


def response_language(reply: str, *, language: str) -> bool:
    """langdetect reads the reply as `language`, an ISO 639-1 code such as "fr" (IFEval's detector)."""
    from langdetect import DetectorFactory, LangDetectException, detect

    DetectorFactory.seed = 0  # langdetect samples n-grams at random: a fixed seed makes verdicts repeatable
    try:
        return detect(reply) == language
    except LangDetectException:
        return True  # IFEval counts a reply with nothing to detect (no letters, e.g. "42!") as followed


def number_placeholders(reply: str, *, num_placeholders: int) -> bool:
    """At least `num_placeholders` placeholders in square brackets, like [address], each on one line."""
    # Any bracket pair counts, as in IFEval: an empty "[]" or a markdown link's [text] as well.
    return len(re.findall(r"\[.*?\]", reply)) >= num_placeholders


def number_paragraphs(reply: str, *, num_paragraphs: int) -> bool:
    """Exactly `num_paragraphs` paragraphs separated by the markdown divider ***."""
    # IFEval's reading: blank text before the first or after the last divider is no paragraph, but a blank
    # one between two dividers fails the instruction; *** in a longer run ("******", "***bold***") divides.
    parts = _parts(reply, r"\*\*\*")
    return parts is not None and len(parts) == num_paragraphs


def capital_word_frequency(reply: str, *, capital_frequency: int, capital_relation: str) -> bool:
    """Words in capitals only ("NASA", "I", "X-RAY") occur less than / at least `capital_frequency` times."""
    return _compare(sum(t.isupper() for t in _TOKEN.findall(reply)), capital_relation, capital_frequency)


def two_responses(reply: str) -> bool:
    """Two different responses separated by six asterisks, ******, with nothing but blanks around them."""
    parts = _parts(reply, re.escape("******"))
    return parts is not None and len(parts) == 2 and parts[0].strip() != parts[1].strip()


def multiple_sections(reply: str, *, section_spliter: str, num_sections: int) -> bool:
    """At least `num_sections` section marks: `section_spliter` then a number, as in "SECTION 2"."""
    # IFEval counts the marks anywhere in the text (not only at a line start), matching case ("Section 1" is
    # no "SECTION" mark) and with at most one whitespace character before the number; and it asks for at
    # least `num_sections`, although its prompts say "must have N sections". `section_spliter` is IFEval's
    # spelling of the key.
    return len(re.findall(rf"{re.escape(section_spliter.strip())}\s?\d+", reply)) >= num_sections


def nth_paragraph_first_word(reply: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """Exactly `num_paragraphs` paragraphs separated by blank lines, paragraph `nth_paragraph` (from 1)
    starting with the word `first_word`, ignoring case and the punctuation that follows it."""
    # IFEval's reading, kept: paragraphs are pieces between "\n\n"; blank pieces are not counted but still
    # hold a position when paragraph n is looked up, so "a\n\n\n\nb" has 2 paragraphs and a blank second
    # one. The first word is the first whitespace-separated token, leading ' then " stripped, cut at the
    # first . , ? ! ' or " ("Weekend's" reads weekend): "**Weekend**" or "Weekend:" do not match.
    pieces = reply.split("\n\n")
    count = sum(bool(p.strip()) for p in pieces)
    if nth_paragraph > count or not pieces[nth_paragraph - 1].strip():
        return False
    token = pieces[nth_paragraph - 1].split()[0].lstrip("'").lstrip('"')
    word = re.split(r"[.,?!'\"]", token, maxsplit=1)[0].lower()
    return count == num_paragraphs and word == first_word.strip().lower()


CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def constrained_response(reply: str) -> bool:
    """One of IFEval's set answers appears: "My answer is yes.", "My answer is no." or "My answer is
    maybe."."""
    # Anywhere in the reply and matching case, as IFEval checks it: words around the answer are allowed.
    return any(option in reply for option in CONSTRAINED_OPTIONS)


CHECKERS: dict[str, Callable[..., bool]] = {
    "length_constraints:number_words": number_words,
    "length_constraints:number_sentences": number_sentences,
    "keywords:existence": keywords_existence,
    "keywords:forbidden_words": no_forbidden_words,
    "keywords:frequency": keyword_frequency,
    "detectable_format:json_format": json_format,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:title": title,
    "change_case:english_lowercase": english_lowercase,
    "change_case:english_capital": english_capital,
    "punctuation:no_comma": no_comma,
    "startend:end_checker": end_checker,
    "startend:quotation": quotation,
    "detectable_content:postscript": postscript,
    "detectable_format:number_highlighted_sections": highlighted_sections,
    "combination:repeat_prompt": repeat_prompt,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
    "detectable_content:number_placeholders": number_placeholders,
    "length_constraints:number_paragraphs": number_paragraphs,
    "change_case:capital_word_frequency": capital_word_frequency,
    "combination:two_responses": two_responses,
    "detectable_format:multiple_sections": multiple_sections,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_format:constrained_response": constrained_response,
}

_INTS = {"num_words", "num_sentences", "frequency", "num_bullets", "num_highlights", "num_placeholders",
         "num_paragraphs", "nth_paragraph", "num_sections", "let_frequency", "capital_frequency"}
_RELATION_KEYS = {"relation", "let_relation", "capital_relation"}
_WORD_LISTS = {"keywords", "forbidden_words"}


def checker_args(instruction: str, kwargs: dict | None) -> dict:
    """The keyword arguments one checker takes, from an IFEval kwargs dict: None means absent and keys the
    checker does not take are ignored (IFEval's dicts carry them all). DataError(field=name) when a needed one
    is missing or unusable; KeyError for an id without a checker."""
    params = [p for p in inspect.signature(CHECKERS[instruction]).parameters if p != "reply"]
    if kwargs is not None and not isinstance(kwargs, dict):
        raise DataError("ifeval kwargs", None, None,
                        f"{instruction}: expected a dict, got {type(kwargs).__name__}")
    args = {}
    for name in params:
        value = (kwargs or {}).get(name)
        if value is None:
            raise DataError("ifeval kwargs", None, name, f"{instruction} needs it")
        if name in _INTS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise DataError("ifeval kwargs", None, name, f"{value!r} is not a whole number")
            value = int(value)
        elif name in _WORD_LISTS:
            if isinstance(value, str) or not all(isinstance(w, str) and w.strip() for w in value):
                raise DataError("ifeval kwargs", None, name, f"{value!r} is not a list of words")
            value = list(value)
        elif not isinstance(value, str) or not value.strip():
            raise DataError("ifeval kwargs", None, name, f"{value!r} is not a non-empty string")
        if name in _RELATION_KEYS and value not in RELATIONS:
            raise DataError("ifeval kwargs", None, name, f"{value!r}: IFEval uses 'less than' or 'at least'")
        if name == "letter" and len(value.strip()) != 1:
            raise DataError("ifeval kwargs", None, name, f"{value!r} is not a single character")
        if name == "nth_paragraph" and value < 1:
            raise DataError("ifeval kwargs", None, name, f"{value}: paragraphs are numbered from 1")
        args[name] = value
    return args


def check(instruction: str, reply: str, kwargs: dict | None = None) -> bool:
    """Whether `reply` follows one instruction, strictly. An empty reply follows nothing (as in IFEval), so
    saying nothing cannot pass "no commas" or "avoid the word X"."""
    args = checker_args(instruction, kwargs)
    return bool(reply.strip()) and CHECKERS[instruction](reply, **args)


def loose_variants(reply: str) -> list[str]:
    """IFEval's loose readings of a reply: as written, without its first line, last line or both, and each of
    those with every '*' removed."""
    lines = reply.split("\n")
    cut = [reply, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return cut + [v.replace("*", "") for v in cut]


def check_loose(instruction: str, reply: str, kwargs: dict | None = None) -> bool:
    """Whether any of `loose_variants(reply)` follows one instruction; blank variants follow nothing."""
    args = checker_args(instruction, kwargs)
    return any(v.strip() and CHECKERS[instruction](v, **args) for v in loose_variants(reply))


def score_reply(row: dict, reply: str, index: int = 0, *, loose: bool = False) -> tuple[list[Scored],
                                                                                        list[str]]:
    """Scored items for one reply and the row's unsupported instruction ids.

    Items: one `instruction_accuracy` per supported instruction (id "<key>/<position>", slice = instruction
    id), then one `prompt_accuracy` (slice n_instructions "1" / "2+", counting supported ones); with
    loose=True the same again under the `_loose` metric names. No items when nothing is supported."""
    key = str(row.get("key", index))
    pairs = list(zip(row["instruction_id_list"], row["kwargs"]))
    supported = [(i, iid, kw) for i, (iid, kw) in enumerate(pairs) if iid in CHECKERS]
    unsupported = [iid for iid, _ in pairs if iid not in CHECKERS]
    if not supported:
        return [], unsupported
    n = {"n_instructions": "1" if len(supported) == 1 else "2+"}
    scores = []
    for suffix, checker in [("", check)] + ([("_loose", check_loose)] if loose else []):
        items = [Scored(f"instruction_accuracy{suffix}", f"{key}/{i}", float(checker(iid, reply, kw)),
                        {"instruction": iid}) for i, iid, kw in supported]
        scores += [*items, Scored(f"prompt_accuracy{suffix}", key, float(all(s.score for s in items)), n)]
    return scores, unsupported


def fixture_rows() -> list[dict]:
    """40 prompts written for labkit, every checker (all 25 IFEval ids) at least once, some with two
    instructions."""
    R = [  # (prompt, [(instruction id, kwargs), ...])
        ("Describe a rainy day in fewer than 40 words.", [("length_constraints:number_words",
                                                          {"relation": "less than", "num_words": 40})]),
        ("Write at least 60 words about why people keep pets.", [("length_constraints:number_words",
                                                                  {"relation": "at least",
                                                                   "num_words": 60})]),
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
        ("List three fruits and their colours. Answer in JSON format.",
         [("detectable_format:json_format", {})]),
        ("Give me exactly 3 tips for sleeping better, as a markdown bullet list using '* '.",
         [("detectable_format:number_bullet_lists", {"num_bullets": 3})]),
        ("Write a two-line poem about spring with a title wrapped in double angular brackets, "
         "like <<title>>.",
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
        ("Write a short note to a neighbour about a lost cat. "
         "At the end, add a postscript starting with P.S.",
         [("detectable_content:postscript", {"postscript_marker": "P.S."})]),
        ("Describe a city at night in fewer than 50 words and without commas.",
         [("length_constraints:number_words", {"relation": "less than", "num_words": 50}),
          ("punctuation:no_comma", {})]),
        ("Give two reasons to learn to cook, all in lowercase, and mention the word 'healthy'.",
         [("change_case:english_lowercase", {}), ("keywords:existence", {"keywords": ["healthy"]})]),
        ("Return a JSON object with keys 'name' and 'age' for a made-up person. Do not use the word 'John'.",
         [("detectable_format:json_format", {}),
          ("keywords:forbidden_words", {"forbidden_words": ["John"]})]),
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
        ("Give 4 study tips as a bullet list using '* '.",
         [("detectable_format:number_bullet_lists", {"num_bullets": 4})]),
        ("Summarise why exercise matters in fewer than 25 words.",
         [("length_constraints:number_words", {"relation": "less than", "num_words": 25})]),
        ("Invite a friend to a picnic. End with a postscript that starts with P.S. and mention 'sandwiches'.",
         [("detectable_content:postscript", {"postscript_marker": "P.S."}),
          ("keywords:existence", {"keywords": ["sandwiches"]})]),
        ("Write one sentence about trees that does not use the word 'green'.",
         [("keywords:forbidden_words", {"forbidden_words": ["green"]})]),
        ("Describe a robot in JSON format with keys 'name', 'colour' and 'job'.",
         [("detectable_format:json_format", {})]),
        ("Explain how to brew a pot of tea. Mark at least 2 key parts in italics with single asterisks, "
         "like *warm the pot*.",
         [("detectable_format:number_highlighted_sections", {"num_highlights": 2})]),
        ("Suggest a name for a pet goldfish. Start your reply by copying that first sentence exactly, then "
         "answer.",
         [("combination:repeat_prompt", {"prompt_to_repeat": "Suggest a name for a pet goldfish."})]),
        ("Write a tongue twister of fewer than 30 words in which the letter 'b' appears at least 8 times.",
         [("keywords:letter_frequency", {"letter": "b", "let_frequency": 8, "let_relation": "at least"}),
          ("length_constraints:number_words", {"relation": "less than", "num_words": 30})]),
        ("Wish a colleague a happy birthday. Reply only in German.",
         [("language:response_language", {"language": "de"})]),
        ("Write a short template for a club newsletter with at least 3 blanks in square brackets, "
         "like [club name].",
         [("detectable_content:number_placeholders", {"num_placeholders": 3})]),
        ("Give reasons to take the stairs in 3 paragraphs divided by lines of ***, and use at least 2 words "
         "written in ALL CAPITALS.",
         [("length_constraints:number_paragraphs", {"num_paragraphs": 3}),
          ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"})]),
        ("Give two different names for a new bakery, separated by a line of six asterisks (******).",
         [("combination:two_responses", {})]),
        ("Plan a weekend by the lake in 2 parts that start with 'Day 1' and 'Day 2'. Keep all-capital words "
         "to fewer than 2.",
         [("detectable_format:multiple_sections", {"section_spliter": "Day", "num_sections": 2}),
          ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"})]),
        ("Write 2 paragraphs about autumn, separated by a blank line. The second paragraph must begin with "
         "the word 'leaves'.",
         [("length_constraints:nth_paragraph_first_word",
           {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "leaves"})]),
        ("Should a cactus be watered every day? Reply with exactly one of 'My answer is yes.', "
         "'My answer is no.' or 'My answer is maybe.'",
         [("detectable_format:constrained_response", {})]),
    ]
    return [{"key": 1000 + i, "prompt": p, "instruction_id_list": [iid for iid, _ in ins],
             "kwargs": [kw for _, kw in ins]} for i, (p, ins) in enumerate(R)]


def validate(rows: list[dict], source: str) -> None:
    """DataError naming the source, row and field of the first malformed row;
    unsupported ids pass unchecked."""
    require_fields(rows, ("prompt", "instruction_id_list", "kwargs"), source)
    for i, row in enumerate(rows):
        ids, kwargs = row["instruction_id_list"], row["kwargs"]
        if not isinstance(row["prompt"], str):
            raise DataError(source, i, "prompt", f"expected text, got {type(row['prompt']).__name__}")
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise DataError(source, i, "instruction_id_list", "expected a list of instruction ids")
        if not isinstance(kwargs, list) or len(kwargs) != len(ids):
            raise DataError(source, i, "kwargs",
                            f"{len(kwargs) if isinstance(kwargs, list) else 'no list of'} "
                            f"kwargs dicts for {len(ids)} instructions; IFEval pairs them one to one")
        for j, (iid, kw) in enumerate(zip(ids, kwargs)):
            if iid in CHECKERS:
                try:
                    checker_args(iid, kw)
                except DataError as exc:
                    field = f"kwargs[{j}]" + (f".{exc.field}" if exc.field else "")
                    raise DataError(source, i, field, str(exc).split(": ", 1)[-1]) from None


def load(cfg: EvalConfig) -> list[dict]:
    """Rows from google/IFEval (train, its only split), the shipped IFEval prompts or the fixture, checked
    whole, then subsampled."""
    used = {}

    def hub():
        used["source"] = f"{HUB} (train)"
        return load_hub(HUB, split="train")

    def fixture():
        used["source"] = fixture_label("ifeval")
        return read_fixture("ifeval")

    rows = rows_from(cfg.source, fixture, hub, "ifeval")
    validate(rows, used["source"])  # before subsampling, so a row number points into the source
    return subsample(rows, cfg.limit, cfg.seed)


def run(model, tok, rows: list[dict], cfg: EvalConfig) -> TaskOutput:
    """Greedy replies scored strict and loose; info counts unsupported ids and rows with none to check."""
    replies = [g.text for g in generate(model, tok, [r["prompt"] for r in rows],
                                        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)]
    scores, samples, unsupported, dropped = [], [], Counter(), 0
    for i, (row, reply) in enumerate(zip(rows, replies)):
        got, missing = score_reply(row, reply, i, loose=True)
        unsupported.update(missing)
        if not got:
            dropped += 1
            continue
        scores += got
        failed = [s.slices["instruction"] for s in got if s.metric == "instruction_accuracy" and not s.score]
        strict = next(s.score for s in got if s.metric == "prompt_accuracy")
        samples.append({"prompt": row["prompt"], "output": reply,
                        "target": ", ".join(row["instruction_id_list"]),
                        "score": strict, "failed": failed})
    return TaskOutput(scores, samples,
                      {"unsupported": dict(unsupported), "rows_without_checkable_instructions": dropped,
                                        "rows_scored": len(rows) - dropped})


TASK = register(Task(
    "ifeval",
    (Metric("prompt_accuracy", True, "every checkable instruction of the prompt followed (strict)"),
     Metric("instruction_accuracy", True,
            "share of instructions followed (strict), sliced by instruction id"),
     Metric("prompt_accuracy_loose", True,
            "as prompt_accuracy, forgiving a preamble/closing line and '*' markup"),
     Metric("instruction_accuracy_loose", True, "as instruction_accuracy, read loosely")),
    load, run, about="verifiable instructions (word counts, keywords, JSON, bullets, case…) checked by code",
))
