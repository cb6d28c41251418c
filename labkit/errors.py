"""labkit's exception types: every user-facing failure says where (source, row, field) and what to do."""

from __future__ import annotations


class LabkitError(Exception):
    """Base class for errors that labkit raises on purpose, with a message meant for a person."""


class ConfigError(LabkitError, ValueError):
    """A config field has a value labkit cannot use."""

    def __init__(self, field: str, message: str, *, config: str | None = None):
        self.field = field
        self.config = config
        where = f"{config}.{field}" if config else field
        super().__init__(f"config field '{where}': {message}")


class DataError(LabkitError, ValueError):
    """A dataset row is malformed. Names the source (file or dataset), the 0-based row and the field,
    and for text files the 1-based line: "data.jsonl, row 2, field 'answer', line 4: ..."."""

    def __init__(
        self, source: str, row: int | None, field: str | None, message: str, *, line: int | None = None
    ):
        self.source = source
        self.row = row
        self.field = field
        self.line = line
        self.message = message  # without the location, so a reader can re-raise it with a line number
        parts = [source]
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field '{field}'")
        if line is not None:
            parts.append(f"line {line}")
        super().__init__(f"{', '.join(parts)}: {message}")


class MissingExtraError(LabkitError, ImportError):
    """An optional package is needed for this path; says which extra installs it."""

    def __init__(self, package: str, extra: str, why: str = ""):
        self.package = package
        self.extra = extra
        msg = f"this needs '{package}', which is not installed: pip install 'labkit[{extra}]'"
        super().__init__(f"{msg} ({why})" if why else msg)


def require(package: str, extra: str, why: str = ""):
    """Import an optional package lazily, or raise MissingExtraError naming the extra."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingExtraError(package, extra, why) from exc
