"""Self-contained HTML reports: token heatmaps, tables, figures."""

from tokenalign.report.heatmap import HeatmapExample, render_heatmaps, write_heatmap
from tokenalign.report.html import Report

__all__ = ["HeatmapExample", "Report", "render_heatmaps", "write_heatmap"]
