"""The shipped real benchmark items: present, parseable, the expected counts and fields, licences in the
README, read by the default offline eval (and recorded on its output), while the look-alike fixtures keep
serving source "fixture"; the builder refuses a directory without the pinned commit, and the HellaSwag and
ARC builders refuse rows their witness copy does not confirm. The cloze scorer that HellaSwag, ARC and
MMLU-cloze share, on a tiny random model, and HellaSwag's text cleanup on hand cases."""

from __future__ import annotations

import bz2
import json
import subprocess
from collections import Counter

import pytest
import torch

import labkit.eval.suite  # noqa: F401 - registers the built-in tasks
from labkit.config import EvalConfig
from labkit.errors import DataError
from labkit.eval import arc, cloze, gsm8k, hellaswag, ifeval, mmlu, real_items, safety
from labkit.eval.real_items import SOURCES
from labkit.eval.tasks import FIXTURES_DIR, LOADED_FROM, TASKS, get_tasks, read_fixture, read_real, real_path

VALIDATORS = {"gsm8k": gsm8k.validate, "mmlu": mmlu.validate, "ifeval": ifeval.validate,
              "safety": safety.validate, "hellaswag": hellaswag.validate, "arc": arc.validate}
# Real items that an eval task reads (HellaSwag and ARC ship items and scorers, bench/published_figures.py
# runs them, but they are not suite tasks).
TASK_SOURCES = sorted(name for name in SOURCES if name in TASKS)


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
        if src.witness is not None:
            assert src.witness.repo in text and src.witness.commit[:12] in text
    for licence in ("MIT", "Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0"):
        assert licence in text
    assert "ShareAlike" in text  # arc_real.jsonl stays under CC BY-SA 4.0


def test_the_default_offline_eval_reads_the_real_items(offline):
    assert EvalConfig().source == "auto"
    for task in get_tasks(TASK_SOURCES):
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
    assert "ctx_b.capitalize()" in SOURCES["hellaswag"].protocol
    assert "[title]" in SOURCES["hellaswag"].protocol
    assert "Question: {question}" in SOURCES["arc"].protocol
    assert "mean of the Easy and Challenge" in SOURCES["arc"].protocol
    assert all("acc_norm_nospace" in SOURCES[t].protocol for t in ("mmlu", "hellaswag", "arc"))


