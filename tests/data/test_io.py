"""Loading rows from JSONL files, lists and HF datasets; atomic JSONL writes."""

from __future__ import annotations

import json

import datasets
import pytest

from labkit.data import Kind, load_rows, read_jsonl, write_jsonl
from labkit.errors import DataError, LabkitError

ROWS = [
    {
        "messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}],
        "split": "train",
    },
    {
        "messages": [{"role": "user", "content": "3 + 3?"}, {"role": "assistant", "content": "6"}],
        "split": "heldout",
    },
]


def test_good_jsonl_round_trips(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "sub" / "chat.jsonl", ROWS)
    (path.parent / "blank.jsonl").write_text(
        path.read_text().replace("\n", "\n\n")
    )  # blank lines are skipped
    for p in (path, str(path), path.parent / "blank.jsonl"):
        ds = load_rows(p, tokenizer=tokenizer, max_length=64)
        assert isinstance(ds, datasets.Dataset) and ds.to_list() == ROWS  # extra column kept
    assert load_rows(path, "conversational").num_rows == 2


def test_bad_json_line_gives_row_and_line(tmp_path, assert_names):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": oops}\n')
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert_names(info.value, str(path), 2, None)
    assert info.value.line == 4 and "line 4: not valid JSON: Expecting value at column 10" in str(info.value)


def test_non_object_line(tmp_path, assert_names):
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a"}\n["text", "b"]\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert_names(info.value, str(path), 1, None)
    assert "line 2: a JSON array, not an object" in str(info.value)


def test_bad_row_in_file_names_the_path(tmp_path, assert_names):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "answer": "1"}, {"prompt": "p", "answer": ""}])
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert_names(info.value, str(path), 1, "answer")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LabkitError, match="file not found"):
        load_rows(tmp_path / "nope.jsonl")
    with pytest.raises(LabkitError, match="is a directory"):
        load_rows(tmp_path)


def test_list_source(assert_names):
    assert load_rows([{"text": "a"}, {"text": "b"}], Kind.LANGUAGE_MODELING).column_names == ["text"]
    with pytest.raises(DataError) as info:
        load_rows([{"text": "a"}, "b"])
    assert_names(info.value, "list", 1, None)
    with pytest.raises(DataError) as info:
        load_rows([{"text": "a"}, {"prompt": "q", "answer": "1"}])  # kind differs from row 0
    assert_names(info.value, "list", 1, "text")
    assert "'language_modeling'" in str(info.value) and "'prompt_answer'" in str(info.value)


def test_list_whose_extra_column_mixes_types(assert_names, tmp_path):
    with pytest.raises(DataError) as info:
        load_rows([{"text": "a", "id": 1}, {"text": "b", "id": None}, {"text": "c", "id": [2]}])
    assert_names(info.value, "list", 2, "id")
    assert "a list here, but a number in row 0" in str(info.value)
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "a", "id": 1}, {"text": "b", "id": "x"}])
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert_names(info.value, str(path), 1, "id")
    assert info.value.line == 2


def test_hf_dataset_source(assert_names):
    ds = datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert load_rows(ds) is ds
    # A column missing from one row comes back as None from the Dataset: reported as missing.
    bad = datasets.Dataset.from_list(
        [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}]
    )
    with pytest.raises(DataError) as info:
        load_rows(bad, "preference")
    assert_names(info.value, "dataset 'in-memory, 2 rows'", 1, "rejected")
    with pytest.raises(DataError, match="pick one split"):
        load_rows(datasets.DatasetDict({"train": ds}))


def test_write_jsonl_is_atomic(tmp_path):
    path = write_jsonl(tmp_path / "out.jsonl", [{"text": "old"}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"text": "new"}, {"text": object()}])  # fails half way through
    assert read_jsonl(path) == [{"text": "old"}]  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # and no temp file is left
    write_jsonl(path, [{"text": "é"}])
    assert path.read_bytes() == (json.dumps({"text": "é"}, ensure_ascii=False) + "\n").encode()
