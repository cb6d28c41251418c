"""labkit's one answer reader: the final number of a reply, and a gold answer read by its own type.

`read_answer` finds a reply's final number as an exact `Fraction`, in this order: the number after the first
`####` (a reply with `Revised:` lines is read after the last one), else the last `\\boxed{}`, else "the answer
is …", else the last number before a trailing check ("18. Check: 3 * 6 = 18" reads 18), else the last
number. Numbers are read as a grader would: ".5" is 1/2, "1/2" and `\\frac{1}{2}` are exact rationals,
"1,234" and "1 234" are one number only in whole groups of three, "25%" is 25 (GSM8K writes percentages so).
`gold_answer` reads a reference by its own type: a plain number compares as an exact rational, anything else
("12:30") as normalised text, never through the last-number rule; `is_correct(reply, gold)` puts the two
together. The GSM8K eval, the RL rewards (labkit.rewards), the SFT probes and the RL metrics all read
answers here, so a reply is never graded two ways.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

from labkit.errors import DataError

# ---- reading numbers ---------------------------------------------------------------------------------------
# One number as people write it. The integer part takes thousands separators only in whole groups of three
# ("1,234", "1 234" with a plain, no-break or thin space), so the list "3, 4" stays two numbers. A sign counts
# only where it cannot be a binary minus ("10-3" is 3). A full stop with no digit after it ends a sentence.
# A percent sign or a unit after the number is not part of it: "25%" reads as 25, the way GSM8K writes
# percentage answers ("#### 25"), not as 0.25.
_SEP = "[\x20\u00a0\u2009\u202f]"  # space, no-break space, thin space, narrow no-break space
_INT = rf"\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d{{1,3}}(?:{_SEP}\d{{3}})+(?![\d/])|\d+"
_NUMBER = rf"""
    (?P<sign>(?<![\w)\]])[-−])?
    (?:(?P<cur>[$€£¥₹])\x20?(?P<sign2>[-−])?)?
    (?:
        \\[dt]?frac\s*\{{\s*(?P<fn>[-−]?\d+(?:\.\d+)?)\s*\}}\s*\{{\s*(?P<fd>[-−]?\d+(?:\.\d+)?)\s*\}}
      | \\[dt]?frac(?P<fn1>\d)(?P<fd1>\d)                        # \frac12
      | (?<![\d/.])(?P<num>\d+)/(?P<den>0*[1-9]\d*)(?!\.?\d|/)  # 1/2; not 3/4/2020, not 17/8.5
      | (?P<int>{_INT})(?P<dec>\.\d+)?                          # 1,234.50
      | (?<![\w.])(?P<bare>\.\d+)                               # .5
    )
"""
NUMBER_RE = re.compile(_NUMBER, re.VERBOSE | re.ASCII)
_MIXED_GAP = re.compile("[\x20\u00a0]")  # "1 1/2": the one space between a whole number and its fraction
_MARKER_RE = re.compile(r"####")
_BOXED_RE = re.compile(r"\\boxed\s*\{")
# "The answer is 18", "Final answer: 18", "**Answer:** $18": the phrase, then (right after it) the number.
_PHRASE_RE = re.compile(r"\b(?:final\s+)?answer\b[*_]*\s*(?:(?:is|was|would\s+be|will\s+be)\b\s*[:=]?|[:=])",
                        re.IGNORECASE)
# A verification that follows the answer: "18. Check: 3 * 6 = 18, 2 + 4 = 6", "Let me verify: …".
_CHECK_RE = re.compile(r"(?:^|(?<=[.!?:;]))\s*(?:(?:let'?s|let\s+(?:me|us)|to|now)\s+)?"
                       r"(?:double[- ]?|sanity\s+)?(?:check(?:ing)?|verify(?:ing)?|verification)\b",
                       re.IGNORECASE | re.MULTILINE)
# labkit.reasoning.reflection's self-correction: what follows a `Revised:` line replaces what came before.
_REVISED_RE = re.compile(r"^[ \t]*revised[ \t]*:", re.IGNORECASE | re.MULTILINE)
_LEAD = r"(?:[\s*_]|\\[(\[])*"  # markdown bold and math openers between a marker and its number
_LEAD_RE = re.compile(_LEAD, re.ASCII)
HASH_RE = re.compile(r"\#{4}" + _LEAD + _NUMBER, re.VERBOSE | re.ASCII)  # `#### n` anywhere (rule 1)
FINAL_LINE_RE = re.compile(r"^####[ \t]*(?P<rest>.*?)[ \t]*$")  # the last line is `#### …`


def completion_text(completion: Any) -> str:
    """The assistant text of one completion: a string as is, or the content of a message list's assistant
    turns.

    TRL passes conversational completions as `[{"role": "assistant", "content": "..."}]`; content may also
    be a list of parts (`[{"type": "text", "text": "..."}]`) for multimodal processors.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        turns = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "\n".join(_content_text(m.get("content")) for m in turns)
    raise DataError(
        "completions", None, None,
        "a completion must be a string or a list of messages like [{'role': 'assistant', 'content': "
        f"...}}], got {type(completion).__name__}: {completion!r:.80}",
    )


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "")
                       for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def _digits(text: str) -> str:
    return re.sub(f"[,{_SEP[1:-1]}]", "", text)


