"""Tests for labkit.runs.report: escaping, one offline plotly.js, atomic saves, number formatting."""

from __future__ import annotations

import os
import re

import plotly.graph_objects as go
import pytest

from labkit.runs.report import Report, format_value, markdown_to_html

PLOTLY_MARKER = "plotly.js v"  # the banner comment at the top of the bundled plotly.js


def _figure(n: int) -> go.Figure:
    return go.Figure(go.Scatter(x=[1, 2, 3], y=[n, n + 1, n * 2], name=f"run {n}"))


def test_model_text_is_escaped_everywhere():
    evil = "<script>alert('x')</script>"
    r = Report(f"title {evil}", meta={"device": evil})
    r.section(f"section {evil}", f"text {evil}")
    r.generations([{"prompt": f"say {evil}", "output": evil, "reward": 0.5}], caption=evil)
    r.table([{"col": evil, evil: 1}], caption=evil)
    r.metrics({"k": evil})
    page = r.render()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    # title (head, h1), meta, toc, h2, text, prompt, output, gen caption, table cell, header, caption, metrics
    assert page.count("&lt;script&gt;alert") == 13


def test_one_plotly_js_for_three_figures_and_no_remote_scripts(tmp_path):
    r = Report("figs")
    for n in range(3):
        r.section(f"figure {n}").figure(_figure(n), caption=f"caption {n}")
    page = r.save(tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.count(PLOTLY_MARKER) == 1
    assert page.count("Plotly.newPlot(") == 3
    assert page.index(PLOTLY_MARKER) < page.index("Plotly.newPlot(")
    sources = re.findall(r"<script[^>]*\bsrc\s*=", page, flags=re.IGNORECASE)
    assert sources == []
    assert not re.search(r"""<(?:script|link)[^>]+(?:src|href)\s*=\s*["']?(?:https?:)?//""", page, re.I)


def test_no_plotly_js_without_figures():
    page = Report("plain").section("a", "b").render()
    assert PLOTLY_MARKER not in page
    assert len(page) < 20_000


def test_header_toc_and_sections():
    r = Report("Tour", meta={"device": "cpu", "torch": "2.13.0"})
    r.section("Data", "first para\n\nsecond `code` and **bold**\n\n- one\n- two")
    r.section("Data")  # same title twice still gets distinct anchors
    page = r.render()
    assert "<h1>Tour</h1>" in page and "Created " in page
    assert "<b>device</b>: cpu" in page and "<b>torch</b>: 2.13.0" in page
    anchors = re.findall(r'<h2 id="([^"]+)">', page)
    assert len(anchors) == 2 and len(set(anchors)) == 2
    for anchor in anchors:
        assert f'href="#{anchor}"' in page
    assert "<p>first para</p>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert "<ul><li>one</li><li>two</li></ul>" in page


def test_markdown_escapes_before_formatting():
    assert markdown_to_html("a <b>x</b> `<i>`") == "<p>a &lt;b&gt;x&lt;/b&gt; <code>&lt;i&gt;</code></p>"
    assert markdown_to_html("2 * 3 * 4 and *this*") == "<p>2 * 3 * 4 and <em>this</em></p>"


def test_table_formats_floats_and_fills_missing_cells():
    r = Report("t")
    r.table([{"name": "dpo", "loss": 0.693147, "steps": 100}, {"name": "ipo", "acc": 1234567.0, "ok": True}])
    page = r.render()
    assert "<th>name</th><th>loss</th><th>steps</th><th>acc</th><th>ok</th>" in page
    assert '<td class="num">0.6931</td>' in page
    assert '<td class="num">100</td>' in page
    assert '<td class="num">1.235e+06</td>' in page
    assert "<td>True</td>" in page
    assert "0.693147" not in page
    assert page.count("<td></td>") == 4  # each row lacks two of the five columns
    assert format_value(float("nan")) == "nan" and format_value(None) == ""


def test_metrics_flattens_nested_summaries():
    page = Report("m").metrics({"global_step": 4, "last_eval": {"loss": 1.23456}}).render()
    assert "<th>last_eval.loss</th>" in page and "1.235" in page


def test_generations_are_pre_wrapped_in_order():
    page = Report("g").generations([{"reward": 1.0, "output": "B\n  indented", "prompt": "A"}]).render()
    i_prompt, i_output, i_reward = (
        page.index(f'<div class="label">{k}</div>') for k in ("prompt", "output", "reward")
    )
    assert i_prompt < i_output < i_reward
    assert "<pre>B\n  indented</pre>" in page
    assert "white-space: pre-wrap" in page


def test_html_inserts_trusted_snippets_as_is():
    assert '<div id="mine"><b>ok</b></div>' in Report("h").html('<div id="mine"><b>ok</b></div>').render()


def test_save_is_atomic_and_replaces_whole(tmp_path):
    path = tmp_path / "new" / "dir" / "report.html"
    big = Report("first").section("s", "x " * 50_000)
    assert big.save(path) == path
    first_size = path.stat().st_size
    Report("second").save(path)
    page = path.read_text(encoding="utf-8")
    assert "<h1>second</h1>" in page and "first" not in page and path.stat().st_size < first_size
    assert page.rstrip().endswith("</html>")
    assert sorted(os.listdir(path.parent)) == ["report.html"]  # no temp file left behind
    assert path.stat().st_mode & 0o044  # readable by others, not mkstemp's owner-only mode


def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    Report("old").save(path)
    before = path.read_text(encoding="utf-8")

    def broken(self):
        raise RuntimeError("render failed")

    monkeypatch.setattr(Report, "render", broken)
    with pytest.raises(RuntimeError):
        Report("new").save(path)
    assert path.read_text(encoding="utf-8") == before
    assert os.listdir(tmp_path) == ["report.html"]
