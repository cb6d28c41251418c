"""A model made worse on purpose fails the default gate: an adapter trained on wrong MMLU letters,
on the embedded model."""

from __future__ import annotations

import pytest

from labkit.config import EvalConfig, SFTConfig
from labkit.data.io import write_jsonl
from labkit.eval.card import compare, evaluate
from labkit.eval.fixtures import poisoned_sft_rows
from labkit.eval.gates import DEFAULT_GATE


@pytest.mark.smoke
def test_poisoned_adapter_fails_the_default_gate(tmp_path):
    from labkit.stages import sft

    cfg = EvalConfig(tasks="mmlu", source="fixture", mmlu_modes="loglik", bootstrap=300)
    base = evaluate(cfg=cfg, name="base", progress=False)
    data = write_jsonl(tmp_path / "poison.jsonl", poisoned_sft_rows())
    run = sft.train(SFTConfig(data=str(data), train_split="", eval_split="", n_eval=0, max_steps=60,
                              batch_size=8,
                              learning_rate=1e-3, output_dir=str(tmp_path / "poisoned")))
    bad = evaluate(cfg=cfg.replace(adapter=str(run.output_dir / "adapter")), name="poisoned", progress=False)
    drop = base.value("mmlu", "accuracy_loglik") - bad.value("mmlu", "accuracy_loglik")
    assert drop > 0.15, (base.headline(), bad.headline())
    result = DEFAULT_GATE.check(bad, baseline=base)
    assert not result.passed and result.reasons[0].startswith("mmlu/accuracy_loglik regressed by")
    assert DEFAULT_GATE.check(base, baseline=base).passed
    change = next(r for r in compare(base, bad, n_boot=300) if r["slice"] == "all")
    assert change["verdict"] == "regression"  # 42 paired items: the bootstrap is sure of it too


def test_poison_covers_every_question_the_eval_reads():
    from labkit.eval import mmlu

    cfg = EvalConfig(source="real", limit=16)
    rows = poisoned_sft_rows(cfg)
    asked = {mmlu.question_text(r) for r in mmlu.load(cfg)}
    taught = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    assert len(rows) == len(mmlu.load(cfg.replace(limit=0))) > 16
    assert asked <= set(taught)
    # every taught letter is wrong
    for r in mmlu.load(cfg.replace(limit=0)):
        assert taught[mmlu.question_text(r)] != mmlu.LETTERS[r["answer"]]
