"""The report from a hand-built run (tests/report_fixtures): charts, sections, notes, errors.

The fixture is a run stopped before its last cell (queued @ 500 ms x 4 users), with a lost
email, a duplicate, an invalid cell and a failing gate.json; samples are generated here from a
seed, so the fixture folder stays text.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loadtests.cellfiles import CellKey, Load, Sample
from loadtests.results import load_run, parse_results, write_results
from loadtests.summary import calibrate
from reports import ReportError, build_report
from reports.build import CHART_DIR
from reports.cli import report
from reports.data import ReportRun
from tests.runs import record_cell

FIXTURES = Path(__file__).resolve().parent / "report_fixtures"
ALL_CHARTS = ("register_vs_latency", "inp_proxy", "time_to_inbox_cdf", "throughput_vs_load",
              "latency_vs_load", "register_over_time", "delivery", "resources")
AGAINST_LOAD = ("throughput_vs_load", "latency_vs_load")
SECTIONS = ("verdict", "losses", "claims", "charts", "cells", "environment", "warnings")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# src=, href=, url( or @import pointing at another host (scheme-relative included).
EXTERNAL = re.compile(r"""(?:\b(?:src|href|srcset|action|poster)\s*=\s*["']?|url\(\s*["']?|"""
                      r"""@import\s+["']?)\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.IGNORECASE)


# -- helpers shared with the other test_report* modules ------------------------------------------

def write_document(run_dir: Path, document: dict[str, Any]) -> Path:
    """``run_dir`` with ``document`` as its results.json (a fixture run edited in a test)."""
    run_dir.mkdir(exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(document))
    return run_dir


def write_samples(run_dir: Path, cell: dict[str, Any], seed: int = 1) -> None:
    """Samples for ``cell`` in the runner's format: register and time_to_inbox rows around the
    cell's medians, the first second flagged warm-up, failures where it has some."""
    rng = random.Random(seed)
    t0 = 1_800_000_000.0
    requests = max(cell["register"]["count"], 5)
    warmup_s = cell.get("warmup_s", 1.0)
    span = cell["duration_s"] + warmup_s
    samples = []
    for i in range(requests):
        start = t0 + span * i / requests
        warm = start < t0 + warmup_s
        ms = cell["register"]["p50_ms"] * rng.uniform(0.7, 1.6)
        samples.append(Sample("register", "POST", start, round(ms, 3),
                              ok=i >= cell["register"]["failures"], warmup=warm))
        if cell["delivery"]["expected"]:
            arrived = i >= cell["delivery"]["missing"]
            inbox = cell["time_to_inbox"]["p50_ms"] * rng.uniform(0.9, 1.2)
            samples.append(Sample("time_to_inbox", "EMAIL", start,
                                  round(inbox if arrived else 10000, 3), ok=arrived,
                                  warmup=warm))
    load = Load(rate=cell["rate"]) if cell.get("rate") else Load(users=cell["users"])
    key = CellKey(cell["variant"], cell["smtp_latency_ms"], load)
    assert cell["files"] == key.folder
    record_cell(run_dir, key, samples)


def assert_valid_charts(run_dir: Path, names: tuple[str, ...]) -> None:
    from matplotlib import image

    for name in names:
        png, svg = run_dir / CHART_DIR / f"{name}.png", run_dir / CHART_DIR / f"{name}.svg"
        assert png.read_bytes().startswith(PNG_MAGIC), png
        pixels = image.imread(png)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, png
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg"), svg


def assert_sections(html: str, sections: tuple[str, ...] = SECTIONS) -> None:
    for section in sections:
        assert f'id="{section}"' in html, section


def external_urls(html: str) -> list[str]:
    return [html[m.start():m.end() + 40] for m in EXTERNAL.finditer(html)]


def embedded_images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]{0,30})', html)


def copy_partial_run(run_dir: Path) -> Path:
    """The hand-built stopped run copied to ``run_dir``, with samples for every cell but one
    (sync @ 0 ms x 4 users keeps none)."""
    shutil.copytree(FIXTURES / "partial_run", run_dir)
    document = json.loads((run_dir / "results.json").read_text())
    for index, cell in enumerate(document["cells"]):
        if (cell["variant"], cell["smtp_latency_ms"], cell["users"]) != ("sync", 0, 4):
            write_samples(run_dir, cell, seed=index)
    return run_dir


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def partial_run(tmp_path: Path) -> Path:
    """The hand-built stopped run, copied, with samples for every cell but one."""
    return copy_partial_run(tmp_path / "partial_run")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The partial run's report, built once for the read-only checks."""
    run_dir = copy_partial_run(tmp_path_factory.mktemp("built") / "partial_run")
    path = build_report(run_dir)
    return run_dir, path.read_text(encoding="utf-8")


