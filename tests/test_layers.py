"""The layer contract (.importlinter): it holds, and a forbidden import, even one inside a function,
breaks it."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINT = pathlib.Path(sys.executable).with_name("lint-imports")


def lint(cwd: pathlib.Path, pythonpath: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_layer_contract_holds():
    run = lint(ROOT, ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_an_upward_import_inside_a_function_breaks_it(tmp_path):
    shutil.copytree(ROOT / "labkit", tmp_path / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    (tmp_path / "labkit" / "metrics" / "sneaky.py").write_text(
        '"""A metric that reaches up into a stage."""\n\n\ndef measure():\n'
        '    from labkit.stages.sft import train\n\n    return train\n')
    run = lint(tmp_path, tmp_path)
    assert run.returncode == 1, run.stdout
    assert "BROKEN" in run.stdout and "labkit.metrics.sneaky -> labkit.stages.sft" in run.stdout
