"""Unsloth's CPU backend (2026.10.9+) against PEFT: the same SFT, DPO and GRPO runs, compared step by step.

Importing unsloth patches transformers and TRL for the whole process, so every run here happens in a child
process (unsloth_cpu_job.py), one per backend, the two side by side; this process must never import it.
`bash scripts/setup_unsloth.sh` installs Unsloth (with --no-deps, beside torch 2.13.0); without it the
comparison skips, and fails under CI, which must run it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from labkit.errors import ConfigError, MissingExtraError
from labkit.models import adapters, capability_report

pytestmark = pytest.mark.smoke

JOB = pathlib.Path(__file__).with_name("unsloth_cpu_job.py")
STAGES = "sft-lora,sft-qlora,dpo,grpo"
# Both backends train in float32 on the same tokens from the same LoRA init; what differs is the arithmetic
# of the loss (Unsloth: chunked cross-entropy over padded batches; labkit: full logits of the labelled
# positions over padding-free batches), so the curves differ only by rounding. Measured (2026.10.9, 5 steps):
# LoRA loss equal to float32's last digit and grad norms within 2e-7 relative; QLoRA within 6e-6, where the
# 4-bit layers' bf16 matmuls amplify the rounding step by step. 1e-4 leaves room for other CPUs' summation
# orders and stays far below the curve's own step-to-step change (1-2% per step at this learning rate),
# which is where another init, mask, LoRA scaling or learning rate would show.
REL = 1e-4


def _installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """{backend: the job's RESULT} for the same stages through PEFT and through Unsloth."""
    if not (_installed() and adapters.unsloth_cpu_backend()):
        msg = "Unsloth with a CPU backend is not installed: run `bash scripts/setup_unsloth.sh`"
        if os.environ.get("CI"):
            pytest.fail(msg)   # CI installs it (scripts/test.sh): the comparison must run there
        pytest.skip(msg)
    out = tmp_path_factory.mktemp("unsloth-cpu")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNSLOTH_FORCE_CPU": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    # Side by side (one thread each); output to files, so neither blocks on a full pipe.
    procs = {}
    for b in ("peft", "unsloth"):
        with open(out / f"{b}.log", "w") as log:
            procs[b] = subprocess.Popen([sys.executable, str(JOB), b, tiny_model_dir, str(out / b), STAGES],
                                        env=env, stdout=log, stderr=subprocess.STDOUT)
    results = {}
    for backend, proc in procs.items():
        proc.wait(timeout=600)
        text = (out / f"{backend}.log").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"{backend} job failed:\n{text[-4000:]}"
        results[backend] = json.loads(lines[-1][len("RESULT "):])
    return results


def _close(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x == pytest.approx(y, rel=REL, abs=1e-6) for x, y in zip(a, b))


@pytest.mark.parametrize("stage", ["sft-lora", "sft-qlora"])
def test_sft_through_unsloth_matches_peft(runs, stage):
    peft, unsloth = runs["peft"]["stages"][stage], runs["unsloth"]["stages"][stage]
    assert runs["unsloth"]["device"] == "cpu"
    assert unsloth["backend"] == "unsloth" and peft["backend"] == "peft"
    # Unsloth's own loss ran (its chunked cross-entropy, once per training step), not just its name.
    assert len(unsloth["loss"]) == 5 and unsloth["chunked_ce_calls"] >= 5 and peft["chunked_ce_calls"] == 0
    assert _close(unsloth["loss"], peft["loss"]), f"loss: unsloth {unsloth['loss']} vs peft {peft['loss']}"
    assert _close(unsloth["grad_norm"], peft["grad_norm"]), \
        f"grad norm: unsloth {unsloth['grad_norm']} vs peft {peft['grad_norm']}"
    assert unsloth["loss"][-1] < unsloth["loss"][0]   # it learns


@pytest.mark.parametrize("stage", ["dpo", "grpo"])
def test_forced_preference_and_grpo_steps_are_peft_steps(runs, stage):
    """What the capability report says: Unsloth's CPU backend supports only SFTTrainer. A DPO or GRPO step
    forced onto its model loader runs, as stock TRL, and gives PEFT's numbers: nothing gained, so labkit
    keeps those stages on PEFT."""
    peft, unsloth = runs["peft"]["stages"][stage], runs["unsloth"]["stages"][stage]
    assert unsloth["backend"] == "unsloth" and unsloth["loss"]
    assert _close(unsloth["loss"], peft["loss"]) and _close(unsloth["grad_norm"], peft["grad_norm"])
    assert any(g for g in unsloth["grad_norm"]), "the step had no gradient: nothing was compared"
    report = capability_report()
    key = "preference" if stage == "dpo" else "grpo / rloo / ppo"
    assert report.stages[key].startswith("peft") and "only SFTTrainer" in report.stages[key]
    assert "unsloth" in report.stages["sft"]


# ------------------------------------------------------------------------ backend choice (no unsloth import)

CPU = torch.device("cpu")


def test_auto_stays_on_peft_on_cpu_even_with_unsloth_installed():
    backend, reason = adapters.choose_backend("auto", "lora", CPU)
    assert backend == "peft" and "backend='unsloth'" in reason


def test_unsloth_on_cpu_needs_its_cpu_backend(monkeypatch):
    monkeypatch.setattr(adapters.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(adapters, "unsloth_cpu_backend", lambda: True)
    assert adapters.choose_backend("unsloth", "qlora", CPU)[0] == "unsloth"
    monkeypatch.setattr(adapters, "unsloth_cpu_backend", lambda: False)
    with pytest.raises(ConfigError, match="no CPU backend"):
        adapters.choose_backend("unsloth", "lora", CPU)
    with pytest.raises(ConfigError, match="not mps"):
        adapters.choose_backend("unsloth", "lora", torch.device("mps"))
    monkeypatch.setattr(adapters.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError):
        adapters.choose_backend("unsloth", "lora", CPU)


def test_this_process_never_imported_unsloth():
    # Everything above ran Unsloth in child processes; its patches must not have reached this one.
    assert "unsloth" not in sys.modules and "unsloth_zoo" not in sys.modules
