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
    ("change_case:english_lowercase", {}, "all quiet here, 42 times.", True),
    ("change_case:english_lowercase", {}, "all quiet in Paris.", False),
    ("change_case:english_capital", {}, "SHOUT 123!", True),
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
]


@pytest.mark.parametrize(("iid", "kwargs", "reply", "followed"), CASES)
def test_checker(iid, kwargs, reply, followed):
    assert ifeval.check(iid, reply, kwargs) is followed


def test_every_checker_has_a_passing_and_a_failing_case():
    assert {(c[0], c[3]) for c in CASES} == {(iid, ok) for iid in ifeval.CHECKERS for ok in (True, False)}
    assert len(ifeval.CHECKERS) >= 14


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


def test_loose_forgives_preamble_closing_line_and_asterisks():
    cases = [  # (instruction, kwargs, reply): fails strictly, passes loosely
        ("detectable_format:json_format", {}, 'Sure! Here it is:\n{"a": 1}'),
        ("startend:end_checker", {"end_phrase": "Thank you."},
         "Lovely.\nThank you.\nLet me know if you need more."),
        ("startend:quotation", {}, '**"All done."**'),
        ("change_case:english_lowercase", {}, "Here is my answer:\nall lowercase now"),
    ]
    for iid, kw, reply in cases:
        assert not ifeval.check(iid, reply, kw) and ifeval.check_loose(iid, reply, kw), (iid, reply)
    assert ifeval.loose_variants("a\n*b*\nc")[:4] == ["a\n*b*\nc", "*b*\nc", "a\n*b*", "*b*"]
    # Loose never fails what strict passes.
    for iid, kw, reply, followed in CASES:
        assert ifeval.check_loose(iid, reply, kw) or not followed


def test_score_reply_items_ids_slices_and_unsupported():
    row = hub_row(7, ["punctuation:no_comma", "language:response_language", "change_case:english_lowercase"],
                  [hub_kwargs(), hub_kwargs(language="fr"), hub_kwargs()])
    scores, unsupported = ifeval.score_reply(row, "all lowercase, with a comma")
    assert unsupported == ["language:response_language"]
    assert [(s.metric, s.id, s.score) for s in scores] == [("instruction_accuracy", "7/0", 0.0),
                                                           ("instruction_accuracy", "7/2", 1.0),
                                                           ("prompt_accuracy", "7", 0.0)]
    assert scores[0].slices == {"instruction": "punctuation:no_comma"}
    assert scores[-1].slices == {"n_instructions": "2+"}  # two supported instructions
    loose, _ = ifeval.score_reply(row, "all lowercase, with a comma", loose=True)
    assert [s.metric for s in loose[3:]] == ["instruction_accuracy_loose"] * 2 + ["prompt_accuracy_loose"]

    one = hub_row(8, ["punctuation:no_comma", "language:response_language"], [hub_kwargs(), hub_kwargs()])
    scores, _ = ifeval.score_reply(one, "no comma")
    assert scores[-1].slices == {"n_instructions": "1"} and scores[-1].score == 1.0
    only_unknown = hub_row(9, ["language:response_language"], [hub_kwargs(language="fr")])
    assert ifeval.score_reply(only_unknown, "bonjour", loose=True) == ([], ["language:response_language"])


def test_run_counts_unsupported_ids_and_leaves_out_rows_with_none_supported(monkeypatch):
    rows = [hub_row(1, ["punctuation:no_comma", "detectable_format:constrained_response"], [{}, {}]),
            hub_row(2, ["detectable_format:constrained_response", "language:response_language"], [{}, {}]),
            hub_row(3, ["change_case:english_capital"], [{}])]
    replies = {"p1": "no commas", "p2": "whatever", "p3": "not capitals"}
    for r in rows:
        r["prompt"] = f"p{r['key']}"
    monkeypatch.setattr(ifeval, "generate", lambda model, tok, prompts, **kw: [
        SimpleNamespace(text=replies[p]) for p in prompts])
    out = ifeval.run(None, None, rows, EvalConfig())
    assert out.info["unsupported"] == {"detectable_format:constrained_response": 2,
                                       "language:response_language": 1}
    assert out.info["rows_without_checkable_instructions"] == 1 and out.info["rows_scored"] == 2
    strict = {s.id: s.score for s in out.scores if s.metric == "prompt_accuracy"}
    assert strict == {"1": 1.0, "3": 0.0}  # row 2 is not scored at all, neither passed nor failed
    assert {s.id for s in out.scores if s.metric == "instruction_accuracy"} == {"1/0", "3/0"}
    assert {s.metric for s in out.scores} == {m.name for m in ifeval.TASK.metrics}
    assert [s["failed"] for s in out.samples] == [[], ["change_case:english_capital"]]


def test_fixture_is_deterministic_well_formed_and_committed():
    rows = ifeval.fixture_rows()
    assert rows == ifeval.fixture_rows() == read_fixture("ifeval")
    assert 25 <= len(rows) <= 40 and len({r["key"] for r in rows}) == len(rows)
    ids = [i for r in rows for i in r["instruction_id_list"]]
    assert set(ids) == set(ifeval.CHECKERS)  # every checker used, every id supported
    assert sum(len(r["instruction_id_list"]) >= 2 for r in rows) >= 5
    ifeval.validate(rows, "fixture")  # every kwargs dict has what its checker needs
    for r in rows:
        scores, unsupported = ifeval.score_reply(r, "a reply")
        assert not unsupported and len(scores) == len(r["instruction_id_list"]) + 1


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
    row = hub_row(1, ["combination:repeat_prompt"], [hub_kwargs(prompt_to_repeat="Say hi")])
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
