"""Malformed datasets: each one is a DataError naming the file, the row, the field and the line, raised
while reading and validating, before any model loads; the good variants of the same formats load."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma

import datasets
import pytest

from labkit.data import Kind, load_rows, read_jsonl, write_jsonl
from labkit.data.validate import is_number
from labkit.errors import DataError


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


U, A = ("user", "What is 2 + 2?"), ("assistant", "4")

# A good row of each kind, in standard (str) and conversational (message list) form.
GOOD = {
    ("language_modeling", False): {"text": "Once upon a time."},
    ("prompt_completion", False): {"prompt": "2 + 2 =", "completion": " 4"},
    ("prompt_completion", True): {"prompt": chat(U), "completion": chat(A)},
    ("conversational", True): {"messages": chat(U, A)},
    ("preference", False): {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"},
    ("preference", True): {"prompt": chat(U), "chosen": chat(A), "rejected": chat(("assistant", "5"))},
    ("unpaired_preference", False): {"prompt": "2 + 2 =", "completion": " 4", "label": True},
    ("unpaired_preference", True): {"prompt": chat(U), "completion": chat(A), "label": False},
    ("prompt_answer", False): {"prompt": "What is 2 + 2?", "answer": "4"},
    ("prompt_answer", True): {"prompt": chat(U), "answer": "4"},
}
MESSAGE_FIELDS = ("messages", "prompt", "completion", "chosen", "rejected")


def case(name, kind, bad, field, says, *, detect=False, row=2, rows=None, form=None):
    """A malformed dataset: two good rows of `kind` then `bad` (or `rows` as given); the error must name
    `row`, `field` and say `says`. detect=True loads with kind=None (detected from row 0)."""
    if rows is None:
        conversational = (
            form
            if form is not None
            else (kind == "conversational" or any(isinstance(bad.get(f), list) for f in MESSAGE_FIELDS))
        )
        rows = [GOOD[(kind, conversational)], GOOD[(kind, conversational)], bad]
    return pytest.param(None if detect else kind, rows, row, field, says, id=name)


NULL_LABEL = {"prompt": "2 + 2 =", "completion": " 5", "label": None}
IMPLICIT = {"chosen": chat(U, A), "rejected": chat(U, ("assistant", "5"))}

CASES = [
    # --- conversation shape (the SFT messages kind) ---
    case(
        "system after user",
        "conversational",
        {"messages": chat(U, ("system", "be brief"), A)},
        "messages[1].role",
        "system turn after the conversation started",
    ),
    case(
        "two assistant turns in a row",
        "conversational",
        {"messages": chat(U, A, ("assistant", "!"))},
        "messages[2].role",
        "role 'assistant' right after role 'assistant'",
    ),
    case(
        "no user turn",
        "conversational",
        {"messages": chat(("system", "s"), A)},
        "messages[1].role",
        "opens with role 'assistant'",
    ),
    case(
        "only an assistant turn",
        "conversational",
        {"messages": chat(A)},
        "messages[0].role",
        "must open with a user turn",
    ),
    case(
        "only a system turn",
        "conversational",
        {"messages": chat(("system", "s"))},
        "messages[0].role",
        "only system turns",
    ),
    case(
        "two user turns in a row",
        "conversational",
        {"messages": chat(U, U, A)},
        "messages[1].role",
        "role 'user' right after role 'user'",
    ),
    case(
        "opens with a tool turn",
        "conversational",
        {"messages": chat(("tool", "42"), A)},
        "messages[0].role",
        "opens with role 'tool'",
    ),
    case(
        "tool result after a user turn",
        "conversational",
        {"messages": chat(U, ("tool", "42"), A)},
        "messages[1].role",
        "role 'tool' right after role 'user'",
    ),
    case(
        "user right after a tool result",
        "conversational",
        {"messages": chat(U, A, ("tool", "42"), U, A)},
        "messages[3].role",
        "right after role 'tool'",
    ),
    case(
        "ends on a user turn",
        "conversational",
        {"messages": chat(U, A, U)},
        "messages[2].role",
        "must end with an assistant reply",
    ),
    case(
        "ends on a tool turn",
        "conversational",
        {"messages": chat(U, A, ("tool", "42"))},
        "messages[2].role",
        "last turn is from 'tool'",
    ),
    # --- messages and their fields ---
    case(
        "unknown role",
        "conversational",
        {"messages": chat(("human", "hi"), A)},
        "messages[0].role",
        "unknown role 'human'",
    ),
    case(
        "role in capitals",
        "conversational",
        {"messages": chat(("User", "hi"), A)},
        "messages[0].role",
        "unknown role 'User'",
    ),
    case(
        "role is a list",
        "conversational",
        {"messages": [{"role": ["user"], "content": "hi"}, A]},
        "messages[0].role",
        "unknown role ['user']",
    ),
    case("role missing", "conversational", {"messages": [{"content": "hi"}]}, "messages[0].role", "missing"),
    case(
        "message without content",
        "conversational",
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]},
        "messages[1].content",
        "missing",
    ),
    case(
        "content null",
        "conversational",
        {"messages": [{"role": "user", "content": None}]},
        "messages[0].content",
        "null",
    ),
    case(
        "content a list of parts",
        "conversational",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, chat(A)[0]]},
        "messages[0].content",
        "expected a string, got list",
    ),
    case(
        "content a number",
        "conversational",
        {"messages": [{"role": "user", "content": 4}]},
        "messages[0].content",
        "expected a string, got int",
    ),
    case(
        "whitespace-only reply",
        "conversational",
        {"messages": chat(U, ("assistant", " \n\t "))},
        "messages[1].content",
        "whitespace-only",
    ),
    case(
        "message a string",
        "conversational",
        {"messages": ["user: hi", "assistant: yo"]},
        "messages[0]",
        "expected a dict",
    ),
    case(
        "message null",
        "conversational",
        {"messages": [{"role": "user", "content": "q"}, None]},
        "messages[1]",
        "got NoneType",
    ),
    case("messages a string", "conversational", {"messages": "user: hi"}, "messages", "got str"),
    case(
        "messages one dict, not a list",
        "conversational",
        {"messages": {"role": "user", "content": "q"}},
        "messages",
        "got dict",
    ),
    case("messages empty", "conversational", {"messages": []}, "messages", "empty list"),
    case("messages null", "conversational", {"messages": None}, "messages", "null", form=True),
    case(
        "messages missing", "conversational", {"conversation": chat(U, A)}, "messages", "missing", form=True
    ),
    # --- preference pairs ---
    case(
        "implicit prompts differ",
        "preference",
        {"chosen": chat(U, A), "rejected": chat(("user", "What is 3 + 3?"), ("assistant", "5"))},
        "rejected[0].content",
        "must carry the same prompt",
    ),
    case(
        "implicit system turns differ",
        "preference",
        {"chosen": chat(("system", "a"), U, A), "rejected": chat(("system", "b"), U, ("assistant", "5"))},
        "rejected[0].content",
        "same prompt",
    ),
    case(
        "implicit prompts of different shape",
        "preference",
        {"chosen": chat(("system", "a"), U, A), "rejected": chat(U, ("assistant", "5"))},
        "rejected[0].role",
        "same prompt",
    ),
    case(
        "implicit chosen has no reply of its own",
        "preference",
        {"chosen": chat(U, A), "rejected": chat(U, A, U, ("assistant", "5"))},
        "chosen",
        "no reply of its own",
    ),
    case(
        "implicit prompt never given",
        "preference",
        {"chosen": chat(A), "rejected": chat(("assistant", "5"))},
        "prompt",
        "nothing holds the prompt",
    ),
    case(
        "chosen carries a different prompt",
        "preference",
        {
            "prompt": chat(U),
            "chosen": chat(("user", "3 + 3?"), ("assistant", "6")),
            "rejected": chat(("assistant", "5")),
        },
        "chosen[0].role",
        "a prompt belongs in 'prompt' only",
    ),
    case(
        "rejected repeats the prompt",
        "preference",
        {"prompt": chat(U), "chosen": chat(A), "rejected": chat(U, ("assistant", "5"))},
        "rejected[0].role",
        "must open with an assistant turn",
    ),
    case(
        "prompt ends with the assistant",
        "preference",
        {"prompt": chat(U, A), "chosen": chat(("assistant", "!")), "rejected": chat(("assistant", "?"))},
        "prompt[1].role",
        "a prompt must end with a user turn",
    ),
    case(
        "prompt of system turns only",
        "preference",
        {"prompt": chat(("system", "s")), "chosen": chat(A), "rejected": chat(("assistant", "5"))},
        "prompt[0].role",
        "only system turns",
    ),
    case(
        "no prompt in standard form",
        "preference",
        {"chosen": " 4", "rejected": " 5"},
        "prompt",
        "implicit-prompt format",
    ),
    case("null prompt", "preference", {"prompt": None, "chosen": " 4", "rejected": " 5"}, "prompt", "null"),
    case("empty chosen", "preference", {"prompt": "p", "chosen": "", "rejected": " 5"}, "chosen", "empty"),
    case(
        "whitespace rejected",
        "preference",
        {"prompt": "p", "chosen": "4", "rejected": " \n"},
        "rejected",
        "whitespace-only",
    ),
    case(
        "chosen equals rejected",
        "preference",
        {"prompt": "p", "chosen": "4", "rejected": "4 "},
        "rejected",
        "identical",
    ),
    case("chosen a number", "preference", {"prompt": "p", "chosen": 4, "rejected": "5"}, "chosen", "got int"),
    case("rejected null", "preference", {"prompt": "p", "chosen": "4", "rejected": None}, "rejected", "null"),
    case(
        "chosen messages where row 0 is text",
        "preference",
        {"prompt": "p", "chosen": chat(A), "rejected": "5"},
        "chosen",
        "row 0 is in standard form",
        form=False,
    ),
    # --- unpaired preference (KTO) ---
    case(
        "label null everywhere",
        None,
        None,
        "label",
        "would read as kind 'prompt_completion'",
        detect=True,
        row=0,
        rows=[NULL_LABEL] * 3,
    ),
    case("label null in one row", "unpaired_preference", NULL_LABEL, "label", "null", detect=True),
    case("label null, kind given", "unpaired_preference", NULL_LABEL, "label", "null"),
    case(
        "label a string",
        "unpaired_preference",
        {**NULL_LABEL, "label": "true"},
        "label",
        "expected true or false, got str",
    ),
    case("label a number", "unpaired_preference", {**NULL_LABEL, "label": 1}, "label", "got int 1"),
    case("label missing", "unpaired_preference", {"prompt": "p", "completion": "c"}, "label", "missing"),
    case(
        "whitespace-only completion",
        "unpaired_preference",
        {**NULL_LABEL, "completion": "\t ", "label": True},
        "completion",
        "whitespace-only",
    ),
    case(
        "completion opens with a user turn",
        "unpaired_preference",
        {"prompt": chat(U), "completion": chat(U, A), "label": True},
        "completion[0].role",
        "must open with an assistant turn",
    ),
    # --- prompt + completion ---
    case(
        "null prompt, kind detected",
        "prompt_completion",
        {"prompt": None, "completion": " 4"},
        "prompt",
        "null",
        detect=True,
    ),
    case(
        "null prompt in row 0",
        None,
        None,
        "prompt",
        "null",
        detect=True,
        row=0,
        rows=[{"prompt": None, "completion": " 4"}, GOOD[("prompt_completion", False)]],
    ),
    case(
        "prompt missing, kind detected",
        "prompt_completion",
        {"completion": " 4"},
        "prompt",
        "row 0 is kind 'prompt_completion'",
        detect=True,
    ),
    case(
        "prompt a list of strings",
        "prompt_completion",
        {"prompt": ["2 +", "2 ="], "completion": " 4"},
        "prompt",
        "got list",
        form=False,
    ),
    case("prompt a number", "prompt_completion", {"prompt": 2, "completion": " 4"}, "prompt", "got int"),
    case("empty completion", "prompt_completion", {"prompt": "p", "completion": ""}, "completion", "empty"),
    case(
        "completion of two assistant turns",
        "prompt_completion",
        {"prompt": chat(U), "completion": chat(A, ("assistant", "!"))},
        "completion[1].role",
        "right after role 'assistant'",
    ),
    case(
        "completion ends on a user turn",
        "prompt_completion",
        {"prompt": chat(U), "completion": chat(A, U)},
        "completion[1].role",
        "must end with an assistant",
    ),
    case(
        "completion text where row 0 is messages",
        "prompt_completion",
        {"prompt": chat(U), "completion": " 4"},
        "completion",
        "row 0 is conversational",
        form=True,
    ),
    case(
        "extra label column changes the kind",
        "prompt_completion",
        {"prompt": "p", "completion": "c", "label": True},
        "label",
        "makes this row kind",
        detect=True,
    ),
    # --- prompt + numeric answer ---
    case(
        "answer in words",
        "prompt_answer",
        {"prompt": "p", "answer": "seventy-two"},
        "answer",
        "'seventy-two' is not a number",
    ),
    case(
        "answer with a unit",
        "prompt_answer",
        {"prompt": "p", "answer": "72 apples"},
        "answer",
        "not a number",
    ),
    case(
        "answer with a bad thousands comma",
        "prompt_answer",
        {"prompt": "p", "answer": "1,23"},
        "answer",
        "not a number",
    ),
    case(
        "answer divides by zero", "prompt_answer", {"prompt": "p", "answer": "3/0"}, "answer", "not a number"
    ),
    case("answer empty", "prompt_answer", {"prompt": "p", "answer": " "}, "answer", "whitespace-only"),
    case("answer a boolean", "prompt_answer", {"prompt": "p", "answer": True}, "answer", "got bool"),
    case("answer a list", "prompt_answer", {"prompt": "p", "answer": ["72"]}, "answer", "got list"),
    case("answer NaN", "prompt_answer", {"prompt": "p", "answer": float("nan")}, "answer", "not a finite"),
    case(
        "answer null, kind detected",
        "prompt_answer",
        {"prompt": "p", "answer": None},
        "answer",
        "null",
        detect=True,
    ),
    case("prompt null, kind given", "prompt_answer", {"prompt": None, "answer": "4"}, "prompt", "null"),
    case(
        "message prompt ends with the assistant",
        "prompt_answer",
        {"prompt": chat(U, A), "answer": "4"},
        "prompt[1].role",
        "a prompt must end with a user turn",
    ),
    # --- plain text ---
    case("text a number", "language_modeling", {"text": 42}, "text", "got int"),
    case("text a list", "language_modeling", {"text": ["a", "b"]}, "text", "got list"),
    case("text empty", "language_modeling", {"text": ""}, "text", "empty"),
    case("text null", "language_modeling", {"text": None}, "text", "null"),
    case(
        "a messages row in a text file",
        "language_modeling",
        {"messages": chat(U, A)},
        "text",
        "looks like kind 'conversational'",
        detect=True,
        form=False,
    ),
    case(
        "extra column mixes types",
        "language_modeling",
        {"text": "t", "id": [3]},
        "id",
        "a list here, but a number in row 0",
        rows=[{"text": "a", "id": 1}, {"text": "b", "id": 2}, {"text": "c", "id": [3]}],
    ),
]


def write_with_blank_line(path, rows) -> None:
    """One row a line, with a blank line after the first row (skipped: it is not a row, but it counts
    as a line)."""
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join([lines[0], "", *lines[1:]]) + "\n")


def line_of(row: int) -> int:
    return 1 if row == 0 else row + 2


@pytest.mark.parametrize(("kind", "rows", "row", "field", "says"), CASES)
def test_malformed_rows(kind, rows, row, field, says, tmp_path, assert_names):
    path = tmp_path / "data.jsonl"
    write_with_blank_line(path, rows)
    with pytest.raises(DataError) as info:
        load_rows(path, kind)
    assert_names(info.value, str(path), row, field)
    assert info.value.line == line_of(row) and f"line {line_of(row)}:" in str(info.value)
    assert says in str(info.value)
    # A list of the same rows gives the same row and field, without a line.
    with pytest.raises(DataError) as info:
        load_rows(rows, kind)
    assert_names(info.value, "list", row, field)
    assert info.value.line is None


LATIN1 = '{"text": "café"}'.encode("latin-1")

# (file name, content, row, field, line, what the message says)
FILE_CASES = {
    "latin-1 bytes": (
        "d.jsonl",
        b'{"text": "a"}\n' + LATIN1 + b"\n",
        1,
        None,
        2,
        "byte 0xe9 at byte offset 27",
    ),
    "a 0xff byte": (
        "d.jsonl",
        b'{"text": "a"}\n\n{"text": "b"}\n\xff\n',
        2,
        None,
        4,
        "byte 0xff at byte offset 29",
    ),
    "bad UTF-8 after a BOM": ("d.jsonl", b"\xef\xbb\xbf" + LATIN1, 0, None, 1, "byte offset 16"),
    "a BOM mid-file": (
        "d.jsonl",
        '{"text": "a"}\n\ufeff{"text": "b"}\n'.encode(),
        1,
        None,
        2,
        "byte-order mark",
    ),
    "a trailing comma": ("d.jsonl", b'{"text": "a"},\n{"text": "b"}\n', 0, None, 1, "trailing comma"),
    "a JSON array": ("d.json", b'[{"text": "a"}, {"text": "b"}]\n', 0, None, 1, "a JSON array?"),
    "a pretty-printed object": ("d.jsonl", b'{\n  "text": "a"\n}\n', 0, None, 1, "spread over several lines"),
    "a bad line after blank lines": (
        "d.jsonl",
        b'\n\n{"text": "a"}\n\n{"text": oops}\n',
        1,
        None,
        5,
        "not valid JSON",
    ),
    "a bare string line": ("d.jsonl", b'{"text": "a"}\n"b"\n', 1, None, 2, "a JSON string, not an object"),
    "a duplicate key": (
        "d.jsonl",
        b'{"prompt": "a", "answer": "1", "prompt": "b"}\n',
        0,
        "prompt",
        1,
        "appears twice",
    ),
    "a duplicate key in a message": (
        "d.jsonl",
        b'{"messages": [{"role": "user", "content": "a", "content": "b"}]}\n',
        0,
        "content",
        1,
        "appears twice",
    ),
    "a bad row in a .jsonl.gz": (
        "d.jsonl.gz",
        gzip.compress(b'{"text": "a"}\n{"text": ""}\n'),
        1,
        "text",
        2,
        "empty",
    ),
    "latin-1 in a .jsonl.xz": ("d.jsonl.xz", lzma.compress(LATIN1), 0, None, 1, "not valid UTF-8"),
    "a CSV row with an extra cell": (
        "d.csv",
        b"prompt,answer\nWhat is 2 + 2?,4\nWhat is 1 + 1?,2,3\n",
        1,
        None,
        3,
        "3 cells, but the header has 2",
    ),
    "a CSV row short of a cell": ("d.csv", b"prompt,answer\nWhat is 2 + 2?\n", 0, "answer", 2, "1 cell, but"),
    "a CSV answer in words": (
        "d.csv",
        b'prompt,answer\n"What is 2 + 2?",4\n\n"What is 9 * 8?",seventy-two\n',
        1,
        "answer",
        4,
        "not a number",
    ),
    "a CSV label that is not true/false": (
        "d.csv",
        b"prompt,completion,label\np,c,yes\n",
        0,
        "label",
        2,
        "expected true or false, got str 'yes'",
    ),
    "a CSV empty label": ("d.csv", b"prompt,completion,label\np,c,true\np,c,\n", 1, "label", 3, "null"),
    "latin-1 in a CSV cell": (
        "d.csv",
        b"prompt,answer\n" + "café?,4\n".encode("latin-1"),
        0,
        "prompt",
        2,
        "byte 0xe9",
    ),
    "a CSV header twice": (
        "d.csv",
        b"prompt,answer,prompt\np,1,q\n",
        None,
        "prompt",
        1,
        "twice in the CSV header",
    ),
    "a CSV messages column": ("d.csv", b'messages\n"[{""role"": ""user""}]"\n', 0, "messages", 2, "got str"),
}


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_malformed_files(name, tmp_path, assert_names):
    file, content, row, field, line, says = FILE_CASES[name]
    path = tmp_path / file
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_rows(path, "prompt_answer" if "answer" in name else None)
    assert_names(info.value, str(path), row, field)
    assert info.value.line == line and f"line {line}:" in str(info.value)
    assert says in str(info.value)


def test_malformed_parquet_rows_name_row_and_field(tmp_path, assert_names):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    rows = [GOOD[("conversational", True)]] * 2 + [{"messages": chat(U, A, ("assistant", "again"))}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert_names(info.value, str(path), 2, "messages[2].role")
    assert info.value.line is None
    # A KTO table whose label column is all null: detected, and refused, as unpaired preference.
    pq.write_table(pa.Table.from_pylist([NULL_LABEL] * 3), path)
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert_names(info.value, str(path), 0, "label")


# Whole-file problems: no row or field to name, so the message says what the file is.
UNREADABLE = {
    "a Parquet name on JSON": ("d.parquet", b'{"text": "a"}\n', "magic bytes 'PAR1'"),
    "a damaged Parquet file": ("d.parquet", b"PAR1 and then nothing", "cannot read this Parquet file"),
    "a cut-short .gz": ("d.jsonl.gz", gzip.compress(b'{"text": "a"}\n' * 50)[:30], "cannot be decompressed"),
    "a damaged .bz2": ("d.jsonl.bz2", b"BZh9 not really", "cannot be decompressed"),
    "a gzipped Parquet file": ("d.parquet.gz", gzip.compress(b"PAR1...PAR1"), "decompress it first"),
    "a zip archive": ("d.zip", b"PK\x03\x04rest", "a zip archive"),
    "a zstd file": ("d.jsonl.zst", b"\x28\xb5\x2f\xfdrest", "Zstandard"),
    "UTF-16 text": ("d.jsonl", '{"text": "a"}\n'.encode("utf-16"), "UTF-16"),
    "an empty file": ("d.jsonl", b"", "no rows"),
    "only blank lines": ("d.jsonl", b"\n  \n\n", "no rows"),
    "a CSV with only a header": ("d.csv", b"text\n", "no rows"),
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_files_are_named(name, tmp_path, assert_names):
    file, content, says = UNREADABLE[name]
    path = tmp_path / file
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert_names(info.value, str(path), None, None)
    assert says in str(info.value)


def test_over_max_length_names_row_field_and_line(tokenizer, tmp_path, assert_names):
    rows = [GOOD[("conversational", True)]] * 2 + [
        {"messages": chat(U, ("assistant", " ".join(["w"] * 200)))}
    ]
    path = tmp_path / "long.jsonl"
    write_with_blank_line(path, rows)
    with pytest.raises(DataError) as info:
        load_rows(path, tokenizer=tokenizer, max_length=64)
    assert_names(info.value, str(path), 2, "messages")
    assert info.value.line == 4 and "over max_length 64" in str(info.value)


def test_a_failed_load_writes_nothing(tmp_path):
    out = write_jsonl(tmp_path / "clean.jsonl", [GOOD[("prompt_answer", False)]])
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"prompt": "p", "answer": "4"}\n{"prompt": "p", "answer": "four"}\n'))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(DataError):
        write_jsonl(out, load_rows(bad))  # validation fails before the write starts
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no cache, temp or half file


# --- the good variants load -----------------------------------------------------------------------

ROWS = [
    {"prompt": "What is 2 + 2?", "answer": "4", "split": "train"},
    {"prompt": "Dev has 1,200 coins.", "answer": "1,234", "split": "heldout"},
]


@pytest.mark.parametrize(
    "suffix, compress",
    [
        (".jsonl.gz", gzip.compress),
        (".jsonl.bz2", bz2.compress),
        (".jsonl.xz", lzma.compress),
        (".data", gzip.compress),
    ],
)
def test_compressed_jsonl_loads(suffix, compress, tmp_path):
    path = tmp_path / f"rows{suffix}"
    path.write_bytes(compress("".join(json.dumps(r) + "\n" for r in ROWS).encode()))
    assert load_rows(path).to_list() == ROWS
    assert read_jsonl(path) == ROWS


def test_parquet_loads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"prompt": chat(U), "completion": chat(A), "label": True},
        {"prompt": chat(("user", "1 + 1?")), "completion": chat(("assistant", "3")), "label": False},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "kto.parquet")
    ds = load_rows(tmp_path / "kto.parquet")
    assert ds.to_list() == rows and ds.features["label"].dtype == "bool"


def test_csv_loads(tmp_path):
    path = tmp_path / "rows.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # with a BOM, as Excel writes it
        writer = csv.DictWriter(f, ["prompt", "answer", "split"])
        writer.writeheader()
        writer.writerows(ROWS)
    assert load_rows(path).to_list() == ROWS
    path.write_text('prompt,completion,label\n"2 + 2 ="," 4",TRUE\n"2 + 2 ="," 5",false\n')
    assert [r["label"] for r in load_rows(path, "unpaired_preference")] == [True, False]


def test_bom_crlf_and_blank_lines_load(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n\r\n".join(json.dumps(r) for r in ROWS).encode() + b"\r\n")
    assert load_rows(path).to_list() == ROWS


@pytest.mark.parametrize(
    "answer",
    ["72", "-3", "−5", "0.5", ".5", "1,234", "1,234,567.25", "3/4", "-3/4", "1 1/2", " 12 ", "25%", "$4.50"]
    + [72, -2.5],
)
def test_numbers_are_answers(answer):
    # What labkit's answer reader (labkit.data.answers) grades as a number is a number here too.
    assert is_number(answer)
    assert load_rows([{"prompt": "p", "answer": answer}]).num_rows == 1


@pytest.mark.parametrize(
    "text", ["seventy-two", "72 apples", "1,23", "3/0", "--4", "12:30", "x = 5", "", True]
)
def test_is_number_refuses(text):
    assert not is_number(text)


def test_words_pass_when_the_answer_need_not_be_a_number():
    assert (
        load_rows([{"prompt": "Capital of France?", "answer": "Paris"}], numeric_answer=False).num_rows == 1
    )


def test_tool_turns_and_system_turns_load():
    call = {"role": "assistant", "content": "calling calc(2 + 2)"}
    rows = [{"messages": chat(("system", "s1"), ("system", "s2"), U) + [call] + chat(("tool", "4"), A)}]
    assert load_rows(rows).num_rows == 1
    prompts = [{"prompt": chat(U) + [call] + chat(("tool", "4")), "answer": "4"}]  # generation after a tool
    assert load_rows(prompts).num_rows == 1
    # Prompt-only conversations (e.g. for generation) pass when the assistant need not speak last.
    assert load_rows([{"messages": chat(("system", "s"), U)}], require_assistant_last=False).num_rows == 1


def test_implicit_prompt_pairs_get_their_prompt(tokenizer):
    multi = {
        "chosen": chat(("system", "s"), U, A, ("user", "and 3 + 3?"), ("assistant", "6")),
        "rejected": chat(("system", "s"), U, A, ("user", "and 3 + 3?"), ("assistant", "7")),
        "id": 1,
    }
    ds = load_rows([IMPLICIT, {**multi}], "preference")
    assert ds[0]["prompt"] == chat(U) and ds[0]["chosen"] == chat(A)
    assert ds[1]["prompt"] == multi["chosen"][:4] and ds[1]["rejected"] == chat(("assistant", "7"))
    # Shared turns up to the first assistant turn that differs: a pair may differ in an earlier reply.
    early = {"chosen": chat(U, A, U, A), "rejected": chat(U, ("assistant", "5"), U, A)}
    assert load_rows([early])[0]["prompt"] == chat(U)
    assert load_rows([IMPLICIT], tokenizer=tokenizer, max_length=64)[0]["prompt"] == chat(U)  # lengths too
    hf = load_rows(datasets.Dataset.from_list([IMPLICIT]))
    assert hf[0]["prompt"] == chat(U) and hf[0]["rejected"] == chat(("assistant", "5"))


def test_explicit_prompt_with_reply_lists_is_kept():
    ds = load_rows([GOOD[("preference", True)]], Kind.PREFERENCE)
    assert ds.to_list() == [GOOD[("preference", True)]]
