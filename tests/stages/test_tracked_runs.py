"""Tracked stage runs on the tiny model (SFT stands for every stage: they share labkit.runs.tracking):
one manifest gives identical metrics twice, a run killed with SIGKILL resumes with `labkit resume` to the
uninterrupted run's numbers, budgets stop runs cleanly with a checkpoint, an exception fails a run and Ctrl-C
interrupts it, and a finished manifest is not run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import labkit.stages.sft as sft_stage
from labkit.config import SFTConfig
from labkit.runs.callbacks import read_jsonl
from labkit.runs.manifest import RunDir

pytestmark = pytest.mark.smoke

TIMING = ("time", "runtime", "per_second")  # fields that measure the clock, not the computation


def cfg(tiny_model_dir, folder, **kw) -> SFTConfig:
    base = dict(model=tiny_model_dir, output_dir=str(folder), max_steps=6, batch_size=4, n_eval=4,
                eval_max_new_tokens=8, dtype="float32", learning_rate=1e-2)
    return SFTConfig.from_preset("cpu-smoke", **{**base, **kw})


def steps(run_dir) -> dict[int, dict]:
    """Each step's logged metrics (the last record of a step logged twice), clock fields left out."""
    return {e["step"]: {k: v for k, v in e.items() if not any(t in k for t in TIMING)}
            for e in read_jsonl(run_dir / "metrics.jsonl") if e["event"] == "step"}


def test_one_manifest_twice_gives_identical_metrics_and_a_finished_one_is_not_run_again(
        tiny_model_dir, tmp_path, monkeypatch):
    a = sft_stage.train(cfg(tiny_model_dir, tmp_path / "a", max_steps=3))
    b = sft_stage.train(cfg(tiny_model_dir, tmp_path / "b", max_steps=3))
    assert RunDir(a.output_dir).manifest().hash() == RunDir(b.output_dir).manifest().hash()
    assert steps(a.output_dir) == steps(b.output_dir) and len(steps(a.output_dir)) == 3
    for key in ("before", "after", "train_loss", "steps", "probe_per_prompt"):
        assert a.metrics[key] == b.metrics[key], key
    assert a.samples == b.samples
    assert RunDir(a.output_dir).status()["status"] == "done"

    # The same manifest again: a no-op that returns the stored result; the model loads only when used.
    from labkit.models import adapters

    monkeypatch.setattr(adapters, "load_for_training", lambda *a, **k: pytest.fail("trained again"))
    again = sft_stage.train(cfg(tiny_model_dir, tmp_path / "a", max_steps=3))
    assert again.metrics["after"] == a.metrics["after"] and RunDir(a.output_dir).status()["attempt"] == 1
    assert type(again.model).__name__ == "PeftModelForCausalLM"


CHILD = """
import json, sys, time
from labkit.config import SFTConfig
from labkit.stages import sft

class Hang:  # once step 4 is logged (checkpoint-2 saved, checkpoint-4 not yet): signal, wait for the kill
    def on_step(self, step, metrics):
        if step == 4:
            open(sys.argv[2], "w").close()
            time.sleep(300)

sft.train(SFTConfig.from_dict(json.loads(sys.argv[1])), callbacks=[Hang()])
"""


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_runs_metrics(tiny_model_dir, tmp_path):
    from labkit.cli import main

    straight = sft_stage.train(cfg(tiny_model_dir, tmp_path / "straight", save_every=2))

    c = cfg(tiny_model_dir, tmp_path / "killed", save_every=2)
    marker = tmp_path / "at-step-4"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(c.to_dict()), str(marker)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the child run ended early: {child.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the child run never reached step 4"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    run = RunDir(c.output_dir)
    assert run.status()["status"] == "running"  # nobody could write a final status
    assert sorted(p.name for p in run.checkpoints_dir.glob("checkpoint-*")) == ["checkpoint-2"]

    assert main(["resume", str(run.path)]) == 0
    st = run.status()
    assert st["status"] == "done" and st["attempt"] == 2 and st["run_id"] == run.manifest().run_id
    resumed = json.loads((run.path / "result.json").read_text())["metrics"]
    assert resumed["run"]["resumed_from"] == "checkpoint-2"
    got, ref = steps(run.path), steps(straight.output_dir)
    assert sorted(got) == sorted(ref) == [1, 2, 3, 4, 5, 6]
    for step in ref:
        for key in ("loss", "grad_norm", "learning_rate"):
            assert got[step][key] == pytest.approx(ref[step][key], rel=1e-5), (step, key)
    assert resumed["train_loss"] == pytest.approx(straight.metrics["train_loss"], rel=1e-5)
    assert resumed["steps"] == 6
    for key, value in straight.metrics["after"].items():
        assert resumed["after"][key] == pytest.approx(value, rel=1e-5), key
    # A finished run resumes to nothing, unless forced.
    assert main(["resume", str(run.path)]) == 0 and run.status()["attempt"] == 2


def test_budgets_stop_a_run_cleanly_with_a_checkpoint(tiny_model_dir, tmp_path):
    # max_tokens: each step trains on about 250 tokens of the sample conversations
    capped = sft_stage.train(cfg(tiny_model_dir, tmp_path / "tokens", max_tokens=400))
    st = RunDir(capped.output_dir).status()
    assert st["status"] == "budget_exceeded" and st["reason"].startswith("max_tokens")
    assert capped.metrics["steps"] == 2 and st["last_checkpoint"].endswith("checkpoint-2")
    assert st["telemetry"]["tokens_trained"] >= 400 and (capped.output_dir / "adapter").is_dir()
    # max_seconds: over before the first step ends
    timed = sft_stage.train(cfg(tiny_model_dir, tmp_path / "seconds", max_seconds=0.001))
    st = RunDir(timed.output_dir).status()
    assert st["status"] == "budget_exceeded" and st["reason"].startswith("max_seconds")
    assert timed.metrics["steps"] == 1 and st["last_checkpoint"].endswith("checkpoint-1")
    assert timed.metrics["run"]["status"] == "budget_exceeded"


class Boom:
    def __init__(self, exc: BaseException):
        self.exc = exc

    def on_step(self, step, metrics):
        if step == 2:
            raise self.exc


def test_an_exception_fails_the_run_and_ctrl_c_interrupts_it(tiny_model_dir, tmp_path):
    c = cfg(tiny_model_dir, tmp_path / "run", max_steps=3)
    with pytest.raises(RuntimeError, match="diverged"):
        sft_stage.train(c, callbacks=[Boom(RuntimeError("loss diverged"))])
    st = RunDir(c.output_dir).status()
    assert st["status"] == "failed" and st["error"] == "RuntimeError: loss diverged"
    assert "Traceback" in st["traceback"]
    with pytest.raises(KeyboardInterrupt):
        sft_stage.train(c, callbacks=[Boom(KeyboardInterrupt())])
    st = RunDir(c.output_dir).status()
    assert st["status"] == "interrupted" and st["attempt"] == 2
