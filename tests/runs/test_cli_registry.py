"""`labkit runs / show / lineage / register / promote / rollback`: output, exit codes and --registry."""

from __future__ import annotations

import json

import pytest

from labkit.cli import main
from labkit.eval.card import EvalCard, scores_json, slice_rows
from labkit.eval.tasks import Metric, Scored, Task
from labkit.runs import manifest
from labkit.runs.lineage import Lineage
from labkit.runs.manifest import HashCache, RunDir, build_manifest


@pytest.fixture(autouse=True)
def memory_hash_cache(monkeypatch):
    """Keep hashes in memory: the default cache lives in labkit's cache folder, outside the test."""
    monkeypatch.setattr(manifest, "default_hash_cache", HashCache)


MMLU = Task("mmlu", (Metric("accuracy_loglik"),), lambda cfg: [], lambda *a: None)


def card(path, scores):
    items = [Scored("accuracy_loglik", str(i), v) for i, v in enumerate(scores)]
    EvalCard(path.stem, slice_rows(MMLU, items), scores_json("mmlu", items), {}).save(path)
    return str(path)


def test_register_promote_block_and_rollback(tmp_path, capsys):
    reg = ["--registry", str(tmp_path / "reg.sqlite")]
    assert main(["promote", "policy", "production", *reg]) == 2  # no registry yet: a message, exit 2
    assert "no registry at" in capsys.readouterr().err
    for i, scores in enumerate([[1] * 8, [1] * 8, [1] * 2 + [0] * 6], start=1):
        (tmp_path / f"a{i}").mkdir()
        (tmp_path / f"a{i}" / "adapter_model.safetensors").write_text(str(i))
        assert main(["register", str(tmp_path / f"a{i}"), "policy", "--card",
                     card(tmp_path / f"c{i}.json", scores), *reg]) == 0
    assert capsys.readouterr().out.split() == ["policy@v1", "policy@v2", "policy@v3"]
    assert main(["promote", "policy@v1", "production", *reg]) == 0
    assert main(["promote", "policy@v2", "production", *reg]) == 0
    assert "promoted policy@v2 to production (was policy@v1)" in capsys.readouterr().out
    assert main(["promote", "policy@v3", "production", *reg]) == 1  # the gate blocks a worse card
    out = capsys.readouterr().out
    assert "BLOCKED: policy@v3 not promoted to production" in out
    assert "mmlu/accuracy_loglik regressed by 0.750" in out
    assert main(["rollback", "production", *reg]) == 0
    assert capsys.readouterr().out.strip() == "production: rolled back to policy@v1"
    assert main(["rollback", "production", *reg]) == 2
    assert "no earlier version" in capsys.readouterr().err
    assert main(["promote", "policy@v9", "production", *reg]) == 2


def test_runs_show_and_lineage(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the defaults: runs/ and runs/registry.sqlite under the cwd
    assert main(["runs"]) == 0 and "no runs under runs" in capsys.readouterr().out
    (tmp_path / "data.jsonl").write_text("{}\n")
    m = build_manifest("sft", {"model": "org/tiny", "seed": 1, "max_steps": 3}, data=["data.jsonl"],
                       machine={}, git={"commit": "c0ffee", "dirty": True}, cache=HashCache())
    run = RunDir("runs/sft")
    run.start(m)
    run.finish("failed", error="loss is nan")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "w").write_text("w")
    with Lineage("runs/registry.sqlite", cache=HashCache()) as lin:
        out = lin.add_artifact("adapter", "adapter")
        lin.record_manifest(m, path=run.path, outputs=[out], status="failed")
    assert main(["runs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and m.run_id in listed[1] and " failed " in listed[1]
    assert main(["show", m.run_id]) == 0
    shown = capsys.readouterr().out
    assert "status   failed: loss is nan" in shown and "c0ffee (dirty)" in shown
    assert f"outputs  {out}" in shown and "model    org/tiny (hub" in shown
    assert main(["show", "runs/sft", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["run_id"] == m.run_id
    assert main(["show", "nope"]) == 2 and "no run 'nope'" in capsys.readouterr().err
    assert main(["lineage", out]) == 0
    text = capsys.readouterr().out
    assert text.startswith(out) and f"run {m.run_id} (sft, failed)" in text and "model:org/tiny@" in text
    assert main(["lineage", "adapter", "--json"]) == 0  # by path
    graph = json.loads(capsys.readouterr().out)
    assert graph["root"] == out and len(graph["edges"]) == 3
