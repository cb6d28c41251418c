"""MMLU task: parse_choice edge cases, exact accuracy on fake replies and log-probs, the fixture,
log-likelihood scoring on a model whose logits we control, the loader (hub schema through a patched
`datasets.load_dataset`, auto fallback to the real items, malformed rows), one metric per enabled mode, cloze
scoring by hand and on the tiny model, and a tiny-model run."""

from __future__ import annotations

import types
from collections import Counter

import pytest
import torch

from labkit.config import EvalConfig
from labkit.errors import DataError
from labkit.eval import mmlu
from labkit.eval.tasks import letter_ids, read_fixture, read_real

CITIES = ["Paris", "Lyon", "Rome", "Oslo"]


@pytest.mark.parametrize(("reply", "pick"), [
    ("B", 1),
    ("b", 1),                                  # a reply that is only a letter, any case
    ("C.", 2),
    ("**D**", 3),
    ("The answer is B.", 1),
    ("Answer: (c)", 2),
    ("The answer is (D).", 3),
    ("Option B: Lyon", 1),
    ("(c)", 2),
    ("b) Lyon", 1),
    ("A. Paris", 0),
    ("I think A or B", 0),                     # a hedge counts as its first pick
    ("A or B", 0),                             # … also at the start, where "A" could be the article
    ("A is wrong, but the answer is C", 2),    # an announced letter beats an earlier one
    ("A good guess would be Rome", 2),         # the article, then the option's text
    ("The answer is a city: Rome", 2),         # lower-case "a" is a word here, not option A
    ("Rome", 2),                               # option text
    ("It must be rome, in Italy.", 2),
    ("Paris or Lyon", None),                   # two options by text
    ("it is d", None),                         # an unmarked lower-case letter is not read
    ("D-Day", None),
    ("I am not sure", None),
    ("", None),
])
def test_parse_choice(reply, pick):
    assert mmlu.parse_choice(reply, CITIES) == pick


def test_parse_choice_prefers_the_longest_option_text():
    choices = ["Sound", "Light", "Light years", "A bullet"]
    assert mmlu.parse_choice("light years, of course", choices) == 2
    assert mmlu.parse_choice("light travels fastest", choices) == 1


def test_generate_accuracy_on_fake_replies_is_exact():
    rows = mmlu.fixture_rows()
    replies = []
    for i, r in enumerate(rows):
        right, wrong = mmlu.LETTERS[r["answer"]], mmlu.LETTERS[(r["answer"] + 1) % 4]
        # i % 3: right letter, right option text, wrong letter; every seventh reply is unreadable
        replies.append("No idea." if i % 7 == 6 else [f"The answer is {right}.", r["choices"][r["answer"]],
                                                      f"({wrong.lower()})"][i % 3])
    scores = mmlu.score_replies(rows, replies)
    expected = sum(1 for i in range(len(rows)) if i % 7 != 6 and i % 3 != 2)
    assert [s.metric for s in scores] == ["accuracy_generate"] * len(rows)
    assert sum(s.score for s in scores) == expected
    assert [s.slices["subject"] for s in scores] == [r["subject"] for r in rows]


def test_loglik_accuracy_from_log_probs_is_exact():
    rows = mmlu.fixture_rows()[:8]
    lps = [[0.0 if j == (r["answer"] if i < 5 else 3 - r["answer"]) else -1.0 for j in range(4)]
           for i, r in enumerate(rows)]
    scores = mmlu.score_logprobs(rows, lps)
    # rows 5-7 (answers 1, 2, 3) get 3 - answer = 2, 1, 0: all wrong
    assert [s.score for s in scores] == [1.0] * 5 + [0.0] * 3 and scores[0].metric == "accuracy_loglik"
    # a tie between k letters that includes the answer scores 1/k, whatever the answer's position
    tied = [{**rows[0], "answer": a} for a in range(4)]
    assert [s.score for s in mmlu.score_logprobs(tied, [[-1.0, -2.0, -1.0, -3.0]] * 4)] == [0.5, 0.0, 0.5,
                                                                                            0.0]
    assert mmlu.score_logprobs(tied[3:], [[-1.0] * 4])[0].score == 0.25


def test_fixture_is_deterministic_balanced_and_well_formed():
    rows = mmlu.fixture_rows()
    assert rows == mmlu.fixture_rows()
    mmlu.validate(rows, "fixture")
    assert len(rows) == 42 and len({r["subject"] for r in rows}) == 6
    positions = Counter(r["answer"] for r in rows)
    assert set(positions) == {0, 1, 2, 3} and max(positions.values()) - min(positions.values()) <= 1
    assert all(len(set(r["choices"])) == 4 for r in rows)
    # the fixture's own answers score 100% in both modes
    right = [mmlu.LETTERS[r["answer"]] for r in rows]
    assert all(s.score == 1.0 for s in mmlu.score_replies(rows, right))
    assert all(s.score == 1.0 for s in mmlu.score_replies(rows, [r["choices"][r["answer"]] for r in rows]))


