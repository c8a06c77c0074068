"""report.html: the one Jinja template filled from a :class:`Run` and its charts.

The page is self-contained: chart PNGs are embedded as data URIs and the CSS is inline, so it
opens from disk and asks no other host for anything.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from reports import summary
from reports.data import ReportRun
from reports.figures import Chart
from reports.history_charts import HistoryView

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html"


def write_html(run: ReportRun, charts: Sequence[Chart], path: Path,
               history: HistoryView | None = None,
               history_charts: Sequence[Chart] = ()) -> Path:
    """Render the report for ``run`` with ``charts`` (and its history's) to ``path`` (parent
    folder created)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["ms"] = summary.fmt_ms
    env.filters["count"] = summary.fmt_count
    env.filters["rate"] = summary.fmt_rate
    env.filters["number"] = summary.fmt_number
    rows = summary.verdict_rows(run)
    html = env.get_template(TEMPLATE).render(
        run=run,
        doc=run.results,
        headlines=summary.headlines(run, rows),
        columns=summary.VERDICT_COLUMNS,
        verdict=rows,
        variant_lines=summary.variant_lines(run),
        focus_load=run.focus_load,
        claims=summary.claim_checks(run),
        inp_claim=summary.INP_CLAIM,
        inp_checks=summary.inp_checks(run),
        losses=(losses := summary.loss_rows(run)),
        documented_cells=any(c.documented for row in losses for c in row.cells.values()),
        smtp_modes=summary.smtp_mode_rows(run),
        browser=summary.browser_rows(run),
        calibration=summary.calibration_line(run),
        charts=[(chart, _data_uri(chart.png)) for chart in charts],
        cells=summary.cell_rows(run),
        environment=summary.environment(run),
        warnings=summary.warnings(run),
        gate=run.gate,
        gate_error=run.gate_error,
        gate_rules=summary.gate_rules(run.gate) if run.gate else [],
        history=history,
        history_checks=summary.history_rows(run.gate),
        history_charts=[(chart, _data_uri(chart.png)) for chart in history_charts],
        svg_href=lambda chart: chart.svg.relative_to(path.parent).as_posix()
        if chart.svg and chart.svg.is_relative_to(path.parent) else None,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def _data_uri(png: Path | None) -> str | None:
    if png is None:
        return None
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
