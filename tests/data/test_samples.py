"""The data_samples/ files: current, valid under their kinds with the real tokenizer, reproducible,
split cleanly."""

from __future__ import annotations

import operator
import re

import pytest

from labkit.data import read_jsonl, validate_rows
from labkit.data.samples import SAMPLES, SAMPLES_DIR, build, extract_answer, format_ok, main


def test_committed_files_are_current(capsys):
    assert main(["check", "--out", str(SAMPLES_DIR)]) == 0


def test_check_fails_on_an_edited_file(tmp_path, capsys):
    build(tmp_path)
    path = tmp_path / "arithmetic_prompts.jsonl"
    path.write_text(path.read_text().replace('"answer": "', '"answer": "1', 1))
    assert main(["check", "--out", str(tmp_path)]) == 1
    assert "arithmetic_prompts.jsonl" in capsys.readouterr().err


def test_build_twice_gives_identical_bytes(tmp_path):
    build(tmp_path / "a")
    build(tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted([s.name for s in SAMPLES] + ["README.md"])
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.name)
def test_sample_validates_under_its_kind(sample, tokenizer):
    rows = read_jsonl(SAMPLES_DIR / sample.name)
    assert validate_rows(rows, None, source=sample.name, tokenizer=tokenizer, max_length=256) is sample.kind


def test_readme_has_one_row_per_file():
    text = (SAMPLES_DIR / "README.md").read_text()
    for s in SAMPLES:
        n = len(read_jsonl(SAMPLES_DIR / s.name))
        assert re.search(rf"^\| `{re.escape(s.name)}` \| {s.kind.value} \| {n} \|", text, re.M), s.name


def test_format_rule():
    assert format_ok("7 + 5 = 12\n#### 12") and format_ok("  9 * 3 = 27\n#### 27\n")
    assert format_ok("7 + 5 = 13\n#### 13")  # shape only: correctness is extract_answer's job
    for bad in [
        "#### 12",
        "7 + 5 = 12",
        "The answer is 12.\n#### 12",
        "7 + 5 = 12\n#### 12\nDone!",
        "7 + 5 = 12\n\n#### 12",
        "7+5=12\n#### 12",
    ]:
        assert not format_ok(bad), bad
    assert extract_answer("blah #### 3 and then #### 012.") == "3"  # the first marker, as GSM8K reads it
    assert extract_answer("-4 is it\n#### -4") == "-4"
    assert extract_answer("no marker 12") is None


OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def problem(reply: str) -> tuple[int, str, int]:
    """The working line's problem, with a + b and b + a as one (as the split treats them)."""
    a, op, b = re.match(r"(\d+) ([+\-*]) (\d+)", reply).groups()
    return (int(a), op, int(b)) if op == "-" else (min(int(a), int(b)), op, max(int(a), int(b)))


def worked(reply: str) -> int:
    """The true result of the reply's working line."""
    a, op, b = problem(reply)
    return OPS[op](a, b)


def test_arithmetic_rows_are_correct_and_heldout_is_never_trained_on():
    seen: dict[str, set] = {"train": set(), "heldout": set()}
    for row in read_jsonl(SAMPLES_DIR / "sft_format.jsonl"):
        reply = row["messages"][-1]["content"]
        assert format_ok(reply) and extract_answer(reply) == row["answer"]
        assert worked(reply) == int(row["answer"])  # the working line is right
        seen[row["split"]].add(problem(reply))
    for row in read_jsonl(SAMPLES_DIR / "preference_pairs.jsonl"):
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        kind = row["source_kind"]
        assert format_ok(chosen) and format_ok(rejected) == (kind == "slip")
        assert (extract_answer(chosen) == extract_answer(rejected)) == (kind == "padded")
        assert (rejected.startswith("####") and "\n" not in rejected) == (kind == "guess")
        seen[row["split"]].add(problem(chosen))
    for row in read_jsonl(SAMPLES_DIR / "kto_unpaired.jsonl"):
        reply = row["completion"][0]["content"]
        assert (worked(reply) == int(extract_answer(reply))) == row["label"]
        seen[row["split"]].add(problem(reply))
    counts = {
        split: sum(r["split"] == split for r in read_jsonl(SAMPLES_DIR / "sft_format.jsonl"))
        for split in seen
    }
    assert counts == {"train": 200, "heldout": 50}
    assert not seen["train"] & seen["heldout"]
