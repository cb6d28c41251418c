"""In-training eval: runs every N steps on the model being trained and reaches the log and dashboard."""

from __future__ import annotations

import pytest

from labkit.config import EvalConfig, SFTConfig
from labkit.eval.callback import InTrainingEval
from labkit.runs.callbacks import Callbacks, RunHandles, read_jsonl


class Recorder:
    def __init__(self):
        self.evals = []

    def on_eval(self, step, metrics):
        self.evals.append((step, metrics))


def test_runs_every_n_steps_at_start_and_end(tiny):
    model, tok = tiny
    rec = Recorder()
    ev = InTrainingEval("needle", every=2, cfg=EvalConfig(needle_lengths="64", needle_depths="0.5"))
    emit = Callbacks([rec, ev])
    model.train()
    emit.on_start({"global_step": 0, "handles": RunHandles(model, tok, emit)})
    for step in range(1, 6):
        emit.on_step(step, {"loss": 1.0})
    emit.on_end({"global_step": 5})
    assert [s for s, _ in rec.evals] == [0, 2, 4, 5]
    assert set(rec.evals[0][1]) == {"eval/needle/accuracy"} and model.training
    assert [s for s, _ in ev.history] == [0, 2, 4, 5]


def test_without_handles_it_warns_and_stays_idle():
    ev = InTrainingEval("needle", every=1)
    with pytest.warns(UserWarning, match="no model handles"):
        ev.on_start({"global_step": 0})
    ev.on_step(1, {})
    assert ev.history == []
    with pytest.raises(ValueError):
        InTrainingEval("needle", every=0)


@pytest.mark.smoke
def test_in_training_eval_through_the_sft_stage(tiny_model_dir, tmp_path):
    from labkit.stages import sft

    ev = InTrainingEval("needle", every=2, cfg=EvalConfig(needle_lengths="64", needle_depths="0.5"))
    cfg = SFTConfig(model=tiny_model_dir, max_steps=4, batch_size=2, n_eval=0, eval_split="",
                    output_dir=str(tmp_path / "sft"))
    result = sft.train(cfg, callbacks=[ev])
    assert [s for s, _ in ev.history] == [0, 2, 4]
    logged = [e for e in read_jsonl(result.log_path) if e["event"] == "eval" and "eval/needle/accuracy" in e]
    assert [e["step"] for e in logged] == [0, 2, 4]
    start = next(e for e in read_jsonl(result.log_path) if e["event"] == "start")
    assert "handles" not in start
