"""Rendered reports (PNG) of generated volumes against their training images."""

from microforge.report.png import render_report_png, render_statistics_png

__all__ = ["render_report_png", "render_statistics_png"]
