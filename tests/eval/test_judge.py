"""LLM-as-judge: verdicts in both orders, ties when the order decides, agreement,
and a run on the tiny model."""

from __future__ import annotations

import types

import pytest
import torch

from labkit.config import EvalConfig
from labkit.eval import judge
from labkit.eval.tasks import letter_ids, read_fixture


class LetterJudge(torch.nn.Module):
    """A fake judge whose next-token logits favour letter A by `bias`, plus `prefer_long` × (len(A)
    - len(B))."""

    def __init__(self, tok, bias: float = 0.0, prefer_long: float = 0.0):
        super().__init__()
        self.tok, self.bias, self.prefer_long = tok, bias, prefer_long
        self.a, self.b = letter_ids(tok, "AB")
        self.device = torch.device("cpu")

    def forward(self, input_ids):
        text = self.tok.decode(input_ids[0])
        a = text.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
        b = text.split("Answer B:\n")[1].split("\n\nWhich answer")[0]
        logits = torch.zeros(1, input_ids.shape[1], len(self.tok))
        logits[0, -1, self.a] = self.bias + self.prefer_long * (len(a) - len(b))
        return types.SimpleNamespace(logits=logits)


def test_position_biased_judge_never_agrees_with_itself(tokenizer):
    verdicts = judge.judge_pairs(LetterJudge(tokenizer, bias=3.0), tokenizer, ["q"] * 3, ["x", "yy", "z"],
                                 ["long answer", "b", "c"])
    assert [v["verdict"] for v in verdicts] == ["tie"] * 3
    assert not any(v["agree"] for v in verdicts)
    assert all(v["picked_a"] == [True, True] for v in verdicts)  # it named position A every time


def test_length_preferring_judge_is_consistent(tokenizer):
    fake = LetterJudge(tokenizer, prefer_long=1.0)
    verdicts = judge.judge_pairs(fake, tokenizer, ["q", "q"], ["a much longer answer", "ok"],
                                 ["short", "longer one"])
    assert [v["verdict"] for v in verdicts] == ["first", "second"]
    assert all(v["agree"] for v in verdicts)
    assert [judge.win_score(v["verdict"]) for v in verdicts] == [1.0, 0.0]
    assert verdicts[0]["p_first_as_a"] > 0.5 and verdicts[0]["p_first_as_b"] > 0.5


def test_fixture_and_loader(monkeypatch):
    rows = read_fixture("judge")
    assert rows == judge.fixture_rows() and len(rows) >= 12
    monkeypatch.setattr(judge, "load_hub", lambda *a, **k: [{"instruction": "Say hi.", "output": "Hi!"}])
    assert judge.load(EvalConfig(source="hub")) == [{"id": 0, "prompt": "Say hi.", "reference": "Hi!"}]

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(judge, "load_hub", offline)
    assert len(judge.load(EvalConfig(source="auto", limit=5))) == 5


def test_run_on_tiny_model_judges_with_the_adapter_off(tiny):
    model, tok = tiny
    cfg = EvalConfig(limit=2, max_new_tokens=4)
    out = judge.run(model, tok, judge.load(cfg), cfg)
    assert sorted(s.metric for s in out.scores) == ["agreement", "agreement", "win_rate", "win_rate"]
    assert all(s.score in (0.0, 0.5, 1.0) for s in out.scores)
    assert 0.0 <= out.info["position_a_rate"] <= 1.0 and len(out.samples) == 2


def test_letters_must_be_single_tokens():
    class Splitter:
        def encode(self, text, add_special_tokens=False):
            return [1, 2]

    with pytest.raises(ValueError, match="splits 'A' into 2 tokens"):
        letter_ids(Splitter(), "AB")
