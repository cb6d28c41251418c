"""Draw a lineage graph (labkit.runs.lineage.LineageGraph) with plotly: sources on the left, the artifact
asked about on the right, runs as squares between what they read and what they wrote."""

from __future__ import annotations

from typing import Any

COLOURS = {"model": "#4c78a8", "dataset": "#59a14f", "adapter": "#f28e2b", "merged_model": "#76b7b2",
           "eval_card": "#b07aa1", "checkpoint": "#9c755f", "other": "#bab0ac", "run": "#e15759"}


def _depths(graph) -> dict[str, int]:
    """Steps from the root back along the edges (the root is 0): the x position, right to left."""
    parents: dict[str, list[str]] = {}
    for e in graph.edges:
        parents.setdefault(e["target"], []).append(e["source"])
    depth = {graph.root: 0}
    todo = [graph.root]
    while todo:
        node = todo.pop()
        for p in parents.get(node, []):
            if depth.get(p, -1) < depth[node] + 1:  # the longest path: a shared source sits left of all users
                depth[p] = depth[node] + 1
                todo.append(p)
    return depth


def node_label(node: dict[str, Any]) -> str:
    """A short label: a run's stage, or an artifact's kind and the name or path tail that tells it apart."""
    if node["type"] == "run":
        return f"{node.get('stage') or 'run'} run"
    meta = node.get("meta") or {}
    where = meta.get("name") or meta.get("path") or node.get("path") or node["id"].split(":", 1)[-1]
    return f"{node['kind']}: {str(where).rstrip('/').split('/')[-1][:28]}"


def lineage_figure(graph, title: str = "lineage"):
    """A plotly Figure of the graph: one column per step back from the root, hover shows the full id."""
    import plotly.graph_objects as go

    depth = _depths(graph)
    deepest = max(depth.values(), default=0)
    columns: dict[int, list[str]] = {}
    for node in sorted(graph.nodes, key=lambda n: (depth.get(n, 0), n)):
        columns.setdefault(depth.get(node, 0), []).append(node)
    pos = {n: (deepest - d, i - (len(col) - 1) / 2) for d, col in columns.items() for i, n in enumerate(col)}

    fig = go.Figure()
    for e in graph.edges:
        (x0, y0), (x1, y1) = pos[e["source"]], pos[e["target"]]
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1, arrowcolor="#888",
                           standoff=10, startstandoff=10)
    for kind in sorted({("run" if v["type"] == "run" else v["kind"]) for v in graph.nodes.values()}):
        ids = [n for n, v in graph.nodes.items() if ("run" if v["type"] == "run" else v["kind"]) == kind]
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in ids], y=[pos[n][1] for n in ids], mode="markers+text", name=kind,
            marker={"size": 16, "color": COLOURS.get(kind, "#999"),
                    "symbol": "square" if kind == "run" else "circle"},
            text=[node_label(graph.nodes[n]) for n in ids], textposition="top center",
            hovertext=[n for n in ids], hoverinfo="text"))
    fig.update_layout(title=title, height=max(320, 90 * max(len(c) for c in columns.values())),
                      xaxis={"visible": False}, yaxis={"visible": False}, margin={"l": 20, "r": 20, "t": 50,
                                                                                  "b": 20})
    return fig