# -- the hand-built run --------------------------------------------------------------------------

def test_every_chart_is_a_valid_png_and_svg(built: tuple[Path, str]) -> None:
    run_dir, html = built
    assert (run_dir / "report.html").is_file()
    assert_valid_charts(run_dir, ALL_CHARTS)
    assert len(embedded_images(html)) == len(ALL_CHARTS)
    assert all(src.startswith("data:image/png;base64,") for src in embedded_images(html))


def test_every_section_and_no_request_to_another_host(built: tuple[Path, str]) -> None:
    _, html = built
    assert_sections(html, (*SECTIONS, "gate", "incomplete"))
    assert external_urls(html) == []
    assert "<script" not in html and "<link" not in html


def test_external_url_check_catches_what_it_should() -> None:
    assert external_urls('<img src="https://cdn.example/x.png">')
    assert external_urls("<link href='//fonts.example/css'>")
    assert external_urls("body { background: url(http://x.example/a.png) }")
    assert not external_urls('<img src="data:image/png;base64,AAAA">')
    assert not external_urls("<p>see https://example.com in text</p>")
    assert not external_urls('<a href="charts/delivery.svg">')


def test_stopped_run_missing_cell_and_warnings_are_prominent(built: tuple[Path, str]) -> None:
    _, html = built
    assert "This run was cut short" in html and "stopped by SIGINT" in html
    assert "1 cell(s) of the profile did not run" in html
    assert "queued @ 500 ms · 4u" in html
    assert html.count("not run") >= 4  # banner, cell table, charts' notes
    assert "2 of 168 emails never arrived" in html
    assert "load generator saturated" in html
    assert "baseline (delivery and timing invalid)" in html  # an older run: both
    assert "sync @ 0 ms · 4u: no samples kept" in html  # the over-time chart's note


def test_verdict_numbers_come_from_the_run(built: tuple[Path, str]) -> None:
    _, html = built
    verdict = html[html.index('id="verdict"'):html.index('id="claims"')]
    # 1 user is the most common users count (queued @ 500 ms x 4 u did not run); each row
    # is the variant's cell at the highest latency there.
    assert "sync</th><td class=\"l\">500 ms · 1 u" in verdict
    assert "queued</th><td class=\"l\">500 ms · 1 u" in verdict
    assert "<td>510</td>" in verdict  # sync @ 500 ms x 1 u: register p50 509.5
    assert "sends nothing" in verdict
    assert ("2 emails the person was told to expect never came, lost silently or refused "
            "unseen (threaded@500ms/4u: 2)") in verdict
    assert "Speed beside loss: " in verdict and "threaded (proxy: good)" in verdict
    assert "Not calibrated in this run: no baseline cell had browser sign-ups" in verdict
    assert verdict.count('class="best"') >= 3


def test_seed_claims_say_when_the_run_lacks_the_cell(built: tuple[Path, str]) -> None:
    _, html = built
    claims = html[html.index('id="claims"'):html.index('id="charts"')]
    assert "email-verification-pattern" in claims and "async-email-sending" in claims
    assert "“5 s”" in claims and "“500 ms+”" in claims
    assert "no sync measurement at 5000 ms" in claims
    assert "no such cell in this run" in claims
    assert "Blocking holds: sync&#39;s median sign-up took 510 ms" in claims


def test_gate_section_lists_failures_first(built: tuple[Path, str]) -> None:
    _, html = built
    gate = html[html.index('id="gate"'):]
    assert "Gate verdict: FAIL" in html
    assert "1 of 3 rule checks passed" in gate
    assert gate.index("threaded@500ms/4u") < gate.index("sync@500ms/4u")
    assert "no cell matches queued{latency=5000}" in gate
    assert "fewer than 20 samples" in gate and "+5.9%" in gate


