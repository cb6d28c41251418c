"""Tracked runs without a model: statuses on success, budget, exception and Ctrl-C; the budget callback;
telemetry; lineage; where the registry lives; score files and drift between runs."""

from __future__ import annotations

import json
import random
import types

import pytest

from labkit.metrics.drift import compare_scores, describe, drift, ks_2samp, psi
from labkit.runs.lineage import Lineage
from labkit.runs.manifest import Budget, HashCache, build_manifest
from labkit.runs.result import RunResult
from labkit.runs.tracking import RunTracker, Telemetry, default_registry, last_checkpoint, run_scores


def manifest(tmp_path, budget: Budget | None = None, **cfg):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1", "completion": "2"}\n')
    config = {"model": "org/tiny", "max_steps": 5, "seed": 0, "output_dir": "anywhere", **cfg}
    return build_manifest("sft", config, data=[data], machine={}, git={"commit": "abc", "dirty": False},
                          cache=HashCache(), budget=budget)


def start(tmp_path, m=None, **kw) -> RunTracker:
    return RunTracker.start(tmp_path / "run", m or manifest(tmp_path), registry=tmp_path / "reg.sqlite", **kw)


def result(tracker: RunTracker) -> RunResult:
    return RunResult("sft", tracker.dir.path, {"steps": 5}, {})


def test_a_run_that_completes_is_done_with_telemetry_scores_and_lineage(tmp_path, capsys):
    run = start(tmp_path)
    assert run.plan.action == "new" and run.dir.status()["status"] == "running"
    (run.dir.checkpoints_dir / "checkpoint-2").mkdir()
    (run.dir.checkpoints_dir / "checkpoint-10").mkdir()
    (run.dir.path / "adapter").mkdir()
    (run.dir.path / "adapter" / "weights.bin").write_bytes(b"w")
    with run:
        with run.telemetry.phase("loop"):
            with run.telemetry.phase("generation"):
                run.telemetry.add_tokens(generated=30)
            run.telemetry.add_tokens(trained=70)
            run.telemetry.add_scores("reward", [0.0, 1.0, None, 1.0])
        out = run.complete(result(run), outputs={"adapter": run.dir.path / "adapter"})
    st = run.dir.status()
    assert st["status"] == "done" and st["error"] is None and st["reason"] is None
    assert st["last_checkpoint"].endswith("checkpoint-10")  # by number, not by name
    t = st["telemetry"]
    assert t["tokens"] == 100 and t["tokens_generated"] == 30 and t["peak_rss_bytes"] > 0
    assert t["loop_seconds"] >= t["generation_seconds"] > 0 and 0 < t["generation_share"] <= 1
    assert t["scores"]["reward"]["n"] == 3 and t["scores"]["reward"]["mean"] == pytest.approx(2 / 3)
    saved = json.loads((run.dir.path / "result.json").read_text())["metrics"]
    assert saved["telemetry"]["tokens"] == 100 and saved["run"]["status"] == "done" and out.metrics["run"]
    assert run_scores(run.dir.path) == {"reward": [0.0, 1.0, 1.0]}
    with Lineage(tmp_path / "reg.sqlite") as lin:
        rec = lin.run(run.run_id)
        assert rec["status"] == "done" and rec["outputs"][0].startswith("adapter:")
        assert any(i.startswith("dataset:") for i in rec["inputs"])
    from labkit.cli import main

    assert main(["show", str(run.dir.path), "--registry", str(tmp_path / "reg.sqlite")]) == 0
    shown = capsys.readouterr().out
    assert "tokens   100 (30 generated, 70 trained)" in shown and "score    reward: mean 0.6667" in shown


