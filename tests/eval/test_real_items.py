"""The shipped real benchmark items: present, parseable, the expected counts and fields, licences in the
README, read by the default offline eval (and recorded on its output), while the look-alike fixtures keep
serving source "fixture"; the builder refuses a directory without the pinned commit."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from labkit.config import EvalConfig
from labkit.errors import DataError
from labkit.eval import gsm8k, ifeval, mmlu, real_items, safety
from labkit.eval.real_items import SOURCES
from labkit.eval.tasks import FIXTURES_DIR, LOADED_FROM, get_tasks, read_fixture, read_real, real_path

VALIDATORS = {"gsm8k": gsm8k.validate, "mmlu": mmlu.validate, "ifeval": ifeval.validate,
              "safety": safety.validate}


@pytest.fixture
def offline(monkeypatch):
    """Every hub load fails, as on a machine without network or datasets cache."""
    def refuse(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr("datasets.load_dataset", refuse)


@pytest.mark.parametrize("task", sorted(SOURCES))
def test_real_file_exists_parses_and_has_the_recorded_count(task):
    rows = read_real(task)
    assert real_path(task).name == SOURCES[task].file_name
    assert len(rows) == SOURCES[task].rows
    if task == "gsm8k":
        for split in ("test", "train"):
            VALIDATORS[task]([r for r in rows if r["split"] == split], f"{task} {split}")
    else:
        VALIDATORS[task](rows, task)


def test_each_file_has_its_benchmark_fields():
    g = read_real("gsm8k")
    assert Counter(r["split"] for r in g) == {"test": real_items.GSM8K_TEST_ROWS,
                                              "train": real_items.GSM8K_TRAIN_ROWS}
    test_ids = [r["id"] for r in g if r["split"] == "test"]
    assert test_ids == [str(i) for i in range(real_items.GSM8K_TEST_ROWS)]
    m = read_real("mmlu")
    per_subject = Counter(r["subject"] for r in m)
    assert len(per_subject) == 57 and set(per_subject.values()) == {real_items.MMLU_PER_SUBJECT}
    ids = [int(r["id"]) for r in m]
    assert ids == sorted(set(ids)) and all(r["answer"] in range(4) and len(r["choices"]) == 4 for r in m)
    assert m[0]["question"].startswith("Find the degree for the given field extension")  # MMLU's first item
    f = read_real("ifeval")
    assert len({r["key"] for r in f}) == 541 and all(len(r["kwargs"]) == len(r["instruction_id_list"])
                                                     for r in f)
    x = read_real("safety")
    assert Counter(r["label"] for r in x) == {"safe": 250, "unsafe": 200}
    assert {"id", "prompt", "type", "label", "focus", "note"} <= set(x[0])


def test_licences_and_sources_are_in_the_generated_readme():
    text = (FIXTURES_DIR / "README.md").read_text(encoding="utf-8")
    for src in SOURCES.values():
        assert f"`{src.file_name}` | {src.rows} |" in text
        assert src.repo in text and src.commit[:12] in text and src.licence in text
    for licence in ("MIT", "Apache-2.0", "CC-BY-4.0"):
        assert licence in text


def test_the_default_offline_eval_reads_the_real_items(offline):
    assert EvalConfig().source == "auto"
    for task in get_tasks(sorted(SOURCES)):
        rows = task.load(EvalConfig(limit=0))
        assert LOADED_FROM[task.name] == f"data_samples/eval/{task.name}_real.jsonl"
        real = read_real(task.name)
        want = [r for r in real if r.get("split", "test") == "test"]
        assert len(rows) == len(want)
        assert {r.get("id", r.get("key")) for r in rows} == {r.get("id", r.get("key")) for r in want}


def test_source_real_and_fixture_pick_their_files():
    assert len(mmlu.load(EvalConfig(source="real"))) == SOURCES["mmlu"].rows
    assert [r["question"] for r in mmlu.load(EvalConfig(source="fixture"))] == [
        r["question"] for r in read_fixture("mmlu")]
    # a task without real items falls back to its look-alike fixture under "real"
    judge = get_tasks("judge")[0]
    assert len(judge.load(EvalConfig(source="real"))) == len(read_fixture("judge"))
    assert LOADED_FROM["judge"] == "data_samples/eval/judge.jsonl"
    with pytest.raises(DataError, match="no real items"):
        read_real("judge")


def test_the_card_output_records_rows_from_and_protocol(tiny, offline):
    model, tok = tiny
    task = get_tasks("mmlu")[0]
    cfg = EvalConfig(limit=2, mmlu_modes="loglik")
    out = task.run(model, tok, task.load(cfg), cfg)
    assert out.info["rows_from"] == "data_samples/eval/mmlu_real.jsonl"
    assert out.info["protocol"] == SOURCES["mmlu"].protocol and "acc_norm" in out.info["protocol"]
    assert "5 shots" in SOURCES["gsm8k"].protocol and "Question: {question}" in SOURCES["gsm8k"].protocol
    assert "chat template" in SOURCES["ifeval"].protocol and "refusal" in SOURCES["safety"].protocol


def test_builder_refuses_a_directory_without_the_pinned_commit(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    with pytest.raises(DataError, match="holds commit"):
        real_items.build([tmp_path], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_list_command_names_every_source(capsys):
    assert real_items.main(["list"]) == 0
    printed = capsys.readouterr().out
    assert all(s.file_name in printed and s.licence in printed for s in SOURCES.values())
