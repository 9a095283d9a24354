"""The shareable report: one self-contained HTML file from a saved comparison (`write_report`)."""

from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