def test_an_exception_fails_the_run_with_its_error_and_ctrl_c_interrupts_it(tmp_path):
    run = start(tmp_path)
    with pytest.raises(RuntimeError, match="loss is nan"), run:
        raise RuntimeError("loss is nan")
    st = run.dir.status()
    assert st["status"] == "failed" and st["error"] == "RuntimeError: loss is nan"
    assert "Traceback" in st["traceback"] and "telemetry" in st
    again = start(tmp_path)  # the same manifest after a failure: resumed, next attempt
    assert again.plan.action == "resume" and again.dir.status()["attempt"] == 2
    with pytest.raises(KeyboardInterrupt), again:
        raise KeyboardInterrupt
    assert again.dir.status()["status"] == "interrupted"
    with Lineage(tmp_path / "reg.sqlite") as lin:
        assert lin.run(again.run_id)["status"] == "interrupted"


def test_budget_ceilings_end_the_run_as_budget_exceeded(tmp_path):
    run = start(tmp_path, manifest(tmp_path, Budget(max_steps=3, max_tokens=100)))
    with run:
        assert run.over_budget(2, planned=5) is None
        run.telemetry.add_tokens(trained=99)
        assert run.over_budget(2, planned=5) is None
        assert "max_steps" in run.over_budget(3, planned=5)    # a ceiling below the planned end
        run.telemetry.add_tokens(generated=1)
        assert "max_tokens" in run.over_budget(3, planned=5)   # also over; the first reason is kept
        run.complete(result(run))
    st = run.dir.status()
    assert st["status"] == "budget_exceeded" and st["reason"].startswith("max_steps") and st["error"] is None
    # The planned end is not a ceiling: a run whose schedule is max_steps finishes there.
    other = RunTracker(tmp_path / "x", manifest(tmp_path, Budget(max_steps=5)), run.plan, registry=None)
    assert other.over_budget(5, planned=5) is None
    timed = RunTracker(tmp_path / "y", manifest(tmp_path, Budget(max_seconds=0.01)), run.plan, registry=None)
    timed.telemetry.start -= 1
    assert "max_seconds" in timed.over_budget(1)


