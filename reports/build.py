"""``build_report(run_dir)``: every chart, then report.html, from a run directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reports import charts, history_charts, sample_charts
from reports.data import ReportRun, load_report_run
from reports.figures import Chart
from reports.html import write_html

CHART_DIR = "charts"
REPORT = "report.html"

# Page order: what the user waits for, what it costs, whether email is lost, what it spends.
CHARTS: tuple[Callable[[ReportRun, Path], Chart], ...] = (
    charts.register_vs_latency,
    charts.inp_proxy_bands,
    sample_charts.inbox_cdf,
    charts.throughput_vs_load,
    charts.latency_vs_load,
    sample_charts.response_over_time,
    charts.delivery,
    charts.resources,
)


def build_report(run_dir: Path, history_dir: Path | None = None) -> Path:
    """Write ``run_dir/charts/*.png|svg`` and ``run_dir/report.html``; return the report path.

    Reads only results.json, gate.json when present, the cells' kept samples and the history
    of runs in ``history_dir`` (None: the one the gate judged the run against, if it did).
    Raises :class:`reports.ReportError` naming the file when results.json is missing or
    invalid.
    """
    run_dir = Path(run_dir)
    run = load_report_run(run_dir)
    drawn = [draw(run, run_dir / CHART_DIR) for draw in CHARTS]
    history = history_charts.history_of(run, history_dir)
    return write_html(run, drawn, run_dir / REPORT, history,
                      history_charts.history_charts(run, history, run_dir / CHART_DIR))
