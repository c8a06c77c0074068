"""The report of a real run: `maillab bench` on a tiny profile (once), then `maillab report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reports.build import CHART_DIR
from reports.cli import report
from tests.conftest import TinyRun
from tests.test_bench import LATENCY_MS
from tests.test_report import (
    assert_sections,
    assert_valid_charts,
    embedded_images,
    external_urls,
)
from tests.test_report_browser import assert_renders_cleanly

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny-run")]

# One load: the charts against load are skipped with a note.
DRAWN = ("register_vs_latency", "inp_proxy", "time_to_inbox_cdf", "register_over_time",
         "delivery", "resources")


@pytest.fixture(scope="module")
def tiny_report(tiny_run: TinyRun) -> tuple[Path, str]:
    result = CliRunner().invoke(report, [str(tiny_run.run_dir)])
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path == tiny_run.run_dir / "report.html"
    return path, path.read_text(encoding="utf-8")


def test_real_run_report_has_every_chart_and_section(tiny_run: TinyRun,
                                                     tiny_report: tuple[Path, str]) -> None:
    _, html = tiny_report
    assert_valid_charts(tiny_run.run_dir, DRAWN)
    assert not (tiny_run.run_dir / CHART_DIR / "throughput_vs_load.png").exists()
    assert "runs one load (10 sign-ups/s)" in html
    assert_sections(html)
    assert len(embedded_images(html)) == len(DRAWN)
    assert external_urls(html) == []
    assert "This run was cut short" not in html and "did not run" not in html


def test_real_run_numbers_are_the_runs(tiny_run: TinyRun,
                                       tiny_report: tuple[Path, str]) -> None:
    from reports.summary import fmt_ms

    _, html = tiny_report
    document = json.loads((tiny_run.run_dir / "results.json").read_text())
    verdict = html[html.index('id="verdict"'):html.index('id="claims"')]
    for cell in document["cells"]:
        assert fmt_ms(cell["register"]["p50_ms"]) in verdict
    claims = html[html.index('id="claims"'):html.index('id="charts"')]
    # The tiny profile runs neither 500 ms nor 5 s: both claims say so instead of a number.
    assert LATENCY_MS not in (500, 5000)
    assert claims.count("no such cell in this run") == 6
    assert "no sync measurement at 5000 ms" in claims
    assert "no sync measurement at 500 ms" in claims
    assert document["environment"]["git_sha"] is None or (
        document["environment"]["git_sha"] in html)


def test_real_run_report_renders_in_chromium(tiny_report: tuple[Path, str],
                                             tmp_path: Path) -> None:
    assert_renders_cleanly(tiny_report[0])
