"""The lineage store: artifacts by content, runs and their edges, the chain back to the base model and data,
its text and plain-data forms, and all-or-nothing writes."""

from __future__ import annotations

import pytest

from labkit.runs.lineage import Lineage, LineageError
from labkit.runs.manifest import HashCache, build_manifest


def files(tmp_path):
    """Small stand-ins: a base model folder, two data files, two adapters and an eval card."""
    out = {}
    for name, text in {"base/config.json": "{}", "sft.jsonl": "a\n", "pref.jsonl": "b\n",
                       "sft_adapter/adapter_config.json": "1", "dpo_adapter/adapter_config.json": "2",
                       "card.json": "{}"}.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        out[name.split("/")[0]] = p if "/" not in name else p.parent
    return out


def chain(lin: Lineage, f: dict) -> dict:
    """base + sft data → sft run → adapter; + pref data → dpo run → adapter 2 → eval → card."""
    ids = {"base": lin.add_artifact("model", f["base"]), "sft": lin.add_artifact("dataset", f["sft.jsonl"]),
           "pref": lin.add_artifact("dataset", f["pref.jsonl"]),
           "a1": lin.add_artifact("adapter", f["sft_adapter"]),
           "a2": lin.add_artifact("adapter", f["dpo_adapter"]),
           "card": lin.add_artifact("eval_card", f["card.json"])}
    lin.record_run("sft-1", inputs=[ids["base"], ids["sft"]], outputs=[ids["a1"]], stage="sft", status="done")
    lin.record_run("dpo-1", inputs=[ids["a1"], ids["pref"]], outputs=[ids["a2"]], stage="dpo", status="done")
    lin.record_run("eval-1", inputs=[ids["a2"]], outputs=[ids["card"]], stage="eval")
    return ids


def test_store_is_wal_with_foreign_keys(tmp_path):
    with Lineage(tmp_path / "reg.sqlite") as lin:
        assert lin.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert lin.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert lin.check() == []
    with pytest.raises(LineageError, match="no registry at"):
        Lineage(tmp_path / "none.sqlite", create=False)


def test_artifacts_are_content_addressed(tmp_path):
    f = files(tmp_path)
    with Lineage(tmp_path / "reg.sqlite", cache=HashCache()) as lin:
        a = lin.add_artifact("dataset", f["sft.jsonl"])
        assert a.startswith("dataset:") and lin.add_artifact("dataset", f["sft.jsonl"]) == a
        assert lin.artifact(str(f["sft.jsonl"]))["id"] == a  # found by path too
        assert lin.add_artifact("model", id="model:org/m@r1", meta={"hub_id": "org/m"}) == "model:org/m@r1"
        with pytest.raises(LineageError, match="exists as a model"):
            lin.add_artifact("adapter", id="model:org/m@r1", hash="ff")
        with pytest.raises(LineageError, match="unknown artifact kind"):
            lin.add_artifact("weights", f["sft.jsonl"])
        with pytest.raises(LineageError, match="no artifact 'nope'"):
            lin.artifact("nope")


def test_lineage_walks_back_to_base_model_and_data(tmp_path):
    f = files(tmp_path)
    with Lineage(tmp_path / "reg.sqlite", cache=HashCache()) as lin:
        ids = chain(lin, f)
        graph = lin.lineage(ids["card"])
        assert set(graph.nodes) == {*ids.values(), "sft-1", "dpo-1", "eval-1"}
        assert sorted(graph.sources()) == sorted([ids["base"], ids["sft"], ids["pref"]])
        edges = {(e["source"], e["target"], e["direction"]) for e in graph.edges}
        assert (ids["a1"], "dpo-1", "input") in edges and ("sft-1", ids["a1"], "output") in edges
        assert len(edges) == len(graph.edges) == 8
        text = graph.to_text()
        lines = text.splitlines()
        assert lines[0].startswith(ids["card"]) and lines[1] == "└─ run eval-1 (eval)"
        assert "run sft-1 (sft, done)" in text and f"{ids['base']}  {f['base']}" in text
        assert len(lines) == 9 and sum(line.startswith("         │     ") for line in lines) == 2
        d = graph.to_dict()
        assert d["root"] == ids["card"] and len(d["nodes"]) == 9
        # The lineage of the first adapter stops at its own run's inputs.
        assert set(lin.lineage(ids["a1"]).nodes) == {ids["a1"], "sft-1", ids["base"], ids["sft"]}
        run = lin.run("dpo-1")
        assert run["inputs"] == sorted([ids["a1"], ids["pref"]]) and run["outputs"] == [ids["a2"]]
        lin.set_status("eval-1", "done")
        assert [r["status"] for r in lin.runs()] == ["done", "done", "done"]


def test_a_shared_ancestor_is_printed_once(tmp_path):
    f = files(tmp_path)
    with Lineage(tmp_path / "reg.sqlite", cache=HashCache()) as lin:
        base = lin.add_artifact("model", f["base"])
        a1 = lin.add_artifact("adapter", f["sft_adapter"])
        a2 = lin.add_artifact("adapter", f["dpo_adapter"])
        lin.record_run("sft", inputs=[base], outputs=[a1])
        lin.record_run("merge", inputs=[a1, base], outputs=[a2])
        text = lin.lineage(a2).to_text()
        assert text.count(base) == 2 and text.count("(above)") == 1


def test_a_bad_edge_writes_nothing(tmp_path):
    f = files(tmp_path)
    with Lineage(tmp_path / "reg.sqlite", cache=HashCache()) as lin:
        data = lin.add_artifact("dataset", f["sft.jsonl"])
        with pytest.raises(LineageError, match="no artifact 'adapter:missing'"):
            lin.record_run("r1", inputs=[data], outputs=["adapter:missing"])
        assert lin.runs() == [] and lin.conn.execute("SELECT COUNT(*) FROM edges").fetchone()[0] == 0
        with pytest.raises(LineageError, match="no run"):
            lin.set_status("r1", "done")


def test_record_manifest_adds_the_model_and_data_as_inputs(tmp_path):
    f = files(tmp_path)
    m = build_manifest("sft", {"model": "org/tiny", "seed": 0}, revision="r9",
                       data=[f["sft.jsonl"], "hub_set"], machine={}, git={}, cache=HashCache())
    with Lineage(tmp_path / "reg.sqlite", cache=HashCache()) as lin:
        out = lin.add_artifact("adapter", f["sft_adapter"])
        assert lin.record_manifest(m, path=tmp_path, outputs=[out], status="done") == m.run_id
        run = lin.run(m.run_id)
        assert run["manifest_hash"] == m.hash() and run["stage"] == "sft" and run["meta"] == {"preset": ""}
        assert "model:org/tiny@r9" in run["inputs"] and "dataset:hub_set" in run["inputs"]
        assert len(run["inputs"]) == 3 and run["outputs"] == [out]
        assert lin.check() == []
