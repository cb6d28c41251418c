"""Load rows from JSONL files, lists or HF datasets into a validated `datasets.Dataset`;
write JSONL atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets

from labkit.data.types import Kind
from labkit.data.validate import validate_rows
from labkit.errors import DataError

Source = str | os.PathLike | list | datasets.Dataset


def load_rows(source: Source, kind: Kind | str | None = None, **validate_kwargs: Any) -> datasets.Dataset:
    """Read a JSONL path, a list of dicts or a `datasets.Dataset`, validate every row, return a Dataset.

    kind=None detects the kind from row 0 and requires the other rows to match it. validate_kwargs
    go to `validate_rows` (tokenizer, max_length, require_assistant_last). Errors name the source:
    the path for files, "list" for lists, "dataset '<name>'" for datasets.
    """
    if isinstance(source, datasets.DatasetDict):
        raise DataError(
            "dataset dict", None, None, f"pick one split first, e.g. ds['train']; splits: {list(source)}"
        )
    if isinstance(source, datasets.Dataset):
        name = source.info.dataset_name or source.info.builder_name or f"in-memory, {source.num_rows} rows"
        validate_rows(source, kind, source=f"dataset '{name}'", **validate_kwargs)
        return source
    if isinstance(source, (str, os.PathLike)):
        name, rows = str(source), read_jsonl(source)
    elif isinstance(source, list):
        name, rows = "list", source
    else:
        raise DataError(
            type(source).__name__, None, None, "expected a JSONL path, a list of dicts or a datasets.Dataset"
        )
    validate_rows(rows, kind, source=name, **validate_kwargs)
    try:
        return datasets.Dataset.from_list(rows)
    except (
        ValueError,
        TypeError,
    ) as exc:  # pyarrow's errors subclass these: a column mixes types across rows
        raise DataError(
            name, None, None, f"rows could not be stored as one table (a column mixes types?): {exc}"
        ) from exc


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse a JSONL file into dicts; blank lines are skipped and do not count as rows."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a JSONL file" if path.is_dir() else "file not found"
        raise DataError(str(path), None, None, what)
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    str(path), len(rows), None, f"line {line_no} is not valid JSON: {exc}"
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    str(path),
                    len(rows),
                    None,
                    f"line {line_no} is a JSON {type(row).__name__}, not an object",
                )
            rows.append(row)
    return rows


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` through a temp file and os.replace: a reader sees the old file or the new one,
    never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; data files and reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically (see write_text_atomic)."""
    return write_text_atomic(path, "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows))
