"""Notebooks: thin-notebook lint, pairing with their jupytext .py,
and headless papermill runs (smoke preset)."""

from __future__ import annotations

import ast
import re

import jupytext
import nbformat
import pytest

from labkit.errors import ConfigError
from labkit.runs.notebooks import NOTEBOOKS_DIR, list_notebooks, run_notebook, select_notebooks

NOTEBOOKS = list_notebooks()
MAX_CELL_LINES = 30     # a cell longer than this is plumbing that belongs in labkit/
MAX_DEF_LINES = 5       # a short helper (a lambda-like def) is fine; real functions live in labkit/


def ids(paths):
    return [p.stem for p in paths]


def test_there_are_notebooks_and_each_is_numbered():
    assert NOTEBOOKS, "no notebooks found"
    assert [p.name for p in NOTEBOOKS][0].startswith("00_")
    for p in NOTEBOOKS_DIR.glob("*.ipynb"):
        assert re.match(r"\d\d[a-z]?_[a-z0-9_]+\.ipynb$", p.name), p.name


def test_select_notebooks_by_name_all_or_none():
    assert select_notebooks("all") == NOTEBOOKS
    assert select_notebooks("none") == select_notebooks("") == []
    assert [p.name for p in select_notebooks("00")] == [NOTEBOOKS[0].name]  # a number: not 00b_
    assert [p.name for p in select_notebooks("setup")] == [NOTEBOOKS[0].name]
    assert select_notebooks(" 08_eval , 00 ") == [NOTEBOOKS[0],
                                                  *[p for p in NOTEBOOKS if p.name.startswith("08_")]]
    with pytest.raises(ConfigError, match=r"notebooks.*'nope'.*have: 00_"):
        select_notebooks("00,nope")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_paired_py_is_in_sync(path):
    py = path.with_suffix(".py")
    assert py.exists(), f"{path.name} has no paired {py.name} (jupytext percent)"
    a = [(c.cell_type, c.source.strip()) for c in nbformat.read(path, as_version=4).cells]
    b = [(c.cell_type, c.source.strip()) for c in jupytext.read(py).cells]
    assert a == b, f"{path.name} and {py.name} differ: run `jupytext --sync {py}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_is_thin(path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters' (papermill injects after it)"
    assert re.search(r"^PRESET\s*=", params[0].source, re.M), "the parameters cell sets PRESET"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("from labkit" in c.source for c in code)
    assert not any(c.outputs for c in code), "commit notebooks without outputs"
    for c in code:
        assert not re.search(r"^\s*[!%]", c.source, re.M), f"shell/magic line in a cell:\n{c.source}"
        assert "SMOKE" not in c.source, "presets carry the size dial; notebooks never branch on smoke"
        assert len(c.source.splitlines()) <= MAX_CELL_LINES, f"cell too long:\n{c.source[:200]}"
        for node in ast.walk(ast.parse(c.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= MAX_DEF_LINES, f"{node.name} is {n} lines: move it into labkit/"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_runs_headless_in_smoke_preset(path, tmp_path):
    run = run_notebook(path, out_dir=tmp_path, preset="cpu-smoke", timeout=600)
    assert run.ok, run.error
    nb = nbformat.read(run.output, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert "widgets" not in nb.metadata  # widget state is stripped from headless artifacts