def test_environment_is_shown(built: tuple[Path, str]) -> None:
    _, html = built
    env = html[html.index('id="environment"'):html.index('id="warnings"')]
    for text in ("Fixture CPU", "0123456789abcdef", "pbkdf2:sha256:1000", "huey not installed",
                 "queue consumer threads 4", "hand-built test fixture", "16.7 ms"):
        assert text in env, text


# -- older, partial and broken runs ----------------------------------------------------------------

def test_a_run_with_only_the_required_keys_and_no_samples(tmp_path: Path) -> None:
    """An older run: no profile_settings, throughput, files, expected, samples or gate.json."""
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    for key in ("profile_settings", "complete", "stopped_reason"):
        document.pop(key)
    document["environment"].pop("cpu_model")
    document["cells"] = [c for c in document["cells"] if c["users"] == 4]
    for cell in document["cells"]:
        for key in ("throughput_rps", "files", "load_generator", "warmup_s"):
            cell.pop(key)
        cell["delivery"].pop("expected")
        cell["inp_proxy"].pop("render_allowance_ms")
    run_dir = write_document(tmp_path / "old", document)
    html = build_report(run_dir).read_text()
    assert_sections(html)
    assert 'id="gate"' not in html and "Gate verdict" not in html
    assert "This run was cut short" not in html
    assert "no samples kept" in html
    assert "runs one load (4 users)" in html  # the charts against load: skipped with a note
    names = tuple(n for n in ALL_CHARTS if n not in AGAINST_LOAD)
    assert_valid_charts(run_dir, names)
    assert not (run_dir / CHART_DIR / "throughput_vs_load.png").exists()
    assert "sends nothing" in html  # baseline, known without delivery.expected


