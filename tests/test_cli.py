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


def test_labkit_errors_become_messages(capsys, tmp_path):
    assert main(["notebooks", "no_such_notebook"]) == 2
    assert "no notebook matches 'no_such_notebook'" in capsys.readouterr().err
    # the tour checks its notebook selection before the first stage, and writes nothing
    assert main(["tour", "--out", str(tmp_path), "--notebooks", "00,no_such_notebook"]) == 2
    assert "no notebook matches 'no_such_notebook'" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.smoke
def test_tour_writes_a_report(tmp_path, capsys):
    assert main(["tour", "--preset", "cpu-smoke", "--out", str(tmp_path), "--no-notebooks"]) == 0
    out = capsys.readouterr().out
    path = out.strip().splitlines()[-1].removeprefix("report: ")
    html = open(path).read()
    for section in ("Machine", "Model", "Chat template and loss mask", "Baseline generations",
                    "Forgetting probe (baseline)", "SFT (LoRA)", "Reward model",
                    "Preference optimisation (DPO)",
                    "RL from verifiable rewards (GRPO)", "Serving: the adapters side by side",
                    "Evaluation suite", "Timings"):
        assert f">{section}<" in html
    assert "#### " in html  # the target format shown beside the baseline replies
    assert "<script src=\"http" not in html


def test_eval_writes_a_card_and_gates_against_a_baseline(tmp_path, tiny_model_dir, capsys):
    import json

    from labkit.eval.card import EvalCard

    args = ["eval", "--preset", "cpu-smoke", "--model", tiny_model_dir, "--tasks", "mmlu"]
    assert main([*args, "--out", str(tmp_path / "base.json")]) == 0
    base = EvalCard.load(tmp_path / "base.json")
    assert "mmlu/accuracy_loglik" in capsys.readouterr().out
    # A baseline that scored 1.0 everywhere makes this same model a regression: the gate fails, exit 1.
    perfect = {**base.to_dict(), "table": [{**r, "value": 1.0} for r in base.table],
               "scores": [{**s, "score": 1.0} for s in base.scores]}
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    assert main([*args, "--out", str(tmp_path / "new.json"), "--baseline",
                 str(tmp_path / "perfect.json")]) == 1
    assert "gate default: FAILED" in capsys.readouterr().out
    (tmp_path / "broken.json").write_text("{}")
    assert main([*args, "--baseline", str(tmp_path / "broken.json")]) == 2
    assert "not a labkit eval card" in capsys.readouterr().err
