"""The lineage drawing: every node placed once, sources on the left, the root on the right, one arrow per
edge."""

from __future__ import annotations

from labkit.dash.lineage import lineage_figure, node_label
from labkit.runs.lineage import Lineage


def test_a_two_link_chain_is_drawn_left_to_right(tmp_path):
    with Lineage(tmp_path / "l.sqlite") as lin:
        base = lin.add_artifact("model", None, hash="a" * 64, meta={"name": "smollm2"})
        data = lin.add_artifact("dataset", None, hash="b" * 64, meta={"path": "data/sft.jsonl"})
        ad1 = lin.add_artifact("adapter", None, hash="c" * 64)
        lin.record_run("sft-1", inputs=[base, data], outputs=[ad1], stage="sft")
        merged = lin.add_artifact("model", None, hash="d" * 64, meta={"name": "merged"})
        lin.record_run("merge-1", inputs=[base, ad1], outputs=[merged], stage="merge")
        ad2 = lin.add_artifact("adapter", None, hash="e" * 64)
        lin.record_run("dpo-1", inputs=[merged, data], outputs=[ad2], stage="preference")
        graph = lin.lineage(ad2)
    fig = lineage_figure(graph)
    xs = {text: x for tr in fig.data for text, x in zip(tr.text, tr.x)}
    assert len(xs) == len(graph.nodes) == 8
    assert xs["adapter: " + ad2.split(":")[1][:28]] == max(xs.values())  # the root, rightmost
    assert xs["model: smollm2"] == 0  # a source, leftmost even though the merge reads it too
    assert xs["preference run"] > xs["model: merged"] > xs["merge run"] > xs["sft run"]
    assert len(fig.layout.annotations) == len(graph.edges)
    assert node_label({"type": "run", "stage": "sft"}) == "sft run"
