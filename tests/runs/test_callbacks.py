"""Tests for labkit.runs.callbacks: dispatch, the JSONL log, and the adapter driven by a real Trainer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from labkit.errors import DataError
from labkit.runs.callbacks import (
    Callback,
    Callbacks,
    JsonlLogger,
    metrics_frame,
    read_jsonl,
)
from labkit.runs.trainer_adapter import TrainerCallbackAdapter


class Recorder:
    """Implements every hook and keeps the calls in order."""

    def __init__(self):
        self.calls: list[tuple] = []

    def on_start(self, info):
        self.calls.append(("start", info))

    def on_step(self, step, metrics):
        self.calls.append(("step", step, metrics))

    def on_eval(self, step, metrics):
        self.calls.append(("eval", step, metrics))

    def on_end(self, summary):
        self.calls.append(("end", summary))


class StepOnly:
    def __init__(self):
        self.steps = []

    def on_step(self, step, metrics):
        self.steps.append((step, metrics))


def test_recorder_satisfies_protocol_and_partial_callback_does_not():
    assert isinstance(Recorder(), Callback)
    assert not isinstance(StepOnly(), Callback)


def test_dispatch_skips_missing_methods_and_converts_metrics():
    full, partial = Recorder(), StepOnly()
    cbs = Callbacks([full, partial])
    cbs.on_start({"max_steps": 3})
    cbs.on_step(
        1, {"loss": torch.tensor(2.5), "lr": np.float32(0.5), "n": np.int64(3), "acc": torch.tensor([0.25])}
    )
    cbs.on_eval(1, {"loss": torch.tensor(1.0, dtype=torch.bfloat16)})
    cbs.on_end({"global_step": 1})

    assert [c[0] for c in full.calls] == ["start", "step", "eval", "end"]
    step_metrics = full.calls[1][2]
    assert step_metrics == {"loss": 2.5, "lr": 0.5, "n": 3.0, "acc": 0.25}
    assert all(type(v) is float for v in step_metrics.values())
    assert partial.steps == [(1, step_metrics)]


def test_dispatch_accepts_single_callback_none_and_nested():
    rec = Recorder()
    assert len(Callbacks(rec)) == 1
    assert len(Callbacks(None)) == 0
    assert len(Callbacks([Callbacks([rec]), StepOnly()])) == 2


def test_dispatch_rejects_non_callbacks_and_non_scalar_metrics():
    with pytest.raises(TypeError, match="not a callback"):
        Callbacks([lambda step, metrics: None])
    with pytest.raises(TypeError, match="metric 'logits'"):
        Callbacks([Recorder()]).on_step(1, {"logits": torch.zeros(2, 3)})


def test_jsonl_round_trip_with_nonfinite_values(tmp_path):
    path = tmp_path / "deep" / "dir" / "log.jsonl"
    log = Callbacks([JsonlLogger(path)])
    log.on_start({"global_step": 0, "max_steps": 2})
    log.on_step(1, {"loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-3})
    log.on_step(2, {"loss": 0.5, "grad_norm": -math.inf})
    log.on_eval(2, {"loss": 0.75})
    log.on_end({"global_step": 2, "last_step": {"loss": float("nan")}})

    # The file itself is strict JSON: no bare NaN / Infinity tokens.
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    events = read_jsonl(path)
    assert [(e["event"], e["step"]) for e in events] == [
        ("start", 0),
        ("step", 1),
        ("step", 2),
        ("eval", 2),
        ("end", 2),
    ]
    assert all(isinstance(e["time"], float) for e in events)
    assert math.isnan(events[1]["loss"]) and events[1]["grad_norm"] == math.inf and events[1]["lr"] == 1e-3
    assert events[2]["grad_norm"] == -math.inf
    assert math.isnan(events[4]["last_step"]["loss"])
    assert events[0]["max_steps"] == 2


def test_partial_log_survives_without_on_end(tmp_path):
    path = tmp_path / "log.jsonl"
    logger = JsonlLogger(path)
    logger.on_start({})
    logger.on_step(1, {"loss": 1.0})
    logger.on_step(2, {"loss": 0.9})
    # No on_end and no close: what was logged is already on disk. A crash mid-write leaves a cut line.
    with path.open("a") as f:
        f.write('{"event": "step", "st')
    events = read_jsonl(path)
    assert [e["event"] for e in events] == ["start", "step", "step"]
    assert events[-1]["loss"] == 0.9


def test_read_jsonl_names_a_bad_middle_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"event": "step", "step": 1}\nnot json\n{"event": "step", "step": 2}\n')
    with pytest.raises(DataError, match="row 1"):
        read_jsonl(path)


def test_logger_truncates_unless_append(tmp_path):
    path = tmp_path / "log.jsonl"
    JsonlLogger(path).on_step(1, {"loss": 1.0})
    JsonlLogger(path, append=True).on_step(2, {"loss": 0.5})
    assert [e["step"] for e in read_jsonl(path)] == [1, 2]
    JsonlLogger(path)
    assert read_jsonl(path) == []


def test_metrics_frame_aligns_columns():
    events = [
        {"event": "start", "step": 0, "max_steps": 3},
        {"event": "step", "step": 1, "loss": 2.0, "time": 10.0},
        {"event": "eval", "step": 2, "loss": 1.5, "time": 11.0},
        {"event": "step", "step": 2, "loss": 1.0, "grad_norm": 0.5, "note": "text", "time": 12.0},
    ]
    frame = metrics_frame(events)
    assert list(frame) == ["step", "loss", "time", "grad_norm"]
    assert frame["step"] == [1.0, 2.0] and frame["loss"] == [2.0, 1.0]
    assert math.isnan(frame["grad_norm"][0]) and frame["grad_norm"][1] == 0.5
    assert metrics_frame(events, event="eval") == {"step": [2.0], "loss": [1.5], "time": [11.0]}


@pytest.mark.smoke
def test_adapter_with_real_trainer(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    class EvalAtStep2(TrainerCallback):
        # eval_strategy="steps" would also evaluate at the last step; one eval keeps the expectations exact.
        def on_step_end(self, args, state, control, **kwargs):
            control.should_evaluate = state.global_step == 2

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config)

    def random_tokens(n: int) -> list[dict]:
        ids = torch.randint(0, 256, (n, 16))
        return [{"input_ids": row, "labels": row.clone()} for row in ids]

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    rec = Recorder()
    log_path = tmp_path / "log.jsonl"
    adapter = TrainerCallbackAdapter([rec, JsonlLogger(log_path)])
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=random_tokens(8),
        eval_dataset=random_tokens(2),
        callbacks=[EvalAtStep2(), adapter],
    )
    trainer.train()

    kinds = [c[0] for c in rec.calls]
    assert kinds.count("start") == 1 and kinds[0] == "start"
    assert kinds[-1] == "end" and kinds.count("end") == 1
    assert rec.calls[0][1]["max_steps"] == 4

    steps = [c for c in rec.calls if c[0] == "step"]
    assert [c[1] for c in steps] == [1, 2, 3, 4]
    for _, _, metrics in steps:
        assert math.isfinite(metrics["loss"])
        assert "learning_rate" in metrics and "grad_norm" in metrics
        assert not any(k.startswith(("eval_", "train_")) for k in metrics)

    evals = [c for c in rec.calls if c[0] == "eval"]
    assert [c[1] for c in evals] == [2]
    assert math.isfinite(evals[0][2]["loss"]) and not any(k.startswith("eval_") for k in evals[0][2])

    summary = rec.calls[-1][1]
    assert summary["global_step"] == 4
    assert "train_runtime" in summary and math.isfinite(summary["train_loss"])
    assert summary["last_step"] == steps[-1][2] and summary["last_eval"] == evals[-1][2]

    events = read_jsonl(log_path)
    assert [e["event"] for e in events] == kinds
    assert metrics_frame(events)["step"] == [1.0, 2.0, 3.0, 4.0]


def test_adapter_on_evaluate_sends_once_per_step():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    state, control = TrainerState(global_step=3), TrainerControl()
    rec = Recorder()
    adapter = TrainerCallbackAdapter(rec)
    # A caller that fires on_evaluate without logging first still reaches on_eval...
    adapter.on_evaluate(args, state, control, metrics={"eval_loss": 0.5, "eval_runtime": 0.1})
    # ...and a log of the same evaluation at the same step is not sent twice.
    adapter.on_log(args, state, control, logs={"eval_loss": 0.5, "eval_runtime": 0.1})
    assert rec.calls == [("eval", 3, {"loss": 0.5, "runtime": 0.1})]
