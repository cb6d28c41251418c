"""The built wheel works without the checkout: installed in a fresh env, `python -m labkit tour` runs
anywhere.

The wheel is built with `pip wheel --no-deps --no-build-isolation` (nothing downloaded) from a copy of the
files the build reads (pyproject.toml, README.md and the package-dir folders), so the checkout gets no
build/ folder and stale build/lib files can never leak into the wheel. It is installed with --no-deps into a
fresh `venv --without-pip` whose only link to this venv is a .pth line naming this venv's site-packages:
the dependencies are reused, while this venv's editable labkit stays off (.pth files inside a directory
added that way are not processed, so its import finder is never installed). Then, from an empty folder
outside the checkout, the smoke tour runs; a sitecustomize audit hook in the fresh env logs the .jsonl
files it opens, which shows the sample datasets were read from the installed package.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Loaded at startup by the fresh env's python (it sits in its site-packages); active only when the
# variable is set, and only in that process (popped, so sandboxed children neither inherit nor write it).
SITECUSTOMIZE = '''
import atexit, os
_log = os.environ.pop("LABKIT_TEST_OPEN_LOG", None)
if _log:
    import sys
    _checkout = os.environ["LABKIT_TEST_CHECKOUT"] + os.sep
    _deps = os.environ["LABKIT_TEST_DEPS"] + os.sep
    _seen = set()

    def _hook(event, args):
        if event != "open" or isinstance(args[0], int):
            return
        try:
            path = os.path.abspath(os.fsdecode(os.fspath(args[0])))
        except Exception:
            return
        if path.endswith(".jsonl") or (path.startswith(_checkout) and not path.startswith(_deps)):
            _seen.add(path)

    def _write():
        with open(_log, "w") as f:
            f.write("\\n".join(sorted(_seen)))

    sys.addaudithook(_hook)
    atexit.register(_write)
'''

PROBE = '''
import json, labkit
from labkit.data.samples import SAMPLES, SAMPLES_DIR
from labkit.eval.tasks import FIXTURES_DIR
from labkit.runs.notebooks import list_notebooks
print(json.dumps({"labkit": labkit.__file__, "samples_dir": str(SAMPLES_DIR),
                  "fixtures_dir": str(FIXTURES_DIR), "samples": [s.name for s in SAMPLES],
                  "notebooks": [str(p) for p in list_notebooks()]}))
'''


def _is_under(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    return pathlib.Path(path).resolve().is_relative_to(pathlib.Path(folder).resolve())


def _build_wheel(tmp: pathlib.Path) -> pathlib.Path:
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for top in sorted({d.split("/")[0] for d in setuptools_cfg["package-dir"].values()}):
        shutil.copytree(ROOT / top, src / top,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), "."], cwd=src, check=True, capture_output=True)
    (wheel,) = dist.glob("labkit-*.whl")
    return wheel


def _fresh_env(tmp: pathlib.Path, wheel: pathlib.Path, env: dict) -> tuple[pathlib.Path, pathlib.Path]:
    """(python, site-packages) of a new venv holding the wheel and seeing this venv's packages after its
    own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    site = pathlib.Path(subprocess.run([str(python), "-c",
                                        "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                       check=True, capture_output=True, text=True, env=env).stdout.strip())
    (site / "_labkit_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # this venv's pip, run by the fresh python; --ignore-installed: never touch the labkit in this venv
    subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                    "--no-index", "--ignore-installed", str(wheel)], check=True, capture_output=True, env=env)
    return python, site


@pytest.mark.smoke  # the tour at smoke size, like tests/test_cli.py's: a few minutes, in the default run
def test_wheel_install_runs_the_smoke_tour_outside_the_checkout(tmp_path):
    assert not _is_under(tmp_path, ROOT), "the temporary folder must lie outside the checkout"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env |= {"PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}
    wheel = _build_wheel(tmp_path)
    python, site = _fresh_env(tmp_path, wheel, env)
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    # The fresh env imports the wheel's labkit, and its data folders are real folders inside that install.
    probe = subprocess.run([str(python), "-c", PROBE], cwd=run_dir, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    where = json.loads(probe.stdout.strip().splitlines()[-1])
    assert _is_under(where["labkit"], site) and not _is_under(where["labkit"], ROOT), where
    samples, fixtures = pathlib.Path(where["samples_dir"]), pathlib.Path(where["fixtures_dir"])
    assert _is_under(samples, site) and _is_under(fixtures, samples), where
    for name in [*where["samples"], "README.md"]:
        assert (samples / name).is_file(), f"{name} missing from the installed package"
    assert (fixtures / "README.md").is_file() and len(list(fixtures.glob("*.jsonl"))) >= 5
    assert where["notebooks"] and all(_is_under(nb, site) for nb in where["notebooks"]), where["notebooks"]

    # `python -m labkit` from a folder outside the checkout: the tour, notebook 00 included, from the wheel.
    log = tmp_path / "opened.txt"
    env_run = env | {"LABKIT_TEST_OPEN_LOG": str(log), "LABKIT_TEST_CHECKOUT": str(ROOT),
                     "LABKIT_TEST_DEPS": sys.prefix}
    tour = subprocess.run([str(python), "-m", "labkit", "tour", "--preset", "cpu-smoke"],
                          cwd=run_dir, env=env_run, capture_output=True, text=True, timeout=3600)
    assert tour.returncode == 0, f"tour failed:\n{tour.stdout[-3000:]}\n{tour.stderr[-6000:]}"
    report = pathlib.Path(tour.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert report.is_file() and _is_under(report, run_dir / "reports"), tour.stdout[-2000:]
    assert ">Timings<" in report.read_text()

    opened = log.read_text().splitlines()
    checkout = [p for p in opened if _is_under(p, ROOT) and not _is_under(p, sys.prefix)]
    assert not checkout, f"the installed labkit read files from the checkout: {checkout}"
    data = [pathlib.Path(p).resolve() for p in opened
            if p.endswith(".jsonl") and "data_samples" in pathlib.Path(p).parts]
    assert data and all(_is_under(p, samples) for p in data), data
    assert ((samples / "sft_format.jsonl").resolve() in data
            and any(_is_under(p, fixtures) for p in data)), data