def test_a_run_stopped_before_its_first_cell(tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    document["cells"] = []
    run_dir = write_document(tmp_path / "empty", document)
    html = build_report(run_dir).read_text()
    assert_sections(html)
    assert "16 cell(s) of the profile did not run" in html
    assert "the run finished no cell" in html
    assert embedded_images(html) == []


@pytest.mark.parametrize(("content", "needle"), [
    (None, "no results.json in this run directory"),
    ("{not json", "not valid JSON"),
    ('{"schema": "other/1"}', "not a maillab.results/1 document"),
    ('{"schema": "maillab.results/1", "run_id": "x", "profile": "p", "started_at": "t", '
     '"finished_at": null, "environment": {}, "cells": [{"variant": "sync"}]}',
     "environment.python: Field required"),
])
def test_bad_results_json_raises_a_report_error_naming_the_file(
        tmp_path: Path, content: str | None, needle: str) -> None:
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(ReportError, match=re.escape(needle)) as caught:
        build_report(tmp_path)
    assert str(tmp_path / "results.json") in str(caught.value)
    assert not (tmp_path / "report.html").exists()


def test_a_gate_json_that_cannot_be_read_is_reported_not_fatal(partial_run: Path) -> None:
    (partial_run / "gate.json").write_text("{broken")
    html = build_report(partial_run).read_text()
    assert "gate.json: cannot be read" in html


# -- the command ---------------------------------------------------------------------------------

def test_report_command_prints_the_path(partial_run: Path) -> None:
    result = CliRunner().invoke(report, [str(partial_run)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(partial_run / "report.html")
    assert (partial_run / "report.html").is_file()


def test_report_command_on_a_bad_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(report, [str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'nowhere'}: not a run directory"
    result = CliRunner().invoke(report, [str(tmp_path)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "no results.json" in result.output


def test_which_cell_speaks_for_a_variant() -> None:
    stored = load_run(FIXTURES / "v1_run")
    template = stored.cells[0]

    def cell(variant: str, latency: int, users: int) -> Any:
        return dataclasses.replace(template, variant=variant, smtp_latency_ms=latency,
                                   users=users)

    def run_of(cells: list[Any]) -> ReportRun:
        results = dataclasses.replace(stored.results, cells=cells, profile_settings=None)
        return ReportRun(Path("."), results)

    cells = [cell("sync", 0, 10), cell("sync", 500, 10), cell("sync", 5000, 50),
             cell("threaded", 0, 50), cell("threaded", 500, 50)]
    run = run_of(cells)
    assert run.focus_load == Load(users=50)  # 10 users twice, 50 three times
    assert run.verdict_cell("sync") == cell("sync", 5000, 50)
    assert run.verdict_cell("threaded") == cell("threaded", 500, 50)
    run = run_of(cells[:4])  # 10 and 50 twice each: the larger wins
    assert run.focus_load == Load(users=50)
    assert run.verdict_cell("queued") is None
    run = run_of(cells[:2])
    assert run.verdict_cell("sync") == cell("sync", 500, 10)


def test_the_enumeration_section_states_the_false_alarm_rate_and_syncs_cost(
        tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    checks = [{"variant": v, "endpoint": e, "samples": [200, 200], "known_p50_ms": 4.1,
               "unknown_p50_ms": 4.05, "gap_ms": 0.05, "p_value": p, "distinguishable": p < 0.01}
              for v, p in (("sync", 0.004), ("queued", 0.4)) for e in ("/register", "/resend")]
    document["enumeration"] = checks
    run_dir = write_document(tmp_path / "probed", document)
    html = build_report(run_dir).read_text()
    assert "With\n  4 tests at that level, a run shows about one false alarm in\n  25 " in html
    assert "a cost of sending in the request" in html
    document["enumeration"] = [c for c in checks if c["variant"] == "queued"]
    write_document(run_dir, document)
    assert "a cost of sending in the request" not in build_report(run_dir).read_text()


def test_the_losses_table_says_which_scenarios_do_not_apply(tmp_path: Path) -> None:
    from reports.data import Condition
    from reports.summary import loss_rows

    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    queued = next(c for c in document["cells"] if c["variant"] == "queued"
                  and c["smtp_latency_ms"] == 0 and c["users"] == 1)
    crashed = {**queued, "scenario": "consumer-crash", "files": None}
    crashed["delivery"] = {**queued["delivery"], "missing": 3}
    document["cells"].append(crashed)
    run_dir = write_document(tmp_path / "scenarios", document)
    run = ReportRun(run_dir, load_run(run_dir).results)
    rows = {r.condition: r for r in loss_rows(run)}
    crash = rows[Condition(0, Load(users=1), "consumer-crash")]
    assert crash.cells["queued"].lost_silently == 3
    assert [v for v, c in crash.cells.items() if not c.applies] == ["baseline", "sync",
                                                                    "threaded"]
    assert rows[Condition(0, Load(users=1))].cells["sync"].applies
    html = build_report(run_dir).read_text()
    losses = html[html.index('id="losses"'):html.index('id="claims"')]
    assert losses.count("does not apply") == 3 and "consumer-crash" in losses


def test_losses_show_refusals_late_mail_and_what_fakesmtp_injected(tmp_path: Path) -> None:
    """The figures in results.json are the ones on the page, and the verdict weighs them."""
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    base = {(c["variant"], c["smtp_latency_ms"], c["users"]): c for c in document["cells"]}
    rejecting = {**base[("threaded", 500, 4)], "scenario": "smtp-reject", "files": None}
    rejecting["delivery"] = {**rejecting["delivery"], "missing": 0, "refused": 7,
                             "refused_told": 0, "late": 4, "late_inbox_p50_ms": 2345.0}
    rejecting["smtp_faults"] = {"attempts": 70, "received": 63, "injected": 7,
                                "injected_share": 0.1, "by_rule": {"reject": 7}}
    document["cells"].append(rejecting)
    run_dir = write_document(tmp_path / "rejected", document)
    html = build_report(run_dir).read_text()
    losses = html[html.index('id="losses"'):html.index('id="claims"')]
    assert "<b>7</b> refused (0 told)" in losses
    assert "4 late (p50 2,345 ms)" in losses or "4 late (p50 2345 ms)" in losses
    assert "fakesmtp: 7 faults in 70 attempts (10%)" in losses
    verdict = html[html.index('id="verdict"'):html.index('id="losses"')]
    assert "smtp-reject 7" in verdict  # refused unseen counts as lost silently in the verdict
    assert "No variant was both fast and free of silent loss" in verdict or (
        "Fast and losing nothing silently in this run" in verdict)


def test_the_page_says_in_one_line_what_each_variant_is(tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    outbox = {**copy.deepcopy(document["cells"][-1]), "variant": "outbox", "files": None}
    document["cells"].append(outbox)
    document["profile_settings"]["variants"] = [*document["profile_settings"]["variants"],
                                                "outbox"]
    run_dir = write_document(tmp_path / "five", document)
    html = build_report(run_dir).read_text()
    assert "<b>queued</b>, a Huey task, delivered by maillab worker;" in html
    assert "<b>outbox</b>, a row written in the sign-up&#39;s own transaction" in html


def test_what_the_person_sees_sets_the_browser_beside_the_proxy(tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    sync = next(c for c in document["cells"] if c["variant"] == "sync"
                and c["inp_proxy"]["p75_ms"])
    sync["browser"] = {"count": 20, "trusted": 20, "click_to_confirmation_p50_ms": 590.0,
                       "click_to_confirmation_p75_ms": 600.0,
                       "click_to_confirmation_p95_ms": 640.0, "event_p75_ms": 16.0,
                       "events_reported": 17, "proxy_p75_ms": 575.0}
    run_dir = write_document(tmp_path / "browser", document)
    html = build_report(run_dir).read_text()
    seen = html[html.index('id="browser"'):html.index('id="claims"')]
    assert "590 / 600 / 640" in seen and "(17 reported)" in seen
    error = (sync["inp_proxy"]["p75_ms"] - 600.0) / 600.0
    assert f"{100 * error:+.0f}%" in seen
    del sync["browser"]
    write_document(run_dir, document)
    assert 'id="browser"' not in build_report(run_dir).read_text()  # no probe, no section


def test_the_proxy_is_calibrated_on_baseline_and_the_browser_figure_replaces_it(
        tmp_path: Path) -> None:
    """Where a baseline cell had browser sign-ups the proxy's render allowance is what Chromium
    added there; every cell's proxy is re-based on it, its error on the other variants is
    measured (not fitted), and a cell with its own browser figure is rated by that."""
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    block = {"count": 20, "trusted": 20, "click_to_confirmation_p50_ms": 0.0,
             "click_to_confirmation_p95_ms": 0.0, "event_p75_ms": 16.0,
             "events_reported": 15, "proxy_p75_ms": 0.0}

    def at(variant: str, latency: int, users: int) -> dict[str, Any]:
        return next(c for c in document["cells"] if (c["variant"], c["smtp_latency_ms"],
                                                     c["users"]) == (variant, latency, users))

    # baseline @ 500 ms x 1 u: proxy 24.467 with 16.667 assumed, so the load's response p75
    # is 7.8 ms; Chromium painted the confirmation at p75 97.8 ms, so the browser adds 90.
    at("baseline", 500, 1)["browser"] = {**block, "click_to_confirmation_p75_ms": 97.8}
    at("sync", 500, 1)["browser"] = {**block, "click_to_confirmation_p75_ms": 720.0}
    results = parse_results(json.dumps(document), "document")
    calibrate(results)
    calibrate(results)  # as the bench does after every cell: the same answer
    found = results.inp_calibration
    assert found is not None
    assert (found.allowance_ms, found.assumed_ms, found.signups) == (90.0, 16.667, 20)
    assert found.reference == ["baseline@500ms/1u"]
    sync = next(c for c in results.cells if c.label == "sync@500ms/1u")
    assert sync.inp_proxy.calibrated_p75_ms == round(628.067 - 16.667 + 90.0, 1)  # 701.4
    assert sync.wait.source == "browser" and sync.wait.p75_ms == 720.0
    threaded = next(c for c in results.cells if c.label == "threaded@500ms/1u")
    assert threaded.wait.source == "calibrated proxy"
    assert threaded.wait.p75_ms == round(25.667 - 16.667 + 90.0, 1)

    run_dir = tmp_path / "calibrated"
    run_dir.mkdir()
    write_results(run_dir, results)
    html = build_report(run_dir).read_text()
    seen = html[html.index('id="browser"'):html.index('id="claims"')]
    assert "Calibrated in this run: the browser adds 90.0 ms" in seen
    assert "<small>reference</small>" in seen  # baseline: its error is 0 by construction
    assert f"{100 * (701.4 - 720.0) / 720.0:+.0f}%" in seen  # sync's, measured: -3%
    verdict = html[html.index('id="verdict"'):html.index('id="losses"')]
    assert "<small>calibrated proxy</small>" in verdict
    assert "90.0 ms measured in Chromium (calibrated)" in html  # the environment table
    # Without a baseline probe there is nothing to calibrate on: the proxy stays as assumed.
    del at("baseline", 500, 1)["browser"]
    results = parse_results(json.dumps(document), "document")
    calibrate(results)
    assert results.inp_calibration is None
    assert all(c.inp_proxy.calibrated_p75_ms is None for c in results.cells)


def test_the_seeds_inp_claim_is_checked_against_chromium(tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    block = {"count": 20, "trusted": 20, "click_to_confirmation_p50_ms": 0.0,
             "click_to_confirmation_p75_ms": 0.0, "click_to_confirmation_p95_ms": 0.0,
             "event_p75_ms": 16.0, "events_reported": 15, "proxy_p75_ms": 0.0}
    for variant, seen in (("sync", 591.0), ("threaded", 118.0)):
        cell = next(c for c in document["cells"] if c["variant"] == variant
                    and c["smtp_latency_ms"] == 500)
        cell["browser"] = {**block, "click_to_confirmation_p75_ms": seen}
    run_dir = write_document(tmp_path / "inp", document)
    html = build_report(run_dir).read_text()
    claims = html[html.index('id="claims"'):]
    assert ("was p75 16.0 ms for sync and 16.0 ms for threaded: sending in the request does "
            "not show in INP (+0 ms at p75)") in claims
    assert "click to confirmation painted, was p75 591 ms against 118 ms" in claims
    assert "Not measured in this run: no browser figures for sync and threaded at 5000 ms" in (
        claims)


def test_cells_on_a_provider_like_smtp_server_sit_beside_their_plain_twins(
        tmp_path: Path) -> None:
    """A starttls+auth cell is a row of its own (the baseline, which sends nothing, has no
    such row and no "not run" note), and a section sets it beside the plain cell it costs
    more than."""
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    sync = next(c for c in document["cells"] if c["variant"] == "sync"
                and c["smtp_latency_ms"] == 0 and c["users"] == 1)
    tls = {**sync, "smtp": "starttls+auth", "files": None,
           "register": {**sync["register"], "p50_ms": sync["register"]["p50_ms"] + 2.5}}
    document["cells"].append(tls)
    run_dir = write_document(tmp_path / "tls", document)
    html = build_report(run_dir).read_text()
    section = html[html.index('id="smtp-modes"'):html.index('id="claims"')]
    assert section.count("<tr>") == 2  # the header and the one cell
    assert "+2.5" in section and "starttls+auth" in section
    cells = html[html.index('id="cells"'):html.index('id="security"')
                 if 'id="security"' in html else html.index('id="environment"')]
    assert cells.count("<small>starttls+auth</small>") == 1
    assert "baseline @ 0 ms · 1u · starttls+auth" not in html
    plain = build_report(write_document(tmp_path / "plain", json.loads(
        (FIXTURES / "partial_run" / "results.json").read_text()))).read_text()
    assert 'id="smtp-modes"' not in plain


def test_a_cell_is_held_to_what_its_variants_documentation_says(tmp_path: Path) -> None:
    """celery-early-rabbitmq's target entry says a consumer crash loses some email and a
    deploy loses none: a crash that lost 4 matches, a deploy that lost 2 does not, and the
    page says so plainly beside the counts."""
    document = json.loads((FIXTURES / "partial_run" / "results.json").read_text())
    queued = next(c for c in document["cells"] if c["variant"] == "queued"
                  and c["smtp_latency_ms"] == 0 and c["users"] == 1)
    cells = []
    for scenario, missing in (("consumer-crash", 4), ("consumer-deploy", 2), ("clean", 0)):
        cell = {**copy.deepcopy(queued), "variant": "celery-early-rabbitmq",
                "scenario": scenario, "files": None}
        cell["delivery"] = {**cell["delivery"], "missing": missing, "duplicates": 0}
        cells.append(cell)
    document["cells"].extend(cells)
    document["profile_settings"]["variants"] = [*document["profile_settings"]["variants"],
                                                "celery-early-rabbitmq"]
    run_dir = write_document(tmp_path / "celery", document)
    html = build_report(run_dir).read_text()
    losses = html[html.index('id="losses"'):html.index('id="claims"')]
    assert "<b>celery-early-rabbitmq</b>: a Celery task acknowledged as it starts" in losses
    assert losses.count("Matches the documentation (4 lost silently, 0 duplicates).") == 1
    assert ("Does not match the documentation: 2 lost silently, where it says none would be."
            in losses)
    assert losses.count('class="undocumented"') == 1  # the clean cell has no claim to meet
    # The source as text: the page loads and links nothing from another host.
    assert ('(<span class="url">https://docs.celeryq.dev/en/stable/userguide/workers.html'
            in losses)
    assert not external_urls(html)