def test_letters_are_single_tokens_in_the_embedded_tokenizer(tokenizer):
    ids = letter_ids(tokenizer, "ABCD")
    spaced = [tokenizer.encode(f" {c}", add_special_tokens=False) for c in "ABCD"]
    # " A" is a single token too, but a different one: a chat reply starts with the bare letter.
    assert all(len(s) == 1 for s in spaced) and [s[0] for s in spaced] != ids
    assert mmlu.scoring_method(tokenizer) == "next_token"
    splits_letters = types.SimpleNamespace(encode=lambda text, add_special_tokens=False: [7, 8])
    assert mmlu.scoring_method(splits_letters) == "continuation"


class FavourLetter(torch.nn.Module):
    """A causal LM stand-in: at each row's last real token the logits favour `token_id`; everywhere else
    (earlier positions, right padding) they favour `decoy`, so reading the wrong position picks the decoy."""

    def __init__(self, token_id: int, decoy: int, vocab: int):
        super().__init__()
        self.token_id, self.decoy, self.vocab = token_id, decoy, vocab
        self.device = torch.device("cpu")
        self.lengths: list[list[int]] = []

    def forward(self, input_ids, attention_mask=None, **kwargs):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        self.lengths.append(mask.sum(-1).tolist())
        logits = torch.zeros(*input_ids.shape, self.vocab)              # [B, T, V]
        logits[:, :, self.decoy] = 5.0
        last = mask.sum(-1) - 1                                          # right padding: last real token
        logits[torch.arange(len(input_ids)), last, self.decoy] = 0.0
        logits[torch.arange(len(input_ids)), last, self.token_id] = 20.0
        return types.SimpleNamespace(logits=logits)


def test_loglik_picks_the_letter_the_model_favours(tokenizer):
    rows = mmlu.fixture_rows()[:7]
    a, b, c, d = letter_ids(tokenizer, "ABCD")
    model = FavourLetter(c, decoy=d, vocab=len(tokenizer))
    lps = mmlu.letter_logprobs(model, tokenizer, rows, batch_size=3)
    assert [max(range(4), key=lp.__getitem__) for lp in lps] == [2] * 7
    assert any(len(set(batch)) > 1 for batch in model.lengths)  # the batches really were padded
    cfg = EvalConfig(limit=0, batch_size=4, mmlu_modes="loglik")
    out = mmlu.run(model, tokenizer, rows, cfg)
    assert [s.score for s in out.scores] == [float(r["answer"] == 2) for r in rows]
    assert {s.metric for s in out.scores} == {"accuracy_loglik"}
    assert (out.info["loglik_method"] == "next_token" and out.info["letter_mass"] > 0.5
            and out.info["loglik_ties"] == 0)
    assert all(s["loglik_pick"] == "C" for s in out.samples)


def test_continuation_scoring_matches_next_token_scoring(tiny):
    model, tok = tiny
    rows = mmlu.fixture_rows()[:5]
    one_pass = mmlu.letter_logprobs(model, tok, rows, batch_size=2, method="next_token")
    four_seqs = mmlu.letter_logprobs(model, tok, rows, batch_size=3, method="continuation")
    assert torch.allclose(torch.tensor(one_pass), torch.tensor(four_seqs), atol=1e-4)
    with pytest.raises(ValueError, match="unknown method"):
        mmlu.letter_logprobs(model, tok, rows, method="sum")


class FakeHub:
    """Stands in for datasets.load_dataset and records what was asked for."""

    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def __call__(self, path, name=None, split=None):
        self.calls.append((path, name, split))
        return self.rows


GOOD = {"question": "Which is a city?", "subject": "high_school_geography", "choices": CITIES[::-1],
        "answer": 3}


def test_hub_loader_reads_cais_mmlu(monkeypatch):
    hub = FakeHub([GOOD, {**GOOD, "question": "Which is in Italy?", "answer": 1}])
    monkeypatch.setattr("datasets.load_dataset", hub)
    rows = mmlu.load(EvalConfig(source="hub"))
    assert hub.calls == [("cais/mmlu", "all", "test")]
    assert rows == [{**GOOD, "id": "0"}, {**GOOD, "question": "Which is in Italy?", "answer": 1, "id": "1"}]
    (one,) = mmlu.load(EvalConfig(source="hub", limit=1, seed=1))
    assert one == rows[int(one["id"])]  # an item keeps its id whatever the limit, so cards pair item by item


