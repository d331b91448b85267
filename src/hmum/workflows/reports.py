"""Markdown formatting shared by the reports (train/evaluate, DDM, demo), and the
self-contained HTML page made from a Markdown report (``write_html_report``).

Its own module so that every workflow can use it without importing another
workflow (``hmum.workflows.train`` and ``hmum.workflows.ddm`` import each other otherwise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A DataFrame as a GitHub Markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float | np.floating) else str(v)
                 for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the self-contained HTML report (beside report.md)
# --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1,h2,h3,h4{line-height:1.2;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.86em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5em 0}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
.missing{color:#a00}
"""


def _inline(text: str) -> str:
    """Escaped text with the Markdown inline marks the reports use: `code` and **bold**."""
    import html
    import re

    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _image_tag(alt: str, target: str, base: Path) -> str:
    import base64
    import html

    p = Path(target)
    p = p if p.is_absolute() else base / p
    if not p.is_file() or p.suffix.lower() != ".png":
        return f'<p class="missing">[image {html.escape(alt)}: {html.escape(target)} not found]</p>'
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{data}"></figure>')


def _table_html(rows: list[str]) -> str:
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    head, body = cells(rows[0]), [cells(r) for r in rows[2:]]
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
           + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join([*out, "</tbody>", "</table>"])


def markdown_to_html(markdown: str, base_dir: str | Path, *, title: str = "hmum report") -> str:
    """A self-contained HTML page from the Markdown the reports write.

    Handles what the reports use: ``#`` headings, pipe tables, ``![alt](file.png)``
    images (read from ``base_dir`` and embedded as base64 PNG), ``- `` lists and
    paragraphs. No external resource: no stylesheet, script or image link.
    """
    import html
    import re

    base = Path(base_dir)
    lines = markdown.splitlines()
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    i = 0
    image = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$")
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            flush()
        elif line.startswith("#"):
            flush()
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and \
                re.match(r"^\s*\|[\s:|-]+\|?\s*$", lines[i + 1]):
            flush()
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out.append(_table_html(rows))
            continue
        elif image.match(line):
            flush()
            alt, target = image.match(line).groups()
            out.append(_image_tag(alt, target.strip(), base))
        elif line.lstrip().startswith(("- ", "* ")):
            if para:
                flush()
            items.append(line.lstrip()[2:])
        else:
            para.append(line.strip())
        i += 1
    flush()
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(out) + "\n</body>\n</html>\n")


def write_html_report(markdown_path: str | Path, html_path: str | Path | None = None, *,
                      title: str | None = None) -> Path:
    """``report.html`` beside ``markdown_path`` (its images embedded; ``markdown_to_html``).

    The title defaults to the report's first heading. Returns the path written.
    """
    md_path = Path(markdown_path)
    text = md_path.read_text()
    if title is None:
        first = next((ln for ln in text.splitlines() if ln.startswith("# ")), "# hmum report")
        title = first[2:].strip()
    out = Path(html_path) if html_path is not None else md_path.with_suffix(".html")
    out.write_text(markdown_to_html(text, md_path.parent, title=title))
    return out
