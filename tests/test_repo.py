"""Docs that cannot rot: the README file tree lists exactly the repo's files; pyproject lists every
package."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess

try:
    import tomllib
except ImportError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def repo_files() -> set[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return {f for f in out.splitlines() if (ROOT / f).exists()}


def readme_tree() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tree:start -->\n```\n(.*?)```\n<!-- tree:end -->", text, re.S)
    assert block, "README.md has no file tree between <!-- tree:start --> and <!-- tree:end -->"
    entries = {}
    for line in block.group(1).splitlines():
        path, _, desc = line.strip().partition(" ")
        assert desc.strip(), f"README tree line without a description: {line!r}"
        entries[path] = desc.strip()
    return entries


def test_readme_tree_lists_exactly_the_files():
    """Each file is listed or falls under a folder entry (`notebooks/solutions/`: files of one kind, one
    line); a folder entry must hold files."""
    tree, files = set(readme_tree()), repo_files()
    folders = {t for t in tree if t.endswith("/")}
    covered = {f for f in files if any(f.startswith(d) for d in folders)}
    missing, absent = sorted(files - tree - covered), sorted(tree - folders - files)
    assert not missing, f"files missing from the README tree: {missing}"
    assert not absent, f"README tree names files that do not exist: {absent}"
    empty = sorted(d for d in folders if not any(f.startswith(d) for f in files))
    assert not empty, f"README tree names folders without files: {empty}"


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("labkit/**/__init__.py")}
    found |= {f"labkit.{d}" for d in ("kernels", "notebooks") if (ROOT / d / "__init__.py").exists()}
    # data_samples/ imports as labkit.data_samples; its folders (eval/) are data-only packages of the wheel
    samples = ROOT / "data_samples"
    if (samples / "__init__.py").exists():
        found |= {".".join(("labkit", *d.relative_to(ROOT).parts)) for d in [samples, *samples.rglob("*")]
                  if d.is_dir() and not d.name.startswith((".", "__"))}
    assert listed == found


def test_every_module_has_a_docstring():
    for path in [*ROOT.glob("labkit/**/*.py"), *ROOT.glob("kernels/**/*.py")]:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.strip(), f"{path.relative_to(ROOT)} has no module docstring"


def test_readme_commands_are_what_ci_runs():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make tour" in readme