def test_auto_falls_back_to_the_real_items_when_the_hub_fails(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    rows = mmlu.load(EvalConfig(source="auto"))
    assert [r["question"] for r in rows] == [r["question"] for r in read_real("mmlu")]
    fixture = mmlu.load(EvalConfig(source="fixture"))
    assert [r["question"] for r in fixture] == [r["question"] for r in read_fixture("mmlu")]
    some = mmlu.load(EvalConfig(source="auto", limit=4))
    by_id = {r["id"]: r for r in rows}  # real items keep their position in MMLU's whole test set as id
    assert len(some) == 4 and all(r == by_id[r["id"]] for r in some)


@pytest.mark.parametrize(("bad", "field"), [
    ({**GOOD, "choices": ["a", "b", "c"]}, "choices"),
    ({**GOOD, "choices": "abcd"}, "choices"),
    ({**GOOD, "answer": "B"}, "answer"),
    ({**GOOD, "answer": 4}, "answer"),
    ({**GOOD, "answer": True}, "answer"),
    ({k: v for k, v in GOOD.items() if k != "subject"}, "subject"),
    ({**GOOD, "question": None}, "question"),
])
def test_malformed_rows_raise_data_error(monkeypatch, bad, field):
    monkeypatch.setattr("datasets.load_dataset", FakeHub([GOOD, bad]))
    for source in ("hub", "auto"):  # auto must not hide a broken hub row behind the fixture
        with pytest.raises(DataError, match=f"cais/mmlu.*row 1, field '{field}'"):
            mmlu.load(EvalConfig(source=source))


def test_tiny_model_smoke_run_in_each_mode(tiny):
    model, tok = tiny
    cfg = EvalConfig(limit=3, max_new_tokens=8, source="fixture")
    rows = mmlu.load(cfg)
    out = mmlu.run(model, tok, rows, cfg)
    assert Counter(s.metric for s in out.scores) == {"accuracy_loglik": 3, "accuracy_generate": 3}
    assert all(s.score in (0.0, 1.0) and s.slices["subject"] for s in out.scores)
    assert 0.0 <= out.info["invalid_generate"] <= 1.0 and out.info["generate_tokens"] == 8
    assert {"prompt", "target", "loglik_pick", "output", "generate_pick"} <= set(out.samples[0])
    only_gen = mmlu.run(model, tok, rows, cfg.replace(mmlu_modes="generate"))
    assert {s.metric for s in only_gen.scores} == {"accuracy_generate"} and "letter_mass" not in only_gen.info
    only_ll = mmlu.run(model, tok, rows, cfg.replace(mmlu_modes="loglik"))
    assert ({s.metric for s in only_ll.scores} == {"accuracy_loglik"}
            and "invalid_generate" not in only_ll.info)


def test_cloze_picks_the_highest_log_probability_per_character():
    rows = [{"id": "a", "subject": "geo", "choices": ["Paris", "Lyon", "Rome", "a longer wrong option"],
             "answer": 0}] * 3
    # summed log-probs; per character: Paris -5/5 = -1.0, Lyon -6/4 = -1.5, Rome -2, long -20/21 ≈ -0.95
    scores = mmlu.score_cloze(rows, [[-5.0, -6.0, -8.0, -20.0],    # the long option wins per character
                                     [-4.0, -6.0, -8.0, -30.0],    # Paris -0.8 wins
                                     [-5.0, -4.0, -8.0, -30.0]])   # Paris -1.0 ties Lyon -1.0: half credit
    assert [s.score for s in scores] == [0.0, 1.0, 0.5]
    assert {s.metric for s in scores} == {"accuracy_cloze"} and scores[0].slices == {"subject": "geo"}
    assert mmlu.cloze_prompt({"subject": "high_school_geography", "question": "Capital of France?"}) == (
        "The following are questions about high school geography.\nQuestion: Capital of France?\nAnswer:")


def test_cloze_mode_on_the_tiny_model_scores_each_option_text(tiny):
    model, tok = tiny
    rows = mmlu.load(EvalConfig(source="real", limit=2))
    lps = mmlu.cloze_logprobs(model, tok, rows, batch_size=4)
    assert len(lps) == 2 and all(len(lp) == 4 and all(x < 0 for x in lp) for lp in lps)
    out = mmlu.run(model, tok, rows, EvalConfig(mmlu_modes="cloze", batch_size=4))
    assert Counter(s.metric for s in out.scores) == {"accuracy_cloze": 2}
    assert all("cloze_score" in sample for sample in out.samples)
    with pytest.raises(Exception, match="mmlu_modes"):
        EvalConfig(mmlu_modes="letters").validate()
