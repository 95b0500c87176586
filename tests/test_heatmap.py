"""Token heatmaps and the report builder write self-contained, escaped HTML."""

from __future__ import annotations

import re

import pytest

from tokenalign.report import HeatmapExample, Report, render_heatmaps, write_heatmap


def example(**kw):
    text = "x=1  <script>alert(1)</script>\n"
    spans = [(0, 1), (1, 2), (2, 3), (3, 5), (5, 31)]
    return HeatmapExample(text=text, spans=spans, scores=kw.pop("scores", [0.9, -0.8, 0.0, float("nan"), 0.2]), **kw)


def test_one_span_per_token_with_hover_value_and_escaping():
    out = render_heatmaps([example(notes=["", "E225", "", "", ""], title="t<1>")])
    assert out.count("class='hm-tok'") == 5
    assert "<script>" not in out and "&lt;script&gt;" in out and "t&lt;1&gt;" in out
    assert "title='-0.8 E225'" in out
    assert "data-score='n/a'" in out


def test_colours_differ_for_low_and_high_scores():
    out = render_heatmaps([example()])
    styles = re.findall(r"style='([^']*)'", out)
    green = [s for s in styles if "rgba(22,163,74" in s]
    red = [s for s in styles if "rgba(220,38,38" in s]
    assert green and red


def test_sequential_scale_for_blame():
    out = render_heatmaps([example(scores=[0, 1, 0, 0, 1])], scale="sequential", vmin=0, vmax=1)
    assert "rgba(220,38,38,0.850)" in out and "rgba(22,163,74" not in out.split("</div>", 1)[1]


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="5 token spans but 2 scores"):
        example(scores=[1.0, 2.0])


def test_page_is_self_contained(tmp_path):
    path = write_heatmap(tmp_path / "h.html", [example(), example(prompt="def f():\n")], title="demo")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "prefers-color-scheme: dark" in text
    assert not re.search(r"(src|href)=['\"]https?://", text)
    assert text.count("class='hm-example'") == 2


def test_report_with_table_heatmap_and_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report = Report("run").add_text("hello").add_table([{"metric": "a", "value": 0.5}], title="t")
    report.add_heatmaps([example()], title="h").add_figure(fig, title="curve")
    text = report.write(tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in text and "<td>0.5</td>" in text and "hm-example" in text
