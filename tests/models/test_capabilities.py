"""The capability report on this (CPU) machine."""

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


def test_gpu_extras_say_what_to_install_or_why_not():
    report = capability_report()
    if torch.cuda.is_available():
        return
    for name, extra in (("unsloth", "gpu"), ("vllm", "vllm")):
        row = report[name]
        assert not row.usable
        assert (f"labkit[{extra}]" in row.detail) if not row.present else ("GPU" in row.detail)
    bnb = report["bitsandbytes"]
    # bitsandbytes 0.50 runs 4-bit layers on CPU: the report must have actually exercised one.
    assert bnb.usable == bnb.present
    assert ("CPU" in bnb.detail) if bnb.present else ("labkit[gpu]" in bnb.detail)
