"""Loaded by every process a multi-process test launches (its folder is put first on PYTHONPATH): records
each file the process opens for writing, creates, renames or removes, and writes the list at exit to
$LABKIT_WRITE_AUDIT/rank<RANK>.json. The test then checks which rank wrote where."""

import atexit
import json
import os
import sys

_OUT = os.environ.get("LABKIT_WRITE_AUDIT")
if _OUT and "RANK" in os.environ:
    _seen: list[str] = []
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE)
            if writes and isinstance(path, (str, bytes, os.PathLike)):
                _seen.append(os.path.abspath(os.fsdecode(path)))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.link", "os.remove", "shutil.rmtree",
                       "sqlite3.connect"):
            paths = args[:2] if event in ("os.rename", "os.replace", "os.link") else args[:1]  # from, to
            _seen.extend(os.path.abspath(os.fsdecode(a)) for a in paths
                         if isinstance(a, (str, bytes, os.PathLike)))

    def _dump():
        with open(os.path.join(_OUT, f"rank{os.environ['RANK']}.json"), "w") as fh:
            json.dump(sorted(set(_seen)), fh)

    sys.addaudithook(_hook)
    atexit.register(_dump)