def test_the_budget_callback_stops_a_trainer_and_asks_for_a_checkpoint(tmp_path):
    from labkit.runs.trainer_adapter import BudgetCallback, batch_tokens

    run = RunTracker(tmp_path / "run", manifest(tmp_path, Budget(max_steps=2)), types.SimpleNamespace(
        action="new"), registry=None)
    cb = BudgetCallback(run)
    control = types.SimpleNamespace(should_training_stop=False, should_save=False)
    cb.on_step_end(None, types.SimpleNamespace(global_step=1, max_steps=10), control)
    assert not control.should_training_stop and not control.should_save
    cb.on_step_end(None, types.SimpleNamespace(global_step=2, max_steps=10), control)
    assert control.should_training_stop and control.should_save and "max_steps" in run.stop_reason

    import torch

    ones = torch.ones(2, 3)
    assert batch_tokens({"input_ids": ones, "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}) == 3
    assert batch_tokens({"chosen_attention_mask": ones, "rejected_attention_mask": ones}) == 12
    assert batch_tokens({"prompt_ids": ones, "prompt_mask": ones, "completion_mask": ones[:, :1]}) == 8
    assert batch_tokens({"input_ids": torch.ones(1, 7)}) == 7 and batch_tokens([1]) == 0


def test_a_finished_manifest_is_a_no_op_returning_the_stored_result(tmp_path):
    run = start(tmp_path)
    with run:
        run.complete(result(run))
    loads = []
    again = start(tmp_path)
    assert again.skipped
    stored = again.stored_result(lambda: loads.append(1) or ("model", "tok"))
    assert stored.metrics["steps"] == 5 and not loads and "first use" in repr(stored)
    assert stored.model == "model" and stored.tokenizer == "tok" and loads == [1]  # loaded once, on use
    assert start(tmp_path, force=True).plan.action == "rerun"
    # Another manifest in the folder (a config changed): the old run is moved aside, not refused.
    other = start(tmp_path, manifest(tmp_path, seed=1))
    assert other.plan.action == "rerun" and (other.plan.moved_to / "manifest.json").is_file()
    assert other.dir.manifest().config["seed"] == 1
    # … except where only the same manifest may continue (`labkit resume`): there it is an error.
    from labkit.runs.manifest import ManifestError
    from labkit.runs.tracking import same_manifest_only

    with same_manifest_only(), pytest.raises(ManifestError, match="holds another run"):
        start(tmp_path, manifest(tmp_path, seed=2))


def test_a_killed_runs_status_names_a_dead_process_and_may_be_resumed(tmp_path):
    import subprocess
    import sys

    from labkit.runs.manifest import ManifestError

    run = start(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        status = run.dir.status()
        run.dir._write_status({**status, "pid": child.pid})  # as if that process were running it
        with pytest.raises(ManifestError, match="being run by process"):
            start(tmp_path)
    finally:
        child.kill()
        child.wait()
    assert start(tmp_path).plan.action == "resume"  # its process is gone: resumable


def test_default_registry_and_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_REGISTRY", raising=False)
    assert default_registry(tmp_path / "runs" / "02_lora" / "format") == tmp_path / "runs" / "registry.sqlite"
    assert default_registry(tmp_path / "a" / "run") == tmp_path / "a" / "registry.sqlite"
    monkeypatch.setenv("LABKIT_REGISTRY", str(tmp_path / "r.sqlite"))
    assert default_registry(tmp_path / "a") == tmp_path / "r.sqlite"
    monkeypatch.setenv("LABKIT_REGISTRY", "none")
    assert default_registry(tmp_path / "a") is None
    assert last_checkpoint(tmp_path / "nothing") is None


def test_telemetry_splits_the_loop(tmp_path):
    t = Telemetry()
    t.add_seconds("loop", 10.0)
    t.add_seconds("generation", 6.0)
    t.add_seconds("eval", 1.0)
    s = t.summary()
    assert s["generation_share"] == pytest.approx(0.6) and s["update_seconds"] == pytest.approx(3.0)
    t.add_scores("x", range(30_000))
    assert len(t.scores["x"]) == 20_000


def test_drift_flags_a_moved_distribution_and_not_noise():
    rng = random.Random(0)
    a = [rng.gauss(0, 1) for _ in range(500)]
    same = [rng.gauss(0, 1) for _ in range(500)]
    moved = [rng.gauss(0.6, 1) for _ in range(500)]
    assert not drift(a, same).moved and drift(a, same).p_value > 0.01
    report = drift(a, moved, name="reward")
    assert report.moved and report.p_value < 1e-6 and report.psi > 0.1 and "MOVED" in str(report)
    # discrete 0/1 rewards: a pass rate from 30 % to 70 % moved; identical samples did not
    assert drift([0] * 70 + [1] * 30, [0] * 30 + [1] * 70).moved
    assert ks_2samp([0, 1] * 50, [0, 1] * 50) == (0.0, 1.0) and psi([0, 1] * 50, [0, 1] * 50) == 0.0
    d = describe([3, 1, 2, None, float("nan")])
    assert d["n"] == 3 and d["p50"] == 2 and d["min"] == 1 and describe([]) == {"n": 0}
    names = [r.name for r in compare_scores({"a": a, "b": a}, {"b": moved, "c": a})]
    assert names == ["b"]


def test_run_scores_reads_rollouts_and_cli_drift(tmp_path, capsys):
    from labkit.cli import main

    for name, rate in (("a", 0.2), ("b", 0.8)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text("{}")
        rows = [{"reward": float(i < rate * 200), "rewards": {"correctness": float(i < rate * 200)}}
                for i in range(200)]
        (folder / "rollouts.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert sorted(run_scores(tmp_path / "a")) == ["reward", "reward/correctness"]
    assert main(["drift", str(tmp_path / "a"), str(tmp_path / "a")]) == 0
    assert main(["drift", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "MOVED" in capsys.readouterr().out
