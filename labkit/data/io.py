"""Load rows from data files (JSONL, gzip/bzip2/xz-compressed JSONL, Parquet, CSV), lists or HF datasets
into a validated `datasets.Dataset`; write JSONL atomically.

Reading never crashes on bad bytes: encodings, compression and binary formats are recognised up front,
and every problem is a DataError naming the file, the row and (for text files) the line.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import os
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets

from labkit.data.types import Kind
from labkit.data.validate import split_implicit_prompt, validate_rows
from labkit.errors import DataError

FORMATS = (
    "JSONL (.jsonl, also compressed: .jsonl.gz, .jsonl.bz2, .jsonl.xz), Parquet (.parquet) and CSV (.csv)"
)

# Compressed files are recognised by their first bytes, whatever their name; the name without the
# compression suffix then picks the format inside.
_COMPRESSED = {
    b"\x1f\x8b": ("gzip", gzip.decompress),
    b"BZh": ("bzip2", bz2.decompress),
    b"\xfd7zXZ\x00": ("xz", lzma.decompress),
}
_COMPRESSION_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz")
_PARQUET_MAGIC = b"PAR1"
# Formats that would otherwise fail as "invalid UTF-8 at byte 0": refused by name.
_REFUSED = {
    b"PK\x03\x04": "a zip archive (or an Excel workbook); unpack it, or export the sheet as CSV",
    b"\x28\xb5\x2f\xfd": "Zstandard-compressed; decompress it first (zstd -d)",
    b"ARROW1": "an Arrow IPC file; datasets.Dataset.from_file() reads it, then pass the Dataset",
    codecs.BOM_UTF16_LE: "UTF-16 (or UTF-32) text; save it as UTF-8",
    codecs.BOM_UTF16_BE: "UTF-16 text; save it as UTF-8",
}

Source = str | os.PathLike | list | datasets.Dataset


def load_rows(source: Source, kind: Kind | str | None = None, **validate_kwargs: Any) -> datasets.Dataset:
    """Read a data file, a list of dicts or a `datasets.Dataset`, validate every row, return a Dataset.

    Files: see `read_rows` (JSONL, compressed JSONL, Parquet, CSV). kind=None detects the kind from
    row 0 and requires the other rows to match it. validate_kwargs go to `validate_rows` (tokenizer,
    max_length, require_assistant_last, numeric_answer). Errors name the source: the path for files
    (with the line for text files), "list" for lists, "dataset '<name>'" for datasets. Preference rows
    in TRL's implicit-prompt format come back with the shared turns in `prompt`.
    """
    if isinstance(source, datasets.DatasetDict):
        raise DataError(
            "dataset dict", None, None, f"pick one split first, e.g. ds['train']; splits: {list(source)}"
        )
    if isinstance(source, datasets.Dataset):
        name = source.info.dataset_name or source.info.builder_name or f"in-memory, {source.num_rows} rows"
        kind = validate_rows(source, kind, source=f"dataset '{name}'", **validate_kwargs)
        if kind is Kind.PREFERENCE and (
            "prompt" not in source.column_names or any(p is None for p in source["prompt"])
        ):
            return source.map(split_implicit_prompt)
        return source
    lines: list[int] | None = None
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        rows, lines = read_rows(source)
    elif isinstance(source, list):
        name, rows = "list", source
    else:
        raise DataError(
            type(source).__name__,
            None,
            None,
            f"expected the path of a data file ({FORMATS}), a list of dicts or a datasets.Dataset",
        )
    try:
        kind = validate_rows(rows, kind, source=name, **validate_kwargs)
    except DataError as exc:
        if lines and exc.source == name and exc.row is not None and exc.row < len(lines):
            located = DataError(name, exc.row, exc.field, exc.message, line=lines[exc.row])
            raise located.with_traceback(exc.__traceback__) from None
        raise
    if kind is Kind.PREFERENCE:
        rows = [split_implicit_prompt(row) for row in rows]
    try:
        return datasets.Dataset.from_list(rows)
    except (ValueError, TypeError) as exc:  # pyarrow's errors subclass these: a column mixes types
        row, field, what = _mixed_column(rows)
        line = lines[row] if lines and row is not None else None
        raise DataError(
            name, row, field, f"{what}; a column must hold one type in every row ({exc})", line=line
        ) from exc


def read_rows(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The rows of a data file and, for text formats, the 1-based line each row starts on (else None).

    JSONL: one object per line; blank lines are skipped and do not count as rows; a UTF-8 byte-order
    mark at the start is allowed; a key twice in one object is an error (JSON readers silently keep the
    last). gzip, bzip2 and xz files are recognised by their first bytes and read as the format their
    name has without the suffix (JSONL unless it ends in .csv). Parquet: by its magic bytes. CSV (.csv):
    a header line, every value a string except a `label` column, where true/false become booleans;
    message lists do not fit in CSV cells. Other binary formats are refused by name.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        what = "is a directory, not a data file" if path.is_dir() else "file not found"
        raise DataError(source, None, None, what)
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(_PARQUET_MAGIC):
        return _read_parquet(path), None
    data = path.read_bytes()
    name, inside = path.name.lower(), "the file"
    for magic, (what, decompress) in _COMPRESSED.items():
        if data.startswith(magic):
            try:
                data = decompress(data)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
                raise DataError(
                    source,
                    None,
                    None,
                    f"{what}-compressed, but it cannot be decompressed (cut short?): {exc}",
                ) from None
            if name.endswith(_COMPRESSION_SUFFIXES):
                name = name.rsplit(".", 1)[0]
            inside = f"the {what}-decompressed text"
            if data.startswith(_PARQUET_MAGIC):
                raise DataError(
                    source,
                    None,
                    None,
                    f"a {what}-compressed Parquet file; decompress it first (Parquet "
                    "compresses its own columns)",
                )
            break
    for magic, what in _REFUSED.items():
        if data.startswith(magic):
            raise DataError(source, None, None, f"this file is {what}. labkit reads {FORMATS}")
    if name.endswith((".parquet", ".pq")):
        raise DataError(
            source,
            None,
            None,
            "named like a Parquet file, but it does not start with Parquet's magic bytes 'PAR1'",
        )
    if name.endswith(".csv"):
        return _read_csv(source, data)
    return _read_jsonl(source, data, inside)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse a JSONL file (plain or compressed; any format `read_rows` reads) into dicts; blank lines
    are skipped and do not count as rows."""
    return read_rows(path)[0]


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    if len(row) < len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return row


