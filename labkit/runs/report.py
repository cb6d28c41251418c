"""Self-contained offline HTML reports (sections, plotly figures, tables, generations)
for `labkit tour` and runs.

The file embeds plotly.js once in the head when it has a figure and loads nothing from the network,
so it opens on an offline machine and can be mailed or attached to an issue as a single file.
"""

from __future__ import annotations

import html
import numbers
import re
from datetime import datetime
from pathlib import Path
from typing import Any

_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg-soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
  font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 64px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 16px; }
h1 { font-size: 1.8em; margin: 0 0 4px; }
h2 { font-size: 1.35em; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.created, .caption, .meta { color: var(--muted); font-size: 0.9em; }
.meta { margin: 4px 0 12px; }
.meta span { margin-right: 16px; white-space: nowrap; }
nav.toc { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px; }
nav.toc ol { margin: 4px 0; padding-left: 20px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em;
  background: var(--bg-soft); padding: 1px 4px; border-radius: 4px; }
figure { margin: 16px 0; }
figcaption, .caption { margin-top: 4px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.92em; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
.gen { border: 1px solid var(--line); border-radius: 6px; margin: 12px 0; padding: 8px 12px; }
.gen .label { color: var(--muted); font-size: 0.8em; text-transform: uppercase; letter-spacing: 0.04em; }
.gen pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0 8px; padding: 6px 8px;
  background: var(--bg-soft); border-radius: 4px; \
font: 0.88em/1.45 ui-monospace, Menlo, Consolas, monospace; }
"""


def format_value(value: Any) -> str:
    """A cell's text: reals that are not integers to 4 significant digits, None as empty, else str()."""
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.4g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _inline_markdown(escaped: str) -> str:
    """`code`, **bold** and *italic* on text that is already HTML-escaped."""
    parts = re.split(r"(`[^`]+`)", escaped)  # no emphasis inside code spans
    for i, part in enumerate(parts):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            parts[i] = f"<code>{part[1:-1]}</code>"
        else:
            part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
            parts[i] = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
    return "".join(parts)


def markdown_to_html(text: str) -> str:
    """Simple markdown: blank-line paragraphs, ``- `` bullet lists,
    inline code/bold/italic. Escapes all HTML."""
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(line.startswith(("- ", "* ")) for line in lines):
            items = "".join(f"<li>{_inline_markdown(html.escape(line[2:]))}</li>" for line in lines)
            blocks.append(f"<ul>{items}</ul>")
        else:
            blocks.append(f"<p>{_inline_markdown(html.escape(' '.join(lines)))}</p>")
    return "\n".join(blocks)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, so a run summary with ``last_eval: {...}`` fits a flat table."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class Report:
    """An HTML report built piece by piece, written as one self-contained file by :meth:`save`.

    >>> r = Report("SFT tour", meta={"device": "cpu"})
    >>> r.section("Loss", "The loss falls over **4** steps.")
    >>> r.figure(fig, caption="training loss")
    >>> r.save("runs/tour/report.html")
    """

    def __init__(self, title: str, meta: dict[str, Any] | None = None):
        self.title = title
        self.meta = dict(meta or {})
        self.created = datetime.now().astimezone()
        self._body: list[str] = []
        self._sections: list[tuple[str, str]] = []  # (anchor id, title) for the table of contents
        self._has_figures = False

    def section(self, title: str, text: str = "") -> Report:
        """Start a section (listed in the table of contents),
        with optional markdown text under its heading."""
        anchor = f"s{len(self._sections) + 1}-" + (
            re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
        )
        self._sections.append((anchor, title))
        self._body.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        if text:
            self._body.append(markdown_to_html(text))
        return self

    def text(self, text: str) -> Report:
        """Markdown paragraphs in the current section."""
        self._body.append(markdown_to_html(text))
        return self

    def figure(self, fig: Any, caption: str = "") -> Report:
        """A plotly figure; plotly.js itself is embedded once for the whole file."""
        height = fig.layout.height or 450  # a percentage height collapses inside an unsized div
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            default_width="100%",
            default_height=f"{height}px",
            config={"displaylogo": False, "responsive": True},
        )
        self._has_figures = True
        self._body.append(f"<figure>{div}{self._caption(caption, 'figcaption')}</figure>")
        return self

    def table(self, rows: list[dict], caption: str = "") -> Report:
        """A table whose columns are the rows' keys in first-seen order; values escaped,
        floats to 4 digits."""
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(map(str, row)))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = ""
        for row in rows:
            cells = {str(k): v for k, v in row.items()}
            body += "<tr>" + "".join(self._cell(cells.get(c)) for c in columns) + "</tr>"
        table = (
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            if rows
            else "<p>(no rows)</p>"
        )
        self._body.append(f'<div class="scroll">{table}</div>{self._caption(caption)}')
        return self

    def generations(self, items: list[dict], caption: str = "") -> Report:
        """Model generations as pre-wrapped text: ``prompt`` and ``output`` first, then any other fields."""
        cards = []
        for item in items:
            keys = [k for k in ("prompt", "output") if k in item] + [
                k for k in item if k not in ("prompt", "output")
            ]
            fields = "".join(
                f'<div class="label">{html.escape(str(k))}</div>'
                f'<pre>{html.escape(format_value(item[k]))}</pre>'
                for k in keys
            )
            cards.append(f'<div class="gen">{fields}</div>')
        self._body.append("".join(cards) + self._caption(caption))
        return self

    def metrics(self, d: dict[str, Any], caption: str = "") -> Report:
        """A two-column key/value table; nested dicts appear as dotted keys."""
        rows = "".join(
            f"<tr><th>{html.escape(str(k))}</th>{self._cell(v)}</tr>" for k, v in _flatten(d).items()
        )
        self._body.append(f"<table><tbody>{rows}</tbody></table>{self._caption(caption)}")
        return self

    def html(self, raw: str) -> Report:
        """Trusted HTML, inserted as is (never pass it text from a model or a dataset)."""
        self._body.append(raw)
        return self

    @staticmethod
    def _cell(value: Any) -> str:
        css = ' class="num"' if _is_number(value) else ""
        return f"<td{css}>{html.escape(format_value(value))}</td>"

    @staticmethod
    def _caption(caption: str, tag: str = "div") -> str:
        return f'<{tag} class="caption">{html.escape(caption)}</{tag}>' if caption else ""

    def render(self) -> str:
        """The whole document as a string."""
        plotly_js = ""
        if self._has_figures:
            from plotly.offline import get_plotlyjs

            plotly_js = f'<script type="text/javascript">{get_plotlyjs()}</script>'
        meta = "".join(
            f"<span><b>{html.escape(str(k))}</b>: {html.escape(format_value(v))}</span>"
            for k, v in self.meta.items()
        )
        toc = ""
        if self._sections:
            links = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in self._sections)
            toc = f'<nav class="toc"><b>Contents</b><ol>{links}</ol></nav>'
        created = self.created.strftime("%Y-%m-%d %H:%M:%S %Z")
        body = "\n".join(self._body)
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(self.title)}</title>
<style>{_CSS}</style>
{plotly_js}
</head>
<body>
<main>
<header>
<h1>{html.escape(self.title)}</h1>
<div class="created">Created {html.escape(created)}</div>
{f'<div class="meta">{meta}</div>' if meta else ""}
</header>
{toc}
{body}
</main>
</body>
</html>
"""

    def save(self, path: str | Path) -> Path:
        """Write the report to ``path`` atomically (temp file, then rename) and return the path.

        A reader never sees a half-written report, and an earlier report at ``path`` is replaced whole.
        """
        from labkit.data.io import write_text_atomic

        return write_text_atomic(path, self.render())
