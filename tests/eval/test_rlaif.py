"""RLAIF labelling: position-swapped judge verdicts turned into labels, their agreement with the gold labels,
and the judge-labelled file a DPO run trains on (tiny model as the judge)."""

from __future__ import annotations

import pytest

import labkit.eval.judge as judge_mod
from labkit.data.samples import load_sample
from labkit.errors import DataError
from labkit.eval.rlaif import judge_label_pairs, judged_pairs, write_judged_pairs

pytestmark = pytest.mark.smoke


def pairs(n: int = 12, split: str = "train") -> list[dict]:
    return load_sample("preference_pairs", split=split)[:n]


def fake_judge(rule):
    """A judge_pairs stand-in: `rule(first, second)` → verdict, so agreement can be checked exactly."""
    def judge_pairs(model, tok, questions, first, second):
        out = []
        for a, b in zip(first, second):
            verdict = rule(a, b)
            p = {"first": 0.9, "second": 0.1}.get(verdict, 0.5)
            out.append({"verdict": verdict, "p_first_as_a": p, "p_first_as_b": p, "agree": True,
                        "picked_a": [True, False]})
        return out
    return judge_pairs


def is_gold_winner(text: str, rows: list[dict]) -> bool:
    return any(text == r["chosen"][-1]["content"] for r in rows)


def test_an_oracle_judge_agrees_perfectly_and_a_first_picker_is_at_chance(monkeypatch, tiny):
    rows = pairs(40)
    monkeypatch.setattr(judge_mod, "judge_pairs",
                        fake_judge(lambda a, b: "first" if is_gold_winner(a, rows) else "second"))
    out = judge_label_pairs(rows, judge=tiny, seed=3)
    assert out["agreement"]["all"]["accuracy"] == 1.0 and out["agreement"]["all"]["kappa"] == 1.0
    positions = [r["gold_position"] for r in out["rows"]]
    assert 0 < positions.count("first") < len(rows)   # the coin puts the gold winner on both sides
    assert all(r["judge_chosen"] == "gold" for r in out["rows"])

    monkeypatch.setattr(judge_mod, "judge_pairs", fake_judge(lambda a, b: "first"))
    out = judge_label_pairs(rows, judge=tiny, seed=3)
    share_first = positions.count("first") / len(rows)
    assert out["agreement"]["all"]["accuracy"] == pytest.approx(share_first)
    assert out["agreement"]["all"]["kappa"] == pytest.approx(0.0)
    flipped = [r for r in out["rows"] if r["judge_chosen"] == "flipped"]
    assert len(flipped) == positions.count("second")
    # a flipped pair is written with chosen and rejected swapped
    written = {r["prompt"][-1]["content"]: r for r in judged_pairs(out["rows"])}
    for r in flipped:
        w = written[r["prompt"][-1]["content"]]
        assert (w["chosen"], w["rejected"]) == (r["rejected"], r["chosen"]) and w["label_source"] == "judge"


def test_an_a_picking_judge_is_all_ties_strictly_but_the_averaged_label_recovers_its_lean(monkeypatch, tiny):
    """A judge that says "A" with 0.9 whatever it reads, plus a small lean towards the gold winner: every
    strict verdict is a tie, and the position-averaged label follows the lean."""
    rows = pairs(20)

    def judge_pairs(model, tok, questions, first, second):
        lean = [0.05 if is_gold_winner(a, rows) else -0.05 for a in first]
        # shown as A: 0.9 + lean; shown as B: 1 - (0.9 - lean) = 0.1 + lean
        return [{"verdict": "tie", "p_first_as_a": 0.9 + x, "p_first_as_b": 0.1 + x, "agree": False,
                 "picked_a": [True, True]} for x in lean]

    monkeypatch.setattr(judge_mod, "judge_pairs", judge_pairs)
    out = judge_label_pairs(rows, judge=tiny)
    a = out["agreement"]
    assert a["tie_rate"] == 1.0 and a["position_a_rate"] == 1.0 and a["decided"]["n"] == 0
    assert a["mean"]["accuracy"] == 1.0 and a["mean"]["kappa"] == pytest.approx(1.0)
    assert all(r["judge_chosen"] == "gold" for r in out["rows"])
    strict = judge_label_pairs(rows, judge=tiny, label_by="verdict")
    assert all(r["judge_chosen"] == "tie" for r in strict["rows"])


def test_the_tiny_judge_labels_pairs_and_dpo_trains_on_them(tiny, tiny_model_dir, tmp_path):
    from labkit.config import PreferenceConfig
    from labkit.data.io import load_rows
    from labkit.data.types import Kind
    from labkit.stages import preference

    rows = pairs(8)
    out = judge_label_pairs(rows, judge=tiny)
    a = out["agreement"]
    verdicts = [r["judge_verdict"] for r in out["rows"]]
    assert set(verdicts) <= {"first", "second", "tie"}
    assert a["tie_rate"] == verdicts.count("tie") / 8
    assert a["all"]["n"] == 8 and a["decided"]["n"] == 8 - verdicts.count("tie")
    assert a["all"]["accuracy"] == sum(r["judge_verdict"] == r["gold_position"] for r in out["rows"]) / 8
    assert a["mean"]["accuracy"] == sum(r["judge_chosen"] == "gold" for r in out["rows"]) / 8  # label_by
    for r in out["rows"]:
        assert 0 <= r["p_first_as_a"] <= 1 and 0 <= r["p_first_as_b"] <= 1

    judged = [dict(r, judge_chosen="gold" if r["judge_chosen"] == "tie" else r["judge_chosen"])
              for r in out["rows"]]   # no ties, so the file is never empty whatever the random judge says
    path = write_judged_pairs(judged, tmp_path / "judged.jsonl", gold_rows=pairs(4, "heldout"))
    assert len(load_rows(path, kind=Kind.PREFERENCE)) == 12
    cfg = PreferenceConfig.from_preset("cpu-smoke", model=tiny_model_dir, data=str(path),
                                       output_dir=str(tmp_path / "dpo"), max_steps=1, batch_size=4, n_eval=4,
                                       dtype="float32", warmup_ratio=0.0, kl_prompts=0)
    result = preference.train(cfg)
    assert result.metrics["steps"] == 1


def test_bad_pairs_fail_before_the_judge_loads(tmp_path):
    with pytest.raises(DataError, match="row 1, field 'rejected'"):
        judge_label_pairs([pairs(1)[0], {"prompt": "q", "chosen": "a", "rejected": ""}],
                          judge="/no/such/model")
    tie = [dict(pairs(1)[0], judge_chosen="tie")]
    with pytest.raises(DataError, match="tie"):
        write_judged_pairs(tie, tmp_path / "x.jsonl")
