"""GSM8K and MMLU scoring on fixtures with known answers, extraction edge cases, loaders, and tiny-model runs."""

from __future__ import annotations

import types

import pytest
import torch

from labkit.config import EvalConfig
from labkit.errors import DataError
from labkit.eval import gsm8k, mmlu
from labkit.eval.tasks import letter_ids, read_fixture

ROW = {"question": "q", "answer": "Step <<2*3=6>>6 then <<6+1=7>>7 and <<7*1000=7000>>.\n#### 7,000"}


@pytest.mark.parametrize(("reply", "ok"), [
    ("#### 7,000", True), ("The answer is 7000.", True), ("\\boxed{7000}", True), ("7000 dollars", True),
    ("$7,000.", True), ("It is 7000.0", True), ("#### 7000 km", True), ("7 then #### 700", False),
    ("#### -7000", False), ("seven thousand", False), ("", False)])
def test_gsm8k_extraction_edge_cases(reply, ok):
    assert gsm8k.target_answer(ROW["answer"]) == "7000"
    assert gsm8k.score_replies([ROW], [reply])[0].score == float(ok)


def test_gsm8k_negative_and_decimal_answers():
    rows = [{"question": "q", "answer": "#### -12"}, {"question": "q", "answer": "#### 6.75"}]
    scores = gsm8k.score_replies(rows, ["It drops to -12 degrees.", "That costs $6.75."])
    assert [s.score for s in scores] == [1.0, 1.0]


def test_gsm8k_fixture_answers_score_100_and_slice_by_steps():
    rows = read_fixture("gsm8k")
    assert rows == gsm8k.fixture_rows() and {r["split"] for r in rows} == {"train", "test"}
    scores = gsm8k.score_replies(rows, [r["answer"] for r in rows])
    assert all(s.score == 1.0 for s in scores)
    assert {s.slices["steps"] for s in scores} == {"1-2", "3+"}
    assert any("," in r["answer"].rsplit("####")[1] for r in rows) and any("." in gsm8k.target_answer(r["answer"])
                                                                          for r in rows)


def test_gsm8k_few_shot_prompt_and_loader(monkeypatch):
    rows = gsm8k.load(EvalConfig(source="fixture", gsm8k_shots=2, limit=3))
    assert len(rows) == 3 and all(len(r["shots"]) == 2 and r["split"] == "test" for r in rows)
    msgs = gsm8k.prompt_messages(rows[0], rows[0]["shots"])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"].rstrip().splitlines()[-1].startswith("####")
    hub = [{"question": "a", "answer": "#### 1"}]
    monkeypatch.setattr(gsm8k, "load_hub", lambda *a, split, **k: hub)
    assert gsm8k.load(EvalConfig(source="hub"))[0]["question"] == "a"

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(gsm8k, "load_hub", offline)
    assert len(gsm8k.load(EvalConfig(source="auto"))) == 40  # fell back to the fixture's test split
    monkeypatch.setattr(gsm8k, "load_hub", lambda *a, **k: [{"question": "a"}])
    with pytest.raises(DataError, match="row 0, field 'answer'"):
        gsm8k.load(EvalConfig(source="hub"))


@pytest.mark.parametrize(("reply", "pick"), [
    ("B", 1), ("The answer is C.", 2), ("(d)", 3), ("b) Lyon", 1), ("Answer: A", 0), ("Rome", 2),
    ("Paris or Lyon", None), ("I am not sure", None), ("a", 0)])
def test_mmlu_parse_choice(reply, pick):
    assert mmlu.parse_choice(reply, ["Paris", "Lyon", "Rome", "Oslo"]) == pick


def test_mmlu_fixture_is_balanced_and_scores_exactly():
    rows = read_fixture("mmlu")
    assert rows == mmlu.fixture_rows() and len({r["subject"] for r in rows}) == 6
    assert sorted({r["answer"] for r in rows}) == [0, 1, 2, 3]
    picks = [r["answer"] if i % 2 else (r["answer"] + 1) % 4 for i, r in enumerate(rows)]
    scores = mmlu.score_rows(rows, picks, "accuracy_loglik")
    assert sum(s.score for s in scores) == len(rows) // 2


class FavourLetter(torch.nn.Module):
    """Next-token logits that favour one letter token: loglik scoring must pick it."""

    def __init__(self, token_id: int, vocab: int):
        super().__init__()
        self.token_id, self.vocab, self.device = token_id, vocab, torch.device("cpu")

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[:, -1, self.token_id] = 5.0
        return types.SimpleNamespace(logits=logits)


def test_mmlu_loglik_reads_the_letter_distribution(tokenizer):
    rows = read_fixture("mmlu")[:5]
    c = letter_ids(tokenizer, "ABCD")[2]
    lps = mmlu.letter_logprobs(FavourLetter(c, len(tokenizer)), tokenizer, rows, batch_size=2)
    assert [max(range(4), key=lp.__getitem__) for lp in lps] == [2] * 5


def test_mmlu_bad_rows_and_hub(monkeypatch):
    good = {"question": "q", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 3}
    monkeypatch.setattr(mmlu, "load_hub", lambda *a, **k: [good, {**good, "choices": ["a", "b"]}])
    with pytest.raises(DataError, match="row 1, field 'choices'"):
        mmlu.load(EvalConfig(source="hub"))
    monkeypatch.setattr(mmlu, "load_hub", lambda *a, **k: [good])
    assert mmlu.load(EvalConfig(source="hub")) == [good]


def test_tiny_model_runs(tiny):
    model, tok = tiny
    cfg = EvalConfig(limit=3, max_new_tokens=8)
    out = mmlu.run(model, tok, mmlu.load(cfg), cfg)
    assert sorted({s.metric for s in out.scores}) == ["accuracy_generate", "accuracy_loglik"] and len(out.scores) == 6
    out = mmlu.run(model, tok, mmlu.load(cfg), cfg.replace(mmlu_modes="loglik"))
    assert {s.metric for s in out.scores} == {"accuracy_loglik"}
    out = gsm8k.run(model, tok, gsm8k.load(cfg), cfg)
    assert len(out.scores) == 3 and all(s.score in (0.0, 1.0) for s in out.scores)
