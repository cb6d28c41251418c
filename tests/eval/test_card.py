"""EvalCard: slicing, save/load, paired bootstrap comparison, and evaluate() on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labkit.config import EvalConfig
from labkit.errors import ConfigError, DataError
from labkit.eval.card import EvalCard, bootstrap_delta, compare, comparison_figure, evaluate, slice_rows
from labkit.eval.tasks import Metric, Scored, Task, get_tasks

TOY = Task("toy", (Metric("acc"), Metric("bad_rate", higher_is_better=False)), lambda cfg: [],
           lambda *a: None)


def toy_card(acc: list[float], bad: list[float] | None = None, name: str = "m") -> EvalCard:
    scores = [Scored("acc", str(i), s, {"kind": "odd" if i % 2 else "even"}) for i, s in enumerate(acc)]
    scores += [Scored("bad_rate", str(i), s) for i, s in enumerate(bad or [])]
    from labkit.eval.card import scores_json

    return EvalCard(name, slice_rows(TOY, scores), scores_json("toy", scores), {"toy": []},
                    {"seconds": {"toy": 1.0}})


def test_slice_rows_means_counts_and_direction():
    card = toy_card([1, 0, 1, 1], bad=[0, 1])
    assert card.value("toy", "acc") == 0.75
    assert card.value("toy", "acc", "kind=even") == 1.0      # ids 0 and 2
    assert card.value("toy", "acc", "kind=odd") == 0.5       # ids 1 and 3
    row = next(r for r in card.table if r["metric"] == "bad_rate")
    assert row["higher_is_better"] is False and row["n"] == 2
    assert card.headline() == {"toy/acc": 0.75, "toy/bad_rate": 0.5}
    assert card.item_scores("toy", "acc", "kind=odd") == {"1": 0.0, "3": 1.0}
    with pytest.raises(KeyError, match="no toy/acc"):
        card.value("toy", "acc", "kind=none")


def test_save_load_round_trip_and_bad_files(tmp_path):
    card = toy_card([1, 0])
    path = card.save(tmp_path / "sub" / "card.json")
    again = EvalCard.load(path)
    assert again == card
    assert [p.name for p in path.parent.iterdir()] == ["card.json"]  # no temp file left beside it
    (tmp_path / "other.json").write_text(json.dumps({"kind": "something"}))
    with pytest.raises(DataError, match="not a labkit eval card"):
        EvalCard.load(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="cannot read"):
        EvalCard.load(tmp_path / "broken.json")


def test_card_renders_html_and_figure():
    card = toy_card([1, 0, 1])
    html = card._repr_html_()
    assert "eval card: m" in html and "kind=odd" in html and "acc ↑" in html
    fig = card.figure()
    assert len(fig.data) == 1 and list(fig.data[0].x) == [pytest.approx(2 / 3)]


def test_paired_bootstrap_is_tighter_than_unpaired_and_centred_on_the_delta():
    rng = np.random.default_rng(0)
    base = {str(i): float(v) for i, v in enumerate(rng.random(200))}
    new = {k: v - 0.05 for k, v in base.items()}  # every item 0.05 worse: a sure regression
    delta, low, high, paired = bootstrap_delta(base, new, n_boot=500)
    assert (paired and delta == pytest.approx(-0.05) and low == pytest.approx(-0.05)
            and high == pytest.approx(-0.05))
    shuffled = dict(zip([f"x{i}" for i in range(200)], new.values()))  # same values, ids not shared
    d2, low2, high2, paired2 = bootstrap_delta(base, shuffled, n_boot=500)
    assert not paired2 and d2 == pytest.approx(-0.05) and low2 < -0.05 < high2 and high2 - low2 > 0.05


def test_compare_flags_regressions_by_direction():
    base = toy_card([1] * 20, bad=[0] * 20)
    worse = toy_card([1] * 10 + [0] * 10, bad=[1] * 10 + [0] * 10, name="worse")
    rows = {(r["metric"], r["slice"]): r for r in compare(base, worse, n_boot=300)}
    assert rows[("acc", "all")]["verdict"] == "regression" and rows[("acc",
                                                                     "all")]["delta"] == pytest.approx(-0.5)
    assert rows[("bad_rate", "all")]["verdict"] == "regression"  # a rise of a ↓ metric is a regression
    same = {r["verdict"] for r in compare(base, base, n_boot=100)}
    assert same == {"no clear change"}
    better = compare(worse, base, n_boot=300)
    assert {r["verdict"] for r in better if r["slice"] == "all"} == {"improvement"}
    fig = comparison_figure(compare(base, worse, n_boot=100))
    assert {t.name for t in fig.data} == {"regression"}


def test_get_tasks_rejects_unknown_names():
    assert [t.name for t in get_tasks("gsm8k, needle")] == ["gsm8k", "needle"]
    with pytest.raises(ConfigError, match="unknown task.*'nope'.*choose from"):
        get_tasks("gsm8k,nope")


def test_evaluate_checks_every_task_before_running_any(tiny, monkeypatch):
    from labkit.eval.tasks import TASKS

    model, tok = tiny
    ran = []

    def broken(cfg):
        raise DataError("second rows", 3, "question", "missing")

    get_tasks("needle")  # registers the built-in tasks before two fakes join them
    monkeypatch.setitem(TASKS, "first",
                        Task("first", (Metric("acc"),), lambda cfg: [{}], lambda *a: ran.append(1)))
    monkeypatch.setitem(TASKS, "second", Task("second", (Metric("acc"),), broken, lambda *a: ran.append(2)))
    with pytest.raises(DataError, match="row 3, field 'question'"):
        evaluate(model, "first,second", EvalConfig(), tokenizer=tok)
    assert ran == []  # the first task did not run: the second's bad row stopped everything up front


def test_evaluate_tiny_model_produces_a_card(tiny, tmp_path):
    model, tok = tiny
    model.train()
    cfg = EvalConfig.from_preset("cpu-smoke", tasks="needle,judge", limit=2, needle_lengths="64,96",
                                 max_new_tokens=4)
    card = evaluate(model, cfg=cfg, tokenizer=tok, name="tiny")
    assert model.training  # evaluate puts the model back the way it found it
    assert {(r["task"], r["metric"]) for r in card.table if r["slice"] == "all"} == {
        ("needle", "accuracy"), ("judge", "win_rate"), ("judge", "agreement")}
    assert card.value("needle", "accuracy", "length=96") in (0.0, 1.0)
    assert set(card.meta["seconds"]) == {"needle", "judge"} and card.samples["judge"]
    assert EvalCard.load(card.save(tmp_path / "c.json")).table == card.table
    with pytest.raises(ConfigError, match="tokenizer"):
        evaluate(model, "needle", cfg)


def test_adapter_is_merged_for_eval_and_stays_merged_after_the_judge(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from labkit.eval import judge
    from labkit.eval.card import load_for_eval
    from labkit.models import load_model

    base, tok = load_model(tiny_model_dir, device="cpu", dtype="float32")
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    ids = tok(["The sea is"], return_tensors="pt")
    with torch.no_grad():
        unmerged = peft(**ids).logits
    cfg = EvalConfig(model=tiny_model_dir, adapter=str(tmp_path / "adapter"), device="cpu", dtype="float32",
                     limit=1, max_new_tokens=2)
    model, _ = load_for_eval(cfg)
    assert judge._is_merged(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, unmerged, atol=1e-4, rtol=1e-4)
        judge.run(model, tok, judge.load(cfg), cfg)  # switches the adapter off to judge, which unmerges it
        assert judge._is_merged(model)
        torch.testing.assert_close(model(**ids).logits, unmerged, atol=1e-4, rtol=1e-4)
