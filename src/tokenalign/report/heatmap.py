"""Token heatmaps: colour each token of a text by its score, as self-contained HTML.

No network assets, no JavaScript: inline CSS only. Hovering a token shows its value (and
an optional note, e.g. the pycodestyle code). Whitespace and newlines are preserved (code
looks like code). Colours: ``diverging`` (red below the centre, green above; for rewards)
or ``sequential`` (transparent to red; for blame in [0, 1]). The text colour of a cell is
picked from the background's luminance, so the page reads on light and dark themes.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tokenalign.utils.io import atomic_write_text

__all__ = ["HeatmapExample", "render_heatmaps", "write_heatmap", "PAGE_CSS"]

Scale = Literal["diverging", "sequential"]

PAGE_CSS = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1b1b1b; --muted: #666; --card: #f6f7f9; --border: #d9dce1; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #15171a; --fg: #e6e6e6; --muted: #9aa0a6; --card: #1f2226; --border: #33373d; }
}
body { background: var(--bg); color: var(--fg); font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1, h2, h3 { font-weight: 600; } .muted { color: var(--muted); }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; } th, td { border: 1px solid var(--border); padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.hm-example { background: var(--card); border: 1px solid var(--border); border-radius: 6px; margin: 0.8rem 0; padding: 0.6rem 0.8rem; }
.hm-title { font-weight: 600; } .hm-meta { color: var(--muted); font-size: 0.85em; }
.hm-text { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-all; margin: 0.4rem 0 0; }
.hm-prompt { color: var(--muted); }
.hm-tok { border-radius: 2px; }
.hm-tok:hover { outline: 1px solid var(--fg); }
.hm-legend { display: flex; align-items: center; gap: 0.5rem; font-size: 0.85em; color: var(--muted); }
.hm-bar { width: 220px; height: 12px; border: 1px solid var(--border); border-radius: 2px; }
"""


@dataclasses.dataclass
class HeatmapExample:
    """A text, the character span of each token, and one score per token."""

    text: str
    spans: Sequence[tuple[int, int]]
    scores: Sequence[float]
    title: str = ""
    prompt: str = ""  # shown greyed before the text, uncoloured
    notes: Sequence[str] | None = None
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.spans) != len(self.scores):
            raise ValueError(f"{len(self.spans)} token spans but {len(self.scores)} scores")
        if self.notes is not None and len(self.notes) != len(self.scores):
            raise ValueError(f"{len(self.notes)} notes but {len(self.scores)} scores")


def _rgba(value: float, scale: Scale, vmin: float, vmax: float, center: float) -> tuple[int, int, int, float] | None:
    if value is None or not math.isfinite(value):
        return None
    if scale == "sequential":
        t = 0.0 if vmax == vmin else min(max((value - vmin) / (vmax - vmin), 0.0), 1.0)
        return (220, 38, 38, 0.85 * t)
    if value >= center:
        t = 0.0 if vmax == center else min((value - center) / (vmax - center), 1.0)
        return (22, 163, 74, 0.85 * t)
    t = 0.0 if vmin == center else min((center - value) / (center - vmin), 1.0)
    return (220, 38, 38, 0.85 * t)


def _text_colour(rgba: tuple[int, int, int, float]) -> str | None:
    r, g, b, a = rgba
    if a < 0.45:
        return None  # mostly transparent: the page's own text colour reads fine
    luminance = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
    return "#000" if luminance > 0.5 else "#fff"


def _range(examples: Sequence[HeatmapExample], scale: Scale, vmin: float | None, vmax: float | None, center: float) -> tuple[float, float]:
    finite = [float(s) for ex in examples for s in ex.scores if s is not None and math.isfinite(s)]
    if scale == "sequential":
        return (vmin if vmin is not None else min(finite, default=0.0), vmax if vmax is not None else max(finite, default=1.0))
    spread = max((abs(s - center) for s in finite), default=1.0) or 1.0
    return (vmin if vmin is not None else center - spread, vmax if vmax is not None else center + spread)


def _legend(scale: Scale, vmin: float, vmax: float, center: float, label: str) -> str:
    if scale == "sequential":
        gradient = "linear-gradient(to right, rgba(220,38,38,0), rgba(220,38,38,0.85))"
        ticks = f"{vmin:.3g}</span><div class='hm-bar' style='background:{gradient}'></div><span>{vmax:.3g}"
    else:
        gradient = "linear-gradient(to right, rgba(220,38,38,0.85), rgba(220,38,38,0) 50%, rgba(22,163,74,0) 50%, rgba(22,163,74,0.85))"
        ticks = f"{vmin:.3g}</span><div class='hm-bar' style='background:{gradient}'></div><span>{vmax:.3g} (centre {center:.3g})"
    return f"<div class='hm-legend'><span>{html.escape(label)}</span><span>{ticks}</span></div>"


def render_heatmaps(
    examples: Sequence[HeatmapExample],
    *,
    scale: Scale = "diverging",
    vmin: float | None = None,
    vmax: float | None = None,
    center: float = 0.0,
    label: str = "score",
) -> str:
    """An HTML fragment: a legend and one card per example (all text escaped)."""
    lo, hi = _range(examples, scale, vmin, vmax, center)
    parts = [_legend(scale, lo, hi, center, label)]
    for ex in examples:
        parts.append("<div class='hm-example'>")
        if ex.title:
            parts.append(f"<div class='hm-title'>{html.escape(ex.title)}</div>")
        if ex.meta:
            meta = " · ".join(f"{html.escape(str(k))}: {html.escape(_fmt(v))}" for k, v in ex.meta.items())
            parts.append(f"<div class='hm-meta'>{meta}</div>")
        parts.append("<pre class='hm-text'>")
        if ex.prompt:
            parts.append(f"<span class='hm-prompt' title='prompt'>{html.escape(ex.prompt)}</span>")
        cursor = 0
        order = sorted(range(len(ex.spans)), key=lambda i: ex.spans[i][0])
        for i in order:
            start, end = ex.spans[i]
            start = max(start, cursor)
            if end <= start:
                continue
            if start > cursor:
                parts.append(html.escape(ex.text[cursor:start]))
            value = ex.scores[i]
            rgba = _rgba(value, scale, lo, hi, center)
            shown = "n/a" if rgba is None else f"{value:.4g}"
            note = f" {ex.notes[i]}" if ex.notes is not None and ex.notes[i] else ""
            style = ""
            if rgba is not None:
                style = f"background:rgba({rgba[0]},{rgba[1]},{rgba[2]},{rgba[3]:.3f});"
                colour = _text_colour(rgba)
                if colour:
                    style += f"color:{colour};"
            parts.append(
                f"<span class='hm-tok' style='{style}' title='{html.escape(shown + note, quote=True)}' "
                f"data-score='{shown}'>{html.escape(ex.text[start:end])}</span>"
            )
            cursor = end
        if cursor < len(ex.text):
            parts.append(html.escape(ex.text[cursor:]))
        parts.append("</pre></div>")
    return "".join(parts)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def page(title: str, body: str) -> str:
    """A whole self-contained HTML page around ``body``."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{PAGE_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def write_heatmap(path: str | Path, examples: Sequence[HeatmapExample], title: str = "Token heatmap", **kwargs: Any) -> Path:
    """Write a page of heatmaps atomically; ``kwargs`` go to :func:`render_heatmaps`."""
    return atomic_write_text(path, page(title, render_heatmaps(examples, **kwargs)))