def test_builder_refuses_a_directory_without_the_pinned_commit(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path / "empty")], check=True)
    with pytest.raises(DataError, match="holds commit"):
        real_items.build([tmp_path], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_list_command_names_every_source(capsys):
    assert real_items.main(["list"]) == 0
    printed = capsys.readouterr().out
    assert all(s.file_name in printed and s.licence in printed for s in SOURCES.values())


# ----- HellaSwag and ARC -------------------------------------------------------------------------------

def test_hellaswag_and_arc_files_keep_their_source_schema():
    h = read_real("hellaswag")
    assert Counter(hellaswag.source(r) for r in h) == {"wikihow": 87,
                                                        "activitynet": real_items.HELLASWAG_ROWS - 87}
    ids = [int(r["id"]) for r in h]
    assert ids == sorted(set(ids)) and all(0 <= i < real_items.HELLASWAG_VAL_ROWS for i in ids)
    # the validation split is ActivityNet first: ids say where each row sits in it
    first_wikihow = hellaswag.VALIDATION_MIX["activitynet"]
    assert all((int(r["id"]) < first_wikihow) == (hellaswag.source(r) == "activitynet") for r in h)
    for r in h:
        assert {"ind", "activity_label", "ctx_a", "ctx_b", "ctx", "split", "split_type", "label", "endings",
                "source_id"} <= set(r) and r["split"] == "val"
        assert r["ctx"] == (f"{r['ctx_a']} {r['ctx_b']}" if r["ctx_b"] else r["ctx_a"])  # rowanz's rule
    a = read_real("arc")
    assert Counter(r["subset"] for r in a) == {s: real_items.ARC_PER_SUBSET for s in arc.SUBSETS}
    assert [r["id"] for r in a[:1]] == ["Mercury_417466"]                         # ARC-Easy test's first
    assert a[real_items.ARC_PER_SUBSET]["id"] == "Mercury_7175875"                # ARC-Challenge test's first
    assert len({r["id"] for r in a}) == len(a) and {len(r["choices"]["text"]) for r in a} <= {3, 4, 5}
    assert [arc.gold(r) for r in a[:3]] == [0, 1, 3]


def test_hellaswag_cleanup_and_prompt_by_hand():
    wikihow = {"activity_label": "Food and Entertaining", "ctx_b": "",
               "ctx_a": "[header] How to bake bread [title] Mix the flour. [step] Add water.",
               "endings": ["[substeps] Knead it well.", "Bake it [title] Eat it.", "a  b", "x"]}
    assert hellaswag.query(wikihow) == "Food and Entertaining: How to bake bread. Mix the flour. Add water. "
    assert hellaswag.options(wikihow) == ["  Knead it well.", " Bake it. Eat it.", " a b", " x"]
    activitynet = {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
                   "ctx_b": "he", "endings": ["is using wrap to wrap a pair of skis."] * 4}
    assert hellaswag.query(activitynet) == "Roof shingle removal: A man is sitting on a roof. He "
    assert hellaswag.preprocess("one [step] two  three") == "one two three"


def test_arc_prompt_and_average():
    row = {"id": "q", "question": "Which is a gas?", "choices": {"text": ["ice", "steam", "rock"],
                                                                 "label": ["1", "2", "3"]}, "answerKey": "2"}
    arc.validate([row], "hand")
    assert arc.query(row) == "Question: Which is a gas?\nAnswer:" and arc.options(row) == [" ice", " steam",
                                                                                          " rock"]
    assert arc.gold(row) == 1
    rows = [{**row, "subset": "ARC-Easy"}] * 3 + [{**row, "subset": "ARC-Challenge"}]
    scores = arc.score(rows, [[-9.0, -1.0, -9.0]] * 2 + [[-1.0, -9.0, -9.0]] * 2)
    assert [s.score for s in scores] == [1.0, 1.0, 0.0, 0.0]
    assert arc.average(scores) == pytest.approx((2 / 3 + 0) / 2)  # subsets weigh the same, as on the card
    with pytest.raises(DataError, match="answerKey"):
        arc.validate([{**row, "answerKey": "E"}], "hand")


def test_hellaswag_weighted_reweights_to_the_validation_mix():
    rows = ([{"source_id": "activitynet~v", "split_type": "indomain", "label": 0, "endings": ["a"] * 4,
              "activity_label": "x", "ctx_a": "y", "ctx_b": ""}] * 3
            + [{"source_id": "wikihow~1", "split_type": "zeroshot", "label": 0, "endings": ["a"] * 4,
                "activity_label": "x", "ctx_a": "y", "ctx_b": ""}])
    scores = hellaswag.score(rows, [[0.0, -1.0, -1.0, -1.0]] * 3 + [[-1.0, 0.0, -1.0, -1.0]])
    assert [s.score for s in scores] == [1.0, 1.0, 1.0, 0.0]
    assert scores[3].slices == {"source": "wikihow", "split_type": "zeroshot"}
    # ActivityNet all right, WikiHow all wrong: the split's ActivityNet share
    assert hellaswag.weighted(scores) == pytest.approx(3243 / 10042)


def test_cloze_scorer_normalises_per_character_and_splits_ties():
    options = [" a", " bbbb", " cc"]
    # sums -2, -4, -4 -> per char -2, -1, -2: the long option wins despite the lowest sum
    assert cloze.per_char([-2.0, -4.0, -4.0], options) == [-2.0, -1.0, -2.0]
    assert cloze.score_choices([-2.0, -4.0, -4.0], options, gold=1) == 1.0
    assert cloze.score_choices([-2.0, -4.0, -4.0], options, gold=0) == 0.0
    assert cloze.score_choices([-1.0, -4.0, -4.0], options, gold=0) == 0.5  # a two-way tie with the gold
    assert cloze.char_length(" x") == 1 and cloze.char_length("xy") == 2 and cloze.char_length(" ") == 1


def test_encode_pair_gives_the_context_s_trailing_space_to_the_continuation(tokenizer):
    head, tail = cloze.encode_pair(tokenizer, "Roof shingle removal: He ", " is up.")
    assert tokenizer.decode(head) == "Roof shingle removal: He"
    assert tokenizer.decode(tail) == "  is up."
    head, tail = cloze.encode_pair(tokenizer, "Question: What?\nAnswer:", " water")
    assert tokenizer.decode(head + tail) == "Question: What?\nAnswer: water"
    assert tokenizer.decode(tail) == " water"


def test_cloze_logprobs_on_the_tiny_model_match_a_direct_computation(tiny):
    model, tok = tiny
    model.float().eval()
    rows = read_real("hellaswag")[:2] + read_real("arc")[:1]
    contexts = [hellaswag.query(r) for r in rows[:2]] + [arc.query(rows[2])]
    options = [hellaswag.options(r) for r in rows[:2]] + [arc.options(rows[2])]
    shared = cloze.choice_logprobs(model, tok, contexts, options, batch_size=2)
    plain = cloze.choice_logprobs(model, tok, contexts, options, batch_size=3, share_context=False)
    assert [len(x) for x in shared] == [len(o) for o in options]
    assert all(abs(a - b) < 1e-4 for x, y in zip(shared, plain) for a, b in zip(x, y))
    # by hand: the whole text through the model once, the continuation's tokens read off its log-softmax
    head, tail = cloze.encode_pair(tok, contexts[2], options[2][1])
    with torch.no_grad():
        lp = model(input_ids=torch.tensor([head + tail])).logits[0].float().log_softmax(-1)
    want = sum(float(lp[len(head) - 1 + i, t]) for i, t in enumerate(tail))
    assert shared[2][1] == pytest.approx(want, abs=1e-4)
    scores = hellaswag.score(rows[:2], shared[:2]) + arc.score(rows[2:], shared[2:])
    assert all(s.metric == "accuracy_cloze" and 0.0 <= s.score <= 1.0 for s in scores)

    class NoCache(torch.nn.Module):  # a model that keeps no cache: the scorer falls back to whole sequences
        def __init__(self, inner):
            super().__init__()
            self.inner, self.device = inner, inner.device

        def forward(self, **kwargs):
            return self.inner(**{**kwargs, "use_cache": False})

    fallback = cloze.choice_logprobs(NoCache(model), tok, contexts, options, batch_size=2)
    assert all(abs(a - b) < 1e-4 for x, y in zip(fallback, plain) for a, b in zip(x, y))


# The builders' checks against their witness, on small made-up copies (no git needed).

def _hellaswag_witness(n: int) -> bytes:
    lines = []
    for k in range(n):
        lines += [f"Act {k}: ctx {k}", "0", f"end {k}", "b", "c", "d"]
    return bz2.compress(("\n".join(lines) + "\n").encode())


def _hellaswag_copy_row(k: int) -> dict:
    src = "activitynet" if k < hellaswag.VALIDATION_MIX["activitynet"] else "wikihow"
    return {"ind": k, "activity_label": f"Act {k}", "ctx_a": f"ctx {k}", "ctx_b": "", "ctx": f"ctx {k}",
            "split": "val", "split_type": "indomain", "label": 0, "endings": [f"end {k}", "b", "c", "d"],
            "source_id": f"{src}~{k}"}


def test_hellaswag_builder_places_rows_by_the_witness_and_refuses_strangers(monkeypatch):
    monkeypatch.setattr(real_items, "HELLASWAG_COPY_ROWS", 6)
    monkeypatch.setattr(real_items, "HELLASWAG_ROWS", 4)
    witness = {"hellaswag_val_full.txt.bz2": _hellaswag_witness(real_items.HELLASWAG_VAL_ROWS)}
    positions = [3000, 10, 5000, 20, 30, 3243]            # 4 ActivityNet, 2 WikiHow, in the copy's order

    def copy(rows):
        return {"data/hellaswag.jsonl": "".join(json.dumps(r) + "\n" for r in rows)}

    built = real_items.hellaswag_rows(copy([_hellaswag_copy_row(k) for k in positions]), witness)
    # every WikiHow row, then the copy's first ActivityNet rows, in validation order, id = position
    assert [r["id"] for r in built] == ["10", "3000", "3243", "5000"] and built[0]["ind"] == 10
    wrong_ending = [_hellaswag_copy_row(k) for k in positions]
    wrong_ending[1]["endings"][0] = "something else"
    with pytest.raises(DataError, match="matches 0 validation rows"):
        real_items.hellaswag_rows(copy(wrong_ending), witness)
    wrong_source = [_hellaswag_copy_row(k) for k in positions]
    wrong_source[1]["source_id"] = "wikihow~10"
    with pytest.raises(DataError, match="ActivityNet"):
        real_items.hellaswag_rows(copy(wrong_source), witness)
    with pytest.raises(DataError, match="10042 validation rows"):
        real_items.hellaswag_rows(copy([_hellaswag_copy_row(k) for k in positions]),
                                  {"hellaswag_val_full.txt.bz2": _hellaswag_witness(12)})


def test_arc_builder_checks_every_row_against_the_witness(monkeypatch):
    monkeypatch.setattr(real_items, "ARC_TEST_ROWS", {"ARC-Easy": 2, "ARC-Challenge": 2})
    monkeypatch.setattr(real_items, "ARC_PER_SUBSET", 1)

    def row(k, labels="ABCD"):
        return {"id": f"q{k}", "question": f"Question {k}?",
                "choices": {"text": ["w", "x", "y", "z"], "label": list(labels)}, "answerKey": labels[1]}

    def theirs(k, gold=1):
        return {"query": f"Question: Question {k}?", "choices": ["w", "x", "y", "z"], "gold": gold}

    def jsonl(rows):
        return "".join(json.dumps(r) + "\n" for r in rows)

    files = {"data/ARC-Easy-test.jsonl": jsonl([row(0), row(1, "1234")]),
             "data/ARC-Challenge-test.jsonl": jsonl([row(2), row(3)])}
    base = "scripts/eval/local_data/world_knowledge/"
    # the witness reads numbered answers its own way: only lettered four-option rows must agree on the answer
    witness = {base + "arc_easy.jsonl": jsonl([theirs(0), theirs(1, gold=2)]).encode(),
               base + "arc_challenge.jsonl": jsonl([theirs(2), theirs(3)]).encode()}
    built = real_items.arc_rows(files, witness)
    assert [(r["id"], r["subset"]) for r in built] == [("q0", "ARC-Easy"), ("q2", "ARC-Challenge")]
    witness[base + "arc_challenge.jsonl"] = jsonl([theirs(2), theirs(3, gold=0)]).encode()
    with pytest.raises(DataError, match="q3 differs"):
        real_items.arc_rows(files, witness)
