"""Real learning on the embedded model (slow tier): the `cpu` preset teaches the `#### n` format."""

import time

import pytest

from labkit.config import SFTConfig
from labkit.stages.sft import train


@pytest.mark.slow
def test_cpu_preset_teaches_the_answer_format(tmp_path):
    start = time.perf_counter()
    result = train(SFTConfig.from_preset("cpu", output_dir=str(tmp_path / "sft")))
    minutes = (time.perf_counter() - start) / 60
    before, after = result.metrics["before"], result.metrics["after"]
    print(f"format accuracy {before['format_accuracy']:.2f} -> {after['format_accuracy']:.2f} "
          f"in {minutes:.1f} min; "
          f"answer accuracy {before['answer_accuracy']:.2f} -> {after['answer_accuracy']:.2f}; "
          f"probe loss {before['probe_loss']:.3f} -> {after['probe_loss']:.3f}; "
          f"{result.metrics['tokens_per_s']:.0f} tokens/s")
    assert after["format_accuracy"] - before["format_accuracy"] >= 0.5