def _match_value(m: re.Match) -> Fraction | None:
    """The exact value of one NUMBER_RE match; None for a zero denominator such as \\frac{1}{0}."""
    if m["fn"] is not None or m["fn1"] is not None:
        num, den = (m["fn"], m["fd"]) if m["fn"] is not None else (m["fn1"], m["fd1"])
        num, den = Fraction(num.replace("−", "-")), Fraction(den.replace("−", "-"))
        if den == 0:
            return None
        value = num / den
    elif m["num"] is not None:
        value = Fraction(int(m["num"]), int(m["den"]))
    elif m["int"] is not None:
        value = Fraction(_digits(m["int"]) + (m["dec"] or ""))
    else:
        value = Fraction("0" + m["bare"])
    return -value if (m["sign"] or m["sign2"]) else value


def _number_from(m: re.Match, text: str) -> tuple[Fraction | None, int]:
    """A match's value and where it ends, joining a mixed number ("1 1/2" is 3/2) when the match is a plain
    whole number followed by one space and a proper fraction; anything else ("3 4/2") stays two numbers."""
    value = _match_value(m)
    if value is not None and m["int"] and m["int"].isdigit() and not m["dec"]:
        gap = _MIXED_GAP.match(text, m.end())
        nxt = NUMBER_RE.match(text, gap.end()) if gap else None
        if (nxt and nxt["num"] is not None and not (nxt["sign"] or nxt["cur"])
                and 0 < int(nxt["num"]) < int(nxt["den"])):
            part = Fraction(int(nxt["num"]), int(nxt["den"]))
            return (value - part if value < 0 or m["sign"] or m["sign2"] else value + part), nxt.end()
    return value, m.end()


def _numbers(text: str) -> list[Fraction]:
    """Every number in the text, in order (mixed numbers as one)."""
    out, pos = [], 0
    while (m := NUMBER_RE.search(text, pos)) is not None:
        value, pos = _number_from(m, text)
        pos = max(pos, m.start() + 1)
        if value is not None:
            out.append(value)
    return out


def _number_at(text: str, pos: int) -> Fraction | None:
    """The number that starts at `pos` (after spaces, markdown bold or a math opener), else None."""
    pos = _LEAD_RE.match(text, pos).end()
    m = NUMBER_RE.match(text, pos)
    return _number_from(m, text)[0] if m else None


def parse_number(text: Any) -> Fraction | None:
    """The value of a string that is exactly one number, else None: "1,234" -> 1234, ".5" and "1/2" -> 1/2,
    "$4.50" -> 9/2, "-3" -> -3, "25%" -> 25, "1 1/2" -> 3/2, "\\frac{3}{4}" -> 3/4, "7." -> 7. Ints,
    floats (by their shortest repr), Decimals and Fractions are taken as they are, and so is anything
    `fractions.Fraction` itself reads ("1e3").

    No last-number rule here: "12:30", "18 apples" and "x = 5" are not numbers (None).
    """
    if isinstance(text, bool) or text is None:
        return None
    try:
        if isinstance(text, float):
            return Fraction(str(text))
        if isinstance(text, (int, Decimal, Fraction)):
            return Fraction(text)
    except (ValueError, OverflowError):  # nan and infinities are no numbers to match
        return None
    text = str(text).strip()
    m = NUMBER_RE.match(text)
    if m is not None:
        value, end = _number_from(m, text)
        if text[end:].strip() in ("", "%", ".", "%."):
            return value
    try:  # what Python itself writes and reads: "1e3", "-2.5E-1"
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def format_number(value: Fraction) -> str:
    """A canonical string for a value: "1234", "-0.5", "4" (not "4.0"); a fraction that has no finite
    decimal form stays a fraction ("1/3")."""
    value = Fraction(value)
    den, k = value.denominator, 0
    for prime in (2, 5):  # a finite decimal exactly when the denominator has no other prime factor
        while den % prime == 0:
            den //= prime
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    while (value * 10 ** k).denominator != 1:
        k += 1
    scaled = abs(value.numerator * 10 ** k // value.denominator)
    digits = str(scaled).rjust(k + 1, "0")
    body = f"{digits[:-k]}.{digits[-k:]}" if k else digits
    return f"-{body}" if value < 0 else body


def _scope(text: str) -> str:
    """The part of a reply that holds its answer: after its last `Revised:` line, if it has one."""
    revised = list(_REVISED_RE.finditer(text))
    return text[revised[-1].end():] if revised else text


def boxed(text: str) -> list[str]:
    """The contents of every `\\boxed{…}`, braces balanced, in order."""
    out = []
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end():i - 1])
    return out


def boxed_value(inside: str) -> Fraction | None:
    """A box's number: the box itself when it is one number, else what follows its last "=", else its first
    number ("18 \\text{ cm}^2" is 18, not 2)."""
    whole = parse_number(inside)
    if whole is not None:
        return whole
    found = _numbers(inside.rsplit("=", 1)[-1])
    return found[0] if found else None