def _not_utf8(
    source: str, row: int | None, line: int, byte: int, at: str = "", field: str | None = None
) -> DataError:
    return DataError(
        source,
        row,
        field,
        f"not valid UTF-8: byte 0x{byte:02x}{at}. The file is in another encoding (Latin-1 or "
        "Windows-1252?) or is not text; save it as UTF-8",
        line=line,
    )


def _read_jsonl(source: str, data: bytes, inside: str = "the file") -> tuple[list[dict[str, Any]], list[int]]:
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    offset = 0
    if data.startswith(codecs.BOM_UTF8):  # written by some Windows editors; not part of the JSON
        data, offset = data[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = f" at byte offset {start + exc.start} of {inside}"
            raise _not_utf8(source, len(rows), line_no, raw[exc.start], at) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as exc:
            raise DataError(
                source,
                len(rows),
                exc.key,
                "appears twice in one JSON object on this line; JSON readers keep only the last value, "
                "so the other would be lost without a word",
                line=line_no,
            ) from None
        except json.JSONDecodeError as exc:
            raise DataError(
                source,
                len(rows),
                None,
                f"not valid JSON: {exc.msg} at column {exc.colno}{_json_hint(line, line_no)}",
                line=line_no,
            ) from None
        if not isinstance(row, dict):
            raise DataError(
                source,
                len(rows),
                None,
                f"a JSON {_JSON_TYPES.get(type(row), 'value')}, not an object{_json_hint(line, line_no)}",
                line=line_no,
            )
        rows.append(row)
        lines.append(line_no)
    return rows, lines


_JSON_TYPES = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _json_hint(line: str, line_no: int) -> str:
    text = line.strip()
    if line_no == 1 and text.startswith("["):
        return " (a JSON array? labkit reads JSONL: one object per line, no enclosing [ ])"
    if text in ("{", "[") or text.endswith(("{", "[")):
        return " (an object spread over several lines? JSONL puts each object on one line)"
    if text.endswith(","):
        return " (a trailing comma? JSONL has one object per line with nothing between them)"
    if text.startswith("\ufeff"):
        return " (a byte-order mark mid-file: were files joined with cat?)"
    return ""


def _read_csv(source: str, data: bytes) -> tuple[list[dict[str, Any]], list[int]]:
    # surrogateescape keeps undecodable bytes, so they can be reported with their row and column.
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    end = 0  # the last line the reader has consumed
    try:
        for cells in reader:
            line_no, end = end + 1, reader.line_num
            if not cells:  # a blank line, skipped as in JSONL
                continue
            row_index = None if header is None else len(rows)
            for j, cell in enumerate(cells):
                try:
                    cell.encode("utf-8")
                except UnicodeEncodeError as exc:
                    column = header[j] if header and j < len(header) else None
                    bad = ord(cell[exc.start]) - 0xDC00  # surrogateescape maps byte b to U+DC00 + b
                    raise _not_utf8(source, row_index, line_no, bad, field=column) from None
            if header is None:
                header = cells
                dup = next((c for k, c in enumerate(cells) if c in cells[:k]), None)
                if dup is not None:
                    raise DataError(source, None, dup, "appears twice in the CSV header", line=line_no)
                continue
            if len(cells) != len(header):
                short = len(cells) < len(header)
                raise DataError(
                    source,
                    len(rows),
                    header[len(cells)] if short else None,
                    f"{len(cells)} cell{'s' * (len(cells) != 1)}, but the header has {len(header)} "
                    f"columns (a {'line break' if short else 'comma'} inside a value needs quotes)",
                    line=line_no,
                )
            row: dict[str, Any] = dict(zip(header, cells, strict=True))
            if "label" in row:  # CSV has no booleans; KTO's label must be one
                label = row["label"].strip().lower()
                row["label"] = {"true": True, "false": False, "": None}.get(label, row["label"])
            rows.append(row)
            lines.append(line_no)
    except csv.Error as exc:
        raise DataError(source, len(rows), None, f"not valid CSV: {exc}", line=end + 1) from None
    return rows, lines


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa  # a dependency of datasets
    import pyarrow.parquet as pq

    try:
        # From the path with one thread: pyarrow 26 reading from an in-memory buffer could abort the
        # interpreter at exit in this environment.
        table = pq.ParquetFile(path).read(use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(str(path), None, None, f"cannot read this Parquet file: {exc}") from None
    return table.to_pylist()


def _kind_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return (
        "list" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__
    )


def _mixed_column(rows: list[dict[str, Any]]) -> tuple[int | None, str | None, str]:
    """The first row and column whose value type differs from the column's earlier rows."""
    seen: dict[str, tuple[str, int]] = {}
    for i, row in enumerate(rows):
        for key, value in row.items():
            if value is None:
                continue
            what = _kind_of_value(value)
            first, at = seen.setdefault(key, (what, i))
            if first != what:
                return i, key, f"a {what} here, but a {first} in row {at}"
    return None, None, "rows could not be stored as one table (a nested value mixes types?)"


def write_text_atomic(path: str | os.PathLike, text: str, *, replace: bool = True, mode: int = 0o644) -> Path:
    """Write `text` through a temp file in the same folder: a reader sees the old file or the new one, never
    half. `replace=False` refuses an existing file (FileExistsError) instead of replacing it, for files
    written once; `mode` is the file's permission bits (mkstemp makes files private; data and reports are
    shared)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            try:  # a hard link fails if the name exists: no window in which another writer slips in
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: check, then rename
                if path.exists():
                    raise FileExistsError(str(path)) from None
                os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically (see write_text_atomic)."""
    return write_text_atomic(path, "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows))
