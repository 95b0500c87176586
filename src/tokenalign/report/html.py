"""A small builder for self-contained HTML reports (tables, heatmaps, figures)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenalign.report.heatmap import HeatmapExample, page, render_heatmaps
from tokenalign.utils.io import atomic_write_text

__all__ = ["Report"]


class Report:
    """Collect sections, then ``write(path)`` one HTML file with everything inlined."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.sections: list[str] = []

    def add_heading(self, text: str) -> "Report":
        self.sections.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def add_text(self, text: str, muted: bool = False) -> "Report":
        cls = " class='muted'" if muted else ""
        self.sections.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def add_table(self, rows: Sequence[dict[str, Any]], title: str = "") -> "Report":
        if title:
            self.sections.append(f"<h3>{html.escape(title)}</h3>")
        if not rows:
            self.sections.append("<p class='muted'>(empty)</p>")
            return self
        cols = list(rows[0].keys())
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
        )
        self.sections.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def add_heatmaps(self, examples: Sequence[HeatmapExample], title: str = "", **kwargs: Any) -> "Report":
        if title:
            self.sections.append(f"<h3>{html.escape(title)}</h3>")
        self.sections.append(render_heatmaps(examples, **kwargs))
        return self

    def add_image_png(self, data: bytes, alt: str = "") -> "Report":
        b64 = base64.b64encode(data).decode("ascii")
        self.sections.append(f"<img alt='{html.escape(alt, quote=True)}' style='max-width:100%' src='data:image/png;base64,{b64}'>")
        return self

    def add_figure(self, figure: Any, title: str = "") -> "Report":
        """Embed a matplotlib figure as a PNG."""
        if title:
            self.sections.append(f"<h3>{html.escape(title)}</h3>")
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return self.add_image_png(buf.getvalue(), alt=title)

    def render(self) -> str:
        return page(self.title, "".join(self.sections))

    def write(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.render())


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