def read_answer(text: Any, *, marker_only: bool = False) -> Fraction | None:
    """The final numeric answer of a free-form reply, as an exact rational, or None if it states none.

    The one reader for labkit: the GSM8K eval, the `correctness` reward, the SFT probes and the RL metrics
    all read replies through it, so they agree on every reply. In order, the first rule that finds a
    number decides:

    1. the number right after the FIRST `####` (GSM8K's answer line; a model that runs on into a made-up
       next question, "#### 18 … #### 5", has already answered 18);
    2. the number in the LAST `\\boxed{…}` (the MATH convention: a later box is a correction);
    3. the number right after the first "answer is" / "answer:" ("The answer is 18 because 3 * 6 = 18");
    4. the last number before a verification that follows the answer ("18. Check: 3 * 6 = 18" is 18);
    5. the last number in the reply.

    A reply that revises itself with a `Revised:` line (labkit.reasoning.reflection) is read from after its
    last such line. With marker_only, only rule 1 applies (the SFT probes' strict `#### n` format).
    See NUMBER_RE for how numbers are written.
    """
    text = _scope(completion_text(text))
    for marker in _MARKER_RE.finditer(text):
        value = _number_at(text, marker.end())
        if value is not None:
            return value
    if marker_only:
        return None
    for inside in reversed(boxed(text)):
        value = boxed_value(inside)
        if value is not None:
            return value
    for phrase in _PHRASE_RE.finditer(text):
        value = _number_at(text, phrase.end())
        if value is not None:
            return value
    for check in _CHECK_RE.finditer(text):
        before = _numbers(text[:check.start()])
        if before:
            return before[-1]
    found = _numbers(text)
    return found[-1] if found else None


def extract_number(text: Any, *, marker_only: bool = False) -> str | None:
    """read_answer's value as a canonical string ("#### $1,234.50" -> "1234.5", "\\frac{1}{3}" -> "1/3"),
    or None."""
    value = read_answer(text, marker_only=marker_only)
    return None if value is None else format_number(value)


def _normalise(text: str) -> str:
    """How non-numeric answers compare: case and runs of whitespace ignored, outer spaces and a final full
    stop dropped ("12:30." == "12:30")."""
    return " ".join(str(text).casefold().split()).removesuffix(".").strip()


def gold_answer(gold: Any) -> Fraction | str:
    """A reference answer as its own type: its exact value when it is a plain number (parse_number), else
    its normalised text. GSM8K-style references ("working … #### 72") are read after their first `####`.

    Raises DataError for a missing or empty reference: no reply could ever match it.
    """
    text = "" if gold is None else str(gold)
    if "####" in text:
        text = text.split("####", 1)[1].strip()
        text = text.splitlines()[0] if text else ""
    value = parse_number(gold if isinstance(gold, (int, float, Decimal, Fraction)) else text)
    if value is not None:
        return value
    if not text.strip():
        raise DataError("answer", None, None,
                        f"the reference answer is empty ({gold!r}); nothing can match it")
    return _normalise(text)


def answer_text(text: Any) -> str | None:
    """The text a reply states as its answer, for references that are not numbers: the rest of the line
    after its first `####`, its last `\\boxed{…}`, the rest of the sentence after "answer is", else the
    whole reply (stripped)."""
    text = _scope(completion_text(text))
    marker = _MARKER_RE.search(text)
    if marker:
        return text[marker.end():].strip().split("\n", 1)[0].strip() or None
    boxes = boxed(text)
    if boxes:
        return boxes[-1].strip()
    phrase = _PHRASE_RE.search(text)
    if phrase:
        rest = text[phrase.end():].strip().split("\n", 1)[0]
        return re.split(r"\.(?:\s|$)", rest, maxsplit=1)[0].strip(" *_")
    return text.strip() or None


def answers_match(extracted: Any, gold: Any) -> bool:
    """True when an extracted answer equals a reference, compared by the reference's type: as exact
    rationals when the reference is a plain number (then `extracted` must be one number too: "0.5" ==
    "1/2" == "2/4", "18" == "18.0"), else as normalised strings. False when `extracted` is None."""
    if extracted is None:
        return False
    expected = gold_answer(gold)
    if isinstance(expected, Fraction):
        return parse_number(extracted) == expected
    return _normalise(extracted) == expected


def numbers_equal(a: Any, b: Any) -> bool:
    """True if `a` (an extracted answer, or None) equals the reference `b`; see answers_match."""
    return answers_match(a, b)


def is_correct(reply: Any, gold: Any) -> bool:
    """Whether a reply's answer is the reference: read_answer's number when the reference is a number
    ("#### 72" style references are read after their first `####`), else answer_text's normalised text
    (a reference such as "12:30" is never matched by the "30" the last-number rule would find)."""
    expected = gold_answer(gold)
    if isinstance(expected, Fraction):
        return read_answer(reply) == expected
    found = answer_text(reply)
    return found is not None and _normalise(found) == expected
