"""IFEval-style task: every checker on hand cases, relation boundaries, strict vs loose, unsupported ids, the
fixture, the loader (hub, auto fallback to the real items, malformed rows) and a smoke run on the tiny
model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from labkit.config import EvalConfig
from labkit.errors import DataError
from labkit.eval import ifeval
from labkit.eval.tasks import read_fixture, read_real

# Every key of a google/IFEval kwargs dict: on the hub each instruction's dict carries all of them,
# mostly None.
IFEVAL_KEYS = ("num_highlights", "relation", "num_words", "num_placeholders", "prompt_to_repeat",
               "num_bullets",
               "section_spliter", "num_sections", "capital_relation", "capital_frequency", "keywords",
               "num_paragraphs", "language", "let_relation", "letter", "let_frequency", "end_phrase",
               "forbidden_words", "keyword", "frequency", "num_sentences", "postscript_marker", "first_word",
               "nth_paragraph")


def hub_kwargs(**set_: object) -> dict:
    return {k: set_.get(k) for k in IFEVAL_KEYS}


def hub_row(key: int, ids: list[str], kwargs: list[dict], prompt: str = "Write something.") -> dict:
    return {"key": key, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}


LESS_4 = {"relation": "less than", "num_words": 4}
CASES = [  # (instruction, kwargs, reply, followed): each checker passes once and fails once at least
    ("length_constraints:number_words", LESS_4, "one two three", True),
    ("length_constraints:number_words", LESS_4, "one two three four", False),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2}, "Hi there. Bye!",
     True),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 2}, "Just 3.5 of one.",
     False),
    ("keywords:existence", {"keywords": ["cat", "Dog"]}, "A dog and a CAT.", True),
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "A category of dogs.", False),  # whole words only
    ("keywords:forbidden_words", {"forbidden_words": ["blue"]}, "The sea is bluish.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["blue", "water"]}, "The sea is BLUE.", False),
    ("keywords:frequency", {"keyword": "moon", "frequency": 2, "relation": "at least"}, "Moon, moon!", True),
    ("keywords:frequency", {"keyword": "moon", "frequency": 2, "relation": "at least"}, "A moonlit moon.",
     False),
    ("detectable_format:json_format", {}, '{"a": [1, 2]}', True),
    ("detectable_format:json_format", {}, "a: 1", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "Tips:\n* one\n- two\n  * three", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**Tips**\n* one\n---\n* two\n* three",
     False),
    ("detectable_format:title", {}, "<<Spring Song>>\nbuds open", True),
    ("detectable_format:title", {}, "<< >>\nSpring\nbuds", False),
    ("change_case:english_lowercase", {}, "the house was quiet and the children were asleep in bed.", True),
    # lowercase, but langdetect reads French: IFEval asks for English
    ("change_case:english_lowercase", {}, "la maison était calme et les enfants dormaient dans leurs lits.",
     False),
    ("change_case:english_lowercase", {}, "all quiet in Paris.", False),
    ("change_case:english_capital", {}, "THE HOUSE WAS QUIET AND THE CHILDREN WERE ASLEEP!", True),
    ("change_case:english_capital", {}, "SHOUt", False),
    ("punctuation:no_comma", {}, "no commas here", True),
    ("punctuation:no_comma", {}, "yes, one", False),
    ("startend:end_checker", {"end_phrase": "Thank you."}, "Great work. thank you.  ", True),
    # closing quote
    ("startend:end_checker", {"end_phrase": "Any questions?"}, '"Bye. Any questions?"', True),
    ("startend:end_checker", {"end_phrase": "Thank you."}, "Thank you. Bye.", False),
    ("startend:quotation", {}, '  "quoted"\n', True),
    ("startend:quotation", {}, '"half', False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Note.\n\nP.S. see you", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Note.\n**P. S.** see you", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Note.\nP.P.S extra", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Note without one, ps.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    # "**" pairs are empty, a bullet's "* " never pairs, a highlight cannot span lines
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "** **\n* item\n*a\nb*", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Name a fish."}, "  name a FISH. Trout.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Name a fish."}, "Sure! Name a fish. Trout.", False),
    ("keywords:letter_frequency", {"letter": "B", "let_frequency": 3, "let_relation": "at least"},
     "Bob's bib", True),                                                           # any case, inside words
    ("keywords:letter_frequency", {"letter": "b", "let_frequency": 3, "let_relation": "less than"},
     "Bob's bib", False),
    ("language:response_language", {"language": "de"},
     "Alles Gute zum Geburtstag! Ich wünsche dir einen wunderschönen Tag mit deiner Familie.", True),
    ("language:response_language", {"language": "de"},
     "Happy birthday! I wish you a wonderful day with your family and friends.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see you on [].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see you on {date}.",
     False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nOne.\n***\nTwo.\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\n\n***\nTwo.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "NASA and I went.", True),                                                    # "I" is a capital word
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "Nasa, X-ray and 42.", False),
    ("combination:two_responses", {}, "Crumbs\n******\nRise & Shine\n", True),
    ("combination:two_responses", {}, "Crumbs\n******\n Crumbs \n", False),          # the same one twice
    ("detectable_format:multiple_sections", {"section_spliter": "Day", "num_sections": 2},
     "Day 1: swim.\nDay 2: hike.", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nSwim.\nSection 2\nHike.", False),                               # the mark's case matters
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Leaves"}, 'Autumn.\n\n"Leaves, red."', True),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "leaves"}, "Autumn.\n\nThe leaves fall.", False),
    ("detectable_format:constrained_response", {}, "Daily is too often. My answer is no.", True),
    ("detectable_format:constrained_response", {}, "my answer is no", False),
]


@pytest.mark.parametrize(("iid", "kwargs", "reply", "followed"), CASES)
def test_checker(iid, kwargs, reply, followed):
    assert ifeval.check(iid, reply, kwargs) is followed


def test_every_checker_has_a_passing_and_a_failing_case():
    assert {(c[0], c[3]) for c in CASES} == {(iid, ok) for iid in ifeval.CHECKERS for ok in (True, False)}
    assert len(ifeval.CHECKERS) == 25  # every IFEval instruction type


@pytest.mark.parametrize(("iid", "count_kw", "reply"), [
    ("length_constraints:number_words", "num_words", "one two three"),                 # 3 words
    ("length_constraints:number_sentences", "num_sentences", "One. Two! Three?"),     # 3 sentences
    ("keywords:frequency", "frequency", "tea, Tea and TEA; teapot does not count"),   # 3 times
])
def test_relations_at_the_boundary(iid, count_kw, reply):
    extra = {"keyword": "tea"} if iid == "keywords:frequency" else {}
    for target, less, at_least in ((3, False, True), (4, True, False), (2, False, True)):
        assert ifeval.check(iid, reply, {"relation": "less than", count_kw: target, **extra}) is less
        assert ifeval.check(iid, reply, {"relation": "at least", count_kw: target, **extra}) is at_least


@pytest.mark.parametrize(("iid", "keys", "reply"), [
    ("keywords:letter_frequency", ("let_relation", "let_frequency"), "Quick, quiet Q."),          # 3 q's
    ("change_case:capital_word_frequency", ("capital_relation", "capital_frequency"), "NASA, the UN and I."),
])
def test_letter_and_capital_relations_at_the_boundary(iid, keys, reply):
    relation, count_kw = keys
    extra = {"letter": "Q"} if iid == "keywords:letter_frequency" else {}
    for target, less, at_least in ((3, False, True), (4, True, False), (2, False, True)):
        assert ifeval.check(iid, reply, {relation: "less than", count_kw: target, **extra}) is less
        assert ifeval.check(iid, reply, {relation: "at least", count_kw: target, **extra}) is at_least


@pytest.mark.parametrize(("reply", "n"), [
    ("DON'T", 2),             # nltk's word_tokenize splits contractions: DO + N'T
    ("I'm here", 1),          # I + 'm
    ("X-RAY vision", 1),      # a hyphenated word is one
    ("Hello,WORLD", 1),
    ("AT&T", 2),
    ("2024: USA!", 1),        # digits and punctuation have no case
    ("ÉCOLE d'été", 1),
    ("can't stop", 0),
])
def test_capital_words_are_counted_as_nltk_tokens(reply, n):
    kw = {"capital_relation": "at least", "capital_frequency": n}
    assert ifeval.check("change_case:capital_word_frequency", reply, kw)
    assert not ifeval.check("change_case:capital_word_frequency", reply, {**kw, "capital_frequency": n + 1})


def test_letter_frequency_counts_any_character():
    kw = {"letter": "#", "let_frequency": 2, "let_relation": "at least"}
    assert ifeval.check("keywords:letter_frequency", "#one #two", kw)
    assert not ifeval.check("keywords:letter_frequency", "#one", kw)


@pytest.mark.parametrize(("reply", "n"), [
    ("*a* and *b*", 2),
    ("**bold** once", 1),                 # the single-asterisk pass sees only empty "**" pairs
    ("*a* **b** *c*", 3),
    ("* bullet\n* bullet", 0),
    ("* * and ** **", 0),                  # blank highlights
    ("*spans\ntwo lines*", 0),
])
def test_highlights_are_counted_like_ifeval(reply, n):
    for k in range(1, 5):
        assert ifeval.check("detectable_format:number_highlighted_sections", reply,
                            {"num_highlights": k}) is (n >= k), k


@pytest.mark.parametrize(("reply", "n"), [
    ("One paragraph, no divider.", 1),
    ("A\n***\nB\n***\nC", 3),
    ("A *** B", 2),                           # a divider mid-line divides too
    ("\n***\nA\n***\nB\n***\n", 2),          # blank ends are no paragraphs
    ("A\n\nB", 1),                           # blank lines do not divide here
    ("A\n***\n***\nB", None),                # a blank paragraph between dividers fails every count
    ("A\n******\nB", None),                  # six asterisks are two dividers with nothing between
])
def test_number_paragraphs_splits_on_the_markdown_divider(reply, n):
    for k in range(1, 5):
        assert ifeval.check("length_constraints:number_paragraphs", reply, {"num_paragraphs": k}) is (k == n)


NTH = "length_constraints:nth_paragraph_first_word"


@pytest.mark.parametrize(("reply", "ok"), [
    ("Intro.\n\nWeekend plans.", True),
    ("Intro.\n\n'Weekend' plans.", True),            # a leading quote is dropped
    ('Intro.\n\n"Weekend," she said.', True),        # the word is cut at . , ? ! ' "
    ("Intro.\n\nWeekend's plans.", True),
    ("Intro.\n\nWEEKEND! Plans.", True),
    ("Intro.\n\n**Weekend** plans.", False),         # markup stays part of the word (loose forgives it)
    ("Intro.\n\nWeekend: plans.", False),            # ':' is not cut off, as in IFEval
    ("Intro.\n\nWeekends are short.", False),        # the whole word, not a prefix
    ("Intro.\n\n\nWeekend plans.", True),            # three newlines: the piece is "\nWeekend plans."
    ("Intro.\n\n\n\nWeekend plans.", False),         # a blank piece takes paragraph 2's place
    ("Intro.\nWeekend plans.", False),               # one newline: one paragraph
    ("Intro.\n\nWeekend plans.\n\nMore.", False),    # three paragraphs, not two
    ("Intro.\n\nWeekend plans.\n\n", True),          # a blank last piece is not counted
])
def test_nth_paragraph_first_word(reply, ok):
    assert ifeval.check(NTH, reply, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "weekend"}) is ok


def test_nth_paragraph_first_word_edges():
    kw = {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "weekend"}
    assert ifeval.check_loose(NTH, "Intro.\n\n**Weekend** plans.", kw)
    first = {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "weekend"}
    assert ifeval.check(NTH, "Weekend fun.", first)
    assert not ifeval.check(NTH, "\n\nWeekend fun.", first)  # IFEval: the leading blank piece is paragraph 1
    assert not ifeval.check(NTH, "Weekend fun.", {**first, "nth_paragraph": 2})  # there is no paragraph 2


@pytest.mark.parametrize(("reply", "ok"), [
    ("\n******\nCrumbs\n******\nRise\n******\n", True),  # blank ends are allowed
    ("A\n******\nB\n******\nC", False),                  # three responses
    ("A\n******\n \n******\nB", False),                   # a blank one between separators
    ("A\n***\nB", False),                                # three asterisks do not separate responses
    ("A\n*******\nB", True),                              # seven: the spare '*' joins the second response
    ("Only one response.", False),
])
def test_two_responses(reply, ok):
    assert ifeval.check("combination:two_responses", reply) is ok


@pytest.mark.parametrize(("reply", "n"), [
    ("SECTION 1 swim. SECTION 2 hike.", 2),   # marks count anywhere, not only at a line start
    ("SECTION1\nSECTION\n2", 2),              # no space, or one newline, before the number
    ("SECTION  1", 0),                        # two spaces are too many
    ("SECTION X\nSECTION", 0),                # a number is needed
    ("Section 1\nsection 2", 0),              # the mark's case must match
    ("SECTION 1\nSECTION 2\nSECTION 3", 3),
])
def test_multiple_sections_counts_marks_with_a_number(reply, n):
    for k in range(1, 5):  # at least `num_sections`, as IFEval checks it
        kw = {"section_spliter": "SECTION", "num_sections": k}
        assert ifeval.check("detectable_format:multiple_sections", reply, kw) is (n >= k), k


def test_placeholders_constrained_answers_and_repeats():
    ph = "detectable_content:number_placeholders"
    assert ifeval.check(ph, "[a] [b]", {"num_placeholders": 2})
    assert not ifeval.check(ph, "[a\nb] [c]", {"num_placeholders": 2})  # a placeholder stays on one line
    cr = "detectable_format:constrained_response"
    assert ifeval.check(cr, "My answer is maybe.") and ifeval.check(cr, "Well. My answer is yes. Truly.")
    assert not ifeval.check(cr, "My answer is Yes.") and not ifeval.check(cr, "My answer is yes")
    rp = "combination:repeat_prompt"
    assert ifeval.check(rp, "Name a fish.", {"prompt_to_repeat": " Name a fish. "})
    assert not ifeval.check(rp, "Name a fish", {"prompt_to_repeat": "Name a fish."})  # every character


def test_response_language_uses_langdetect_deterministically():
    iid, fr = "language:response_language", {"language": "fr"}
    text = "Bonjour à tous, je vous souhaite une très bonne journée et un excellent week-end."
    assert all(ifeval.check(iid, text, fr) for _ in range(3))
    assert not ifeval.check(iid, text, {"language": "de"})
    assert ifeval.check(iid, "42 !", fr)  # IFEval: nothing to detect counts as followed
    assert not ifeval.check(iid, "   ", fr)  # but an empty reply follows nothing


@pytest.mark.parametrize(("reply", "ok"), [
    ('```json\n{"fruit": "apple", "colour": "red"}\n```', True),
    ('```JSON\n[1, 2, 3]\n```', True),
    ('```\n{"a": null}\n```', True),
    ('  \n```json\n{"a": 1}\n```\n', True),
    ('```json\n{"a": 1,}\n```', False),  # the fence is stripped, the JSON inside must still parse
    ('Here you go:\n```json\n{"a": 1}\n```', False),  # strict: a preamble is not JSON (loose forgives it)
])
def test_fenced_json_counts_as_json(reply, ok):
    assert ifeval.check("detectable_format:json_format", reply, {}) is ok


def test_empty_reply_follows_nothing():
    for iid in ("punctuation:no_comma", "keywords:forbidden_words", "length_constraints:number_words"):
        kwargs = {"forbidden_words": ["x"], "relation": "less than", "num_words": 5}
        assert ifeval.check(iid, "  \n", kwargs) is False
        assert ifeval.check_loose(iid, "", kwargs) is False


def test_kwargs_none_means_absent_and_bad_kwargs_name_the_field():
    assert ifeval.check("punctuation:no_comma", "ok", hub_kwargs())  # every key None: nothing needed
    assert ifeval.check("length_constraints:number_words", "a b",
                        hub_kwargs(relation="less than", num_words=3.0))
    with pytest.raises(DataError, match="field 'num_words'"):
        ifeval.check("length_constraints:number_words", "a b", hub_kwargs(relation="less than"))
    with pytest.raises(DataError, match="field 'relation'.*'more than'"):
        ifeval.check("length_constraints:number_words", "a b", {"relation": "more than", "num_words": 3})
    with pytest.raises(DataError, match="field 'keywords'"):
        ifeval.check("keywords:existence", "a b", {"keywords": "cat"})  # a string is not a list of words
    with pytest.raises(DataError, match="field 'num_bullets'"):
        ifeval.check("detectable_format:number_bullet_lists", "* a", {"num_bullets": 1.5})
    letters = {"letter": "a", "let_frequency": 1, "let_relation": "at least"}
    assert ifeval.check("keywords:letter_frequency", "a", hub_kwargs(**letters))
    with pytest.raises(DataError, match="field 'let_relation'.*'at most'"):
        ifeval.check("keywords:letter_frequency", "a", {**letters, "let_relation": "at most"})
    with pytest.raises(DataError, match="field 'letter'"):
        ifeval.check("keywords:letter_frequency", "a", {**letters, "letter": "ab"})
    with pytest.raises(DataError, match="field 'capital_relation'"):
        ifeval.check("change_case:capital_word_frequency", "A", {"capital_frequency": 1})
    with pytest.raises(DataError, match="field 'nth_paragraph'"):
        ifeval.check("length_constraints:nth_paragraph_first_word", "a",
                     {"num_paragraphs": 1, "nth_paragraph": 0, "first_word": "a"})
    with pytest.raises(DataError, match="field 'prompt_to_repeat'"):
        ifeval.check("combination:repeat_prompt", "a", hub_kwargs())


def test_loose_forgives_preamble_closing_line_and_asterisks():
    cases = [  # (instruction, kwargs, reply): fails strictly, passes loosely
        ("detectable_format:json_format", {}, 'Sure! Here it is:\n{"a": 1}'),
        ("startend:end_checker", {"end_phrase": "Thank you."},
         "Lovely.\nThank you.\nLet me know if you need more."),
        ("startend:quotation", {}, '**"All done."**'),
        ("change_case:english_lowercase", {},
         "Here is my answer:\nthe house was quiet and the children were asleep in their beds"),
    ]
    for iid, kw, reply in cases:
        assert not ifeval.check(iid, reply, kw) and ifeval.check_loose(iid, reply, kw), (iid, reply)
    assert ifeval.loose_variants("a\n*b*\nc")[:4] == ["a\n*b*\nc", "*b*\nc", "a\n*b*", "*b*"]
    # Loose never fails what strict passes.
    for iid, kw, reply, followed in CASES:
        assert ifeval.check_loose(iid, reply, kw) or not followed


def test_score_reply_items_ids_slices_and_unsupported():
    row = hub_row(7, ["punctuation:no_comma", "custom:not_in_ifeval", "change_case:english_lowercase"],
                  [hub_kwargs(), hub_kwargs(language="fr"), hub_kwargs()])
    scores, unsupported = ifeval.score_reply(row, "all lowercase, with a comma")
    assert unsupported == ["custom:not_in_ifeval"]
    assert [(s.metric, s.id, s.score) for s in scores] == [("instruction_accuracy", "7/0", 0.0),
                                                           ("instruction_accuracy", "7/2", 1.0),
                                                           ("prompt_accuracy", "7", 0.0)]
    assert scores[0].slices == {"instruction": "punctuation:no_comma"}
    assert scores[-1].slices == {"n_instructions": "2+"}  # two supported instructions
    loose, _ = ifeval.score_reply(row, "all lowercase, with a comma", loose=True)
    assert [s.metric for s in loose[3:]] == ["instruction_accuracy_loose"] * 2 + ["prompt_accuracy_loose"]

    one = hub_row(8, ["punctuation:no_comma", "custom:not_in_ifeval"], [hub_kwargs(), hub_kwargs()])
    scores, _ = ifeval.score_reply(one, "no comma")
    assert scores[-1].slices == {"n_instructions": "1"} and scores[-1].score == 1.0
    only_unknown = hub_row(9, ["custom:not_in_ifeval"], [hub_kwargs(language="fr")])
    assert ifeval.score_reply(only_unknown, "bonjour", loose=True) == ([], ["custom:not_in_ifeval"])


def test_run_counts_unsupported_ids_and_leaves_out_rows_with_none_supported(monkeypatch):
    rows = [hub_row(1, ["punctuation:no_comma", "custom:made_up"], [{}, {}]),
            hub_row(2, ["custom:made_up", "custom:also_made_up"], [{}, {}]),
            hub_row(3, ["change_case:english_capital"], [{}])]
    replies = {"p1": "no commas", "p2": "whatever", "p3": "not capitals"}
    for r in rows:
        r["prompt"] = f"p{r['key']}"
    monkeypatch.setattr(ifeval, "generate", lambda model, tok, prompts, **kw: [
        SimpleNamespace(text=replies[p]) for p in prompts])
    out = ifeval.run(None, None, rows, EvalConfig())
    assert out.info["unsupported"] == {"custom:made_up": 2, "custom:also_made_up": 1}
    assert out.info["rows_without_checkable_instructions"] == 1 and out.info["rows_scored"] == 2
    strict = {s.id: s.score for s in out.scores if s.metric == "prompt_accuracy"}
    assert strict == {"1": 1.0, "3": 0.0}  # row 2 is not scored at all, neither passed nor failed
    assert {s.id for s in out.scores if s.metric == "instruction_accuracy"} == {"1/0", "3/0"}
    assert {s.metric for s in out.scores} == {m.name for m in ifeval.TASK.metrics}
    assert [s["failed"] for s in out.samples] == [[], ["change_case:english_capital"]]


def test_fixture_is_deterministic_well_formed_and_committed():
    rows = ifeval.fixture_rows()
    assert rows == ifeval.fixture_rows() == read_fixture("ifeval")
    assert 35 <= len(rows) <= 45 and len({r["key"] for r in rows}) == len(rows)
    ids = [i for r in rows for i in r["instruction_id_list"]]
    assert set(ids) == set(ifeval.CHECKERS)  # every checker used, every id supported
    assert sum(len(r["instruction_id_list"]) >= 2 for r in rows) >= 5
    ifeval.validate(rows, "fixture")  # every kwargs dict has what its checker needs
    for r in rows:
        scores, unsupported = ifeval.score_reply(r, "a reply")
        assert not unsupported and len(scores) == len(r["instruction_id_list"]) + 1


def test_every_instruction_of_the_real_items_has_a_checker():
    rows = read_real("ifeval")
    assert len(rows) == 541
    # every id has a checker, so no row is scored on a subset of its instructions
    assert {i for r in rows for i in r["instruction_id_list"]} == set(ifeval.CHECKERS)
    ifeval.validate(rows, "ifeval_real.jsonl")  # every kwargs dict has what its checker needs


def test_scoring_every_real_row_raises_nothing():
    rows = read_real("ifeval")
    dummies = ["", "ok", "My answer is yes.", "SECTION 1\n*a* [b]\n***\nC\n\nD\n******\nE", "42 !"]
    for i, row in enumerate(rows):
        for reply in (*dummies, row["prompt"]):
            scores, unsupported = ifeval.score_reply(row, reply, i, loose=True)
            assert not unsupported and len(scores) == 2 * (len(row["instruction_id_list"]) + 1)
        for j, (iid, kw) in enumerate(zip(row["instruction_id_list"], row["kwargs"])):
            if iid == "combination:repeat_prompt":  # the real kwargs work: repeating the request passes
                assert ifeval.check(iid, f"{kw['prompt_to_repeat']}\nHere is my answer.", kw), (i, j)


def test_loader_reads_the_hub_in_ifeval_schema(monkeypatch):
    calls = []
    hub = [hub_row(1000 + i, ["punctuation:no_comma", "detectable_format:number_highlighted_sections"],
                   [hub_kwargs(), hub_kwargs(num_highlights=3)]) for i in range(5)]
    hub.append(hub_row(2000, ["length_constraints:number_words"],
                       [hub_kwargs(relation="at least", num_words=300)]))
    monkeypatch.setattr(ifeval, "load_hub", lambda path, **kw: calls.append((path, kw)) or hub)
    rows = ifeval.load(EvalConfig(source="hub"))
    assert calls == [("google/IFEval", {"split": "train"})] and rows == hub
    assert ifeval.load(EvalConfig(source="auto", limit=2, seed=1)) == ifeval.load(EvalConfig(source="hub",
                                                                                             limit=2,
                                                                                             seed=1))
    assert len(ifeval.load(EvalConfig(source="hub", limit=2))) == 2


def test_auto_falls_back_to_the_real_items_when_the_hub_fails(monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(ifeval, "load_hub", offline)
    assert ifeval.load(EvalConfig(source="auto")) == read_real("ifeval")
    assert ifeval.load(EvalConfig(source="fixture")) == read_fixture("ifeval")
    with pytest.raises(ConnectionError):
        ifeval.load(EvalConfig(source="hub"))


@pytest.mark.parametrize(("bad", "field"), [
    ({"kwargs": [{}]}, "kwargs"),                                                  # 1 dict for 2 instructions
    ({"kwargs": None}, "kwargs"),
    ({"instruction_id_list": "punctuation:no_comma"}, "instruction_id_list"),
    ({"prompt": None}, "prompt"),
    ({"kwargs": [hub_kwargs(), hub_kwargs(relation="at least")]}, r"kwargs\[1\]\.num_words"),
    ({"kwargs": [hub_kwargs(), hub_kwargs(relation="about", num_words=3)]}, r"kwargs\[1\]\.relation"),
])
def test_malformed_row_raises_data_error_naming_source_row_and_field(monkeypatch, bad, field):
    good = hub_row(1, ["punctuation:no_comma", "length_constraints:number_words"],
                   [hub_kwargs(), hub_kwargs(relation="at least", num_words=3)])
    monkeypatch.setattr(ifeval, "load_hub", lambda *a, **k: [good, {**good, "key": 2, **bad}])
    with pytest.raises(DataError, match=rf"google/IFEval \(train\), row 1, field '{field}'"):
        ifeval.load(EvalConfig(source="hub"))
    with pytest.raises(DataError, match=rf"google/IFEval \(train\), row 1, field '{field}'"):
        ifeval.load(EvalConfig(source="auto"))  # a malformed hub row is an error, not a reason to fall back


def test_unsupported_ids_are_not_validated(monkeypatch):
    row = hub_row(1, ["custom:made_up"], [hub_kwargs()])  # IFEval's own ids all have checkers
    monkeypatch.setattr(ifeval, "load_hub", lambda *a, **k: [row])
    assert ifeval.load(EvalConfig(source="hub")) == [row]


def test_task_is_registered():
    from labkit.eval.tasks import TASKS

    # suite wraps the run to record rows_from and protocol; name, metrics and loader are the module's
    assert TASKS["ifeval"].metrics == ifeval.TASK.metrics and TASKS["ifeval"].load is ifeval.TASK.load
    assert [m.name for m in ifeval.TASK.metrics][:2] == ["prompt_accuracy", "instruction_accuracy"]
    assert all(m.higher_is_better for m in ifeval.TASK.metrics)


def test_tiny_model_smoke_run(tiny):
    model, tok = tiny
    cfg = EvalConfig(limit=3, max_new_tokens=8, source="fixture")
    rows = ifeval.load(cfg)
    out = ifeval.run(model, tok, rows, cfg)
    assert len(rows) == 3 and len(out.samples) == 3
    prompt_level = [s for s in out.scores if s.metric == "prompt_accuracy"]
    assert len(prompt_level) == 3 and all(s.score in (0.0, 1.0) for s in out.scores)
    assert sum(s.metric == "instruction_accuracy" for s in out.scores) == sum(len(r["instruction_id_list"])
                                                                              for r in rows)
    assert out.info["unsupported"] == {}
