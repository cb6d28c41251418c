"""A quiet, honest console: known library noise hidden at its source, a stage's own lines concise, and
--verbose bringing everything back."""

from __future__ import annotations

import logging
import warnings

import pytest

from labkit.quiet import KNOWN_DEPRECATIONS, expected_load_report, install_warning_filters, set_verbose


@pytest.fixture
def clean_warnings():
    saved = warnings.filters[:]
    yield
    warnings.filters[:] = saved
    set_verbose(False)


def _shown(message: str, category=FutureWarning) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # what a user's session shows: once per location
        install_warning_filters()
        warnings.warn(message, category, stacklevel=2)
    return bool(seen)


def _shown_without_reinstall(message: str) -> bool:
    with warnings.catch_warnings(record=True) as seen:
        warnings.filters.insert(len(warnings.filters), ("default", None, Warning, None, 0))
        warnings.warn(message, FutureWarning, stacklevel=2)
    return bool(seen)


def test_known_deprecations_are_hidden_and_nothing_else(clean_warnings):
    assert len(KNOWN_DEPRECATIONS) >= 2
    assert not _shown("`is_gradient_checkpointing` is deprecated and will be removed in v6.")
    assert not _shown("`gradient_checkpointing` is deprecated and will be removed in v6. Use …")
    assert _shown("`something_else` is deprecated")  # an unknown deprecation still reaches the user
    assert _shown("`is_gradient_checkpointing` is deprecated", UserWarning)  # only the named category


def test_verbose_brings_the_warnings_back(clean_warnings):
    ours = {m for _c, m, _w in KNOWN_DEPRECATIONS}

    def hidden() -> set[str]:
        return {f[1].pattern for f in warnings.filters if f[0] == "ignore" and f[1] is not None} & ours

    install_warning_filters()
    assert hidden() == ours
    set_verbose()
    assert hidden() == set()
    assert _shown_without_reinstall("`is_gradient_checkpointing` is deprecated and will be removed in v6.")
    set_verbose(False)
    assert hidden() == ours


def test_load_report_held_back_only_inside_the_block(caplog):
    log = logging.getLogger("transformers.modeling_utils")
    with caplog.at_level(logging.WARNING, logger="transformers.modeling_utils"):
        with expected_load_report():
            log.warning("LlamaForSequenceClassification LOAD REPORT from: x")
            log.warning("something else")
        log.warning("LlamaForSequenceClassification LOAD REPORT from: y")
    assert [r.getMessage()[-1] for r in caplog.records] == ["e", "y"]


def test_a_stage_prints_one_short_line_per_step_and_no_raw_dicts(tiny_model_dir, tmp_path, capfd):
    from labkit.config import SFTConfig
    from labkit.stages import sft

    sft.train(SFTConfig(model=tiny_model_dir, output_dir=str(tmp_path / "run"), max_steps=3, batch_size=2,
                        n_eval=0, eval_split="", train_split=""))
    out, err = capfd.readouterr()
    text = out + err
    assert "{'loss'" not in text and "FutureWarning" not in text and "LOAD REPORT" not in text
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip().startswith("step ")]
    assert [ln.split("  ")[0] for ln in lines] == ["step 1/3", "step 2/3", "step 3/3"]
    assert all("loss" in ln for ln in lines)


def test_cpu_peak_memory_measurement_prints_no_profiler_lines():
    """kernels.profiling uses torch's profiler on CPU; kineto's start/stop lines must not reach stderr (they
    showed under notebook 11 in every nightly run). Its own process: kineto reads the level once."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom labkit.kernels.profiling import peak_bytes\n"
            "print(peak_bytes(lambda: torch.ones(1000) * 2))")
    env = {k: v for k, v in os.environ.items() if k not in ("KINETO_LOG_LEVEL", "LABKIT_VERBOSE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and int(out.stdout) >= 4000, out.stderr
    assert "profiler_start" not in out.stderr and "USDT" not in out.stderr, out.stderr
