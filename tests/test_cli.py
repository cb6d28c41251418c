"""The `labkit` command: capabilities, errors as messages, and the tour at smoke size."""

from __future__ import annotations

import re

import pytest

from labkit.cli import main


def test_caps_prints_every_component(capsys):
    assert main(["caps"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "cuda", "bitsandbytes", "unsloth", "vllm"):
        assert re.search(rf"^. {name}\b", out, re.M)


def test_labkit_errors_become_messages(capsys):
    assert main(["notebooks", "no_such_notebook"]) == 2
    assert "labkit: no notebook matches" in capsys.readouterr().err


@pytest.mark.smoke
def test_tour_writes_a_report(tmp_path, capsys):
    assert main(["tour", "--preset", "cpu-smoke", "--out", str(tmp_path), "--no-notebooks"]) == 0
    out = capsys.readouterr().out
    path = out.strip().splitlines()[-1].removeprefix("report: ")
    html = open(path).read()
    for section in ("Machine", "Model", "Chat template and loss mask", "Baseline generations",
                    "Forgetting probe (baseline)", "SFT (LoRA)", "Reward model", "Preference optimisation (DPO)",
                    "Timings"):
        assert f">{section}<" in html
    assert "#### " in html  # the target format shown beside the baseline replies
    assert "<script src=\"http" not in html
