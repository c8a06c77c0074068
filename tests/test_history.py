"""The history of runs (loadtests/history.py): what a bench appends, `maillab history` and
`maillab history add`, and a damaged line reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from loadtests.history import FILE, SCHEMA, read_history
from maillab.cli import cli
from tests.conftest import TinyRun
from tests.test_gate import gate, rules_file, write_run


def history(*args: str) -> Result:
    return CliRunner().invoke(cli, ["history", *args])


@pytest.mark.xdist_group("tiny-run")
def test_a_finished_bench_appends_its_cells_to_the_history(tiny_run: TinyRun) -> None:
    path = tiny_run.root / "results" / "history" / FILE
    [line] = path.read_text().splitlines()
    entry = json.loads(line)
    document = json.loads((tiny_run.run_dir / "results.json").read_text())
    assert entry["schema"] == SCHEMA and entry["run_id"] == document["run_id"]
    assert entry["target"]["name"] == "maillab" and entry["profile"] == document["profile"]
    # Keyed by the source it measured and the machine.
    assert set(entry["source"]) == {"commit", "branch", "dirty"}
    assert entry["fingerprint"]["cpu_count"] == document["environment"]["cpu_count"]
    assert len(entry["fingerprint"]["id"]) == 12
    # Every cell, with every figure the gate can name, as results.json has it.
    assert [c["cell"] for c in entry["cells"]] == [
        f"{c['variant']}@{c['smtp_latency_ms']}ms/{c['rate']:g}rps" for c in document["cells"]]
    sync = next(c for c in entry["cells"] if c["variant"] == "sync")
    cell = next(c for c in document["cells"] if c["variant"] == "sync")
    assert sync["figures"]["register.p50_ms"] == cell["register"]["p50_ms"]
    assert sync["figures"]["delivery.missing"] == cell["delivery"]["missing"]
    assert "history: " in tiny_run.output


def test_history_add_lists_and_refuses_a_run_twice(tmp_path: Path) -> None:
    folder = tmp_path / "hist"
    runs = [write_run(tmp_path / name, seed=seed) for seed, name in enumerate(("a", "b"), 1)]
    for run in runs:
        result = history("--dir", str(folder), "add", str(run))
        assert result.exit_code == 0, result.output
    again = history("--dir", str(folder), "add", str(runs[0]))
    assert again.exit_code == 1 and "run a is already in the history" in again.stderr
    listed = history("--dir", str(folder))
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0] == f"{folder / FILE}: 2 runs"
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"]
    assert all("3/3 cells valid" in line for line in lines[1:])


def test_a_damaged_line_is_reported_and_skipped_never_fatal(tmp_path: Path) -> None:
    folder = tmp_path / "hist"
    first, second = write_run(tmp_path / "a"), write_run(tmp_path / "b", seed=2)
    assert history("--dir", str(folder), "add", str(first)).exit_code == 0
    path = folder / FILE
    with open(path, "a") as out:  # a run killed in the middle of its line
        out.write('{"schema": "maillab.history/1", "run_id": "cut')
    assert history("--dir", str(folder), "add", str(second)).exit_code == 0
    with open(path, "a") as out:
        out.write('{"schema": "someone-else/9", "run_id": "x", "profile": "p", "target": {}, '
                  '"fingerprint": {}, "cells": []}\n')
    found = read_history(folder)
    assert [e["run_id"] for e in found.entries] == ["a", "b"]  # the line after it was kept
    first_problem, second_problem = found.problems
    assert first_problem.startswith(f"{path}:2: not JSON (")
    assert first_problem.endswith("); skipped")
    assert second_problem == (f"{path}:4: schema 'someone-else/9', not 'maillab.history/1'; "
                              "skipped")
    listed = history("--dir", str(folder))
    assert listed.exit_code == 0 and f"{folder / FILE}: 2 runs" in listed.stdout
    assert listed.stderr.count("warning: ") == 2


def test_a_history_that_is_not_there_yet_is_empty(tmp_path: Path) -> None:
    listed = history("--dir", str(tmp_path / "none"))
    assert listed.exit_code == 0 and "no runs yet" in listed.stdout


# -- a run judged against its history ------------------------------------------------------


def _history_of(tmp_path: Path, runs: int, **changes: object) -> Path:
    """A history of ``runs`` runs of the same build (each its own seed), as the bench adds."""
    folder = tmp_path / "hist"
    for seed in range(1, runs + 1):
        run = write_run(tmp_path / f"h{seed:02d}", seed=seed, **changes)  # type: ignore[arg-type]
        assert history("--dir", str(folder), "add", str(run)).exit_code == 0
    return folder


def test_a_run_like_its_history_passes_and_a_slower_one_is_named(tmp_path: Path) -> None:
    """A/A: a new run of the same build raises nothing. A/B: threaded's register 30% slower
    fails on that cell and figure, and nothing else."""
    folder = _history_of(tmp_path, 8)
    same = write_run(tmp_path / "same", seed=20)
    result = gate(str(same), "--history", str(folder), "--rules",
                  rules_file(tmp_path, "*.delivery.missing == 0"))
    assert result.exit_code == 0, result.output
    report = json.loads((same / "gate.json").read_text())["history"]
    assert report["runs"] == 8 and all(c["verdict"] != "fail" for c in report["checks"])
    assert {c["figure"] for c in report["checks"] if c["verdict"] == "pass"} >= {
        "register.p50_ms", "register.p95_ms", "time_to_inbox.p50_ms", "delivery.missing"}
    assert "at most 0.01 per run" in report["expected_false_alarms"]
    slower = write_run(tmp_path / "slower", seed=21, slower={"threaded": 1.3})
    result = gate(str(slower), "--history", str(folder), "--rules",
                  rules_file(tmp_path, "*.delivery.missing == 0"))
    assert result.exit_code == 1, result.output
    failed = [c for c in json.loads((slower / "gate.json").read_text())["history"]["checks"]
              if c["verdict"] == "fail"]
    assert {(c["cell"], c["figure"]) for c in failed} == {
        ("threaded@500ms/10rps", "register.p50_ms"), ("threaded@500ms/10rps", "register.p95_ms")}
    assert all(c["change"] == pytest.approx(0.3, abs=0.05) for c in failed)
    assert "regressions against the history" in result.output


def test_lost_email_against_a_history_of_none_is_an_exact_test(tmp_path: Path) -> None:
    """Counts are not means: one lost email against a history of zeros is within the bound
    a clean history allows; threaded's flaky-SMTP share (8 of 68) is not."""
    folder = _history_of(tmp_path, 6)
    one = write_run(tmp_path / "one", seed=30, cells__2__delivery__missing=1)
    many = write_run(tmp_path / "many", seed=31, cells__2__delivery__missing=8)
    for run, code in ((one, 0), (many, 1)):
        result = gate(str(run), "--history", str(folder), "--rules",
                      rules_file(tmp_path, "*.arrivals.dropped == 0"))
        assert result.exit_code == code, result.output
    checks = json.loads((many / "gate.json").read_text())["history"]["checks"]
    [lost] = [c for c in checks if c["verdict"] == "fail"]
    assert (lost["cell"], lost["figure"], lost["value"]) == (
        "threaded@500ms/10rps", "delivery.missing", 8)
    assert 0 < lost["expected"] < 1  # the count a zero history's upper bound allows


def test_a_history_of_another_machine_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = _history_of(tmp_path, 5, environment__cpu_model="Another CPU")
    run = write_run(tmp_path / "run", seed=40)
    result = gate(str(run), "--history", str(folder))
    assert result.exit_code == 2
    assert "no earlier maillab/quick run on this machine" in result.output
    assert "--any-machine to compare anyway" in result.output
    anyway = gate(str(run), "--history", str(folder), "--any-machine")
    assert anyway.exit_code in (0, 1)
    assert "compared across machines" in json.loads((run / "gate.json").read_text())[
        "history"]["warning"]


def test_change_points_split_the_series_and_the_run_is_judged_by_the_last_segment() -> None:
    """A step up in the history (a slower build that was accepted) starts a new segment: the
    next run is judged against the new level, not the whole series."""
    from loadtests.historycheck import count_bound, last_segment

    rng = np.random.default_rng(1)
    series = list(rng.normal(10, 0.2, 12)) + list(rng.normal(13, 0.2, 6))
    assert last_segment(series) == 12
    assert last_segment(list(rng.normal(10, 0.2, 20))) == 0  # no step, no change point
    assert count_bound(0, 3000, 0.01) == pytest.approx(1 - 0.01 ** (1 / 3000), rel=1e-3)


# -- the report's history section ------------------------------------------------------------


def test_the_report_draws_each_gated_figure_over_the_history_with_this_run(
        tmp_path: Path) -> None:
    """The report of a run gated against a history shows the regression it raised, a chart
    per timing figure (a panel per cell) and one of the email counts, with the history's
    change points labelled by commit."""
    from reports import build_report

    folder = _history_of(tmp_path, 6, environment__git_sha="a" * 40)
    # A build that was accepted slower: a step the history's change points must find.
    for seed in range(7, 13):
        run = write_run(tmp_path / f"h{seed:02d}", seed=seed, scale=1.5,
                        environment__git_sha="b" * 40)
        assert history("--dir", str(folder), "add", str(run)).exit_code == 0
    slower = write_run(tmp_path / "slower", seed=40, scale=1.5, slower={"threaded": 1.4})
    result = gate(str(slower), "--history", str(folder), "--rules",
                  rules_file(tmp_path, "*.delivery.missing == 0"))
    assert result.exit_code == 1, result.output
    html = build_report(slower).read_text()  # the gate's history, found from gate.json
    assert 'id="history"' in html and "12 earlier runs" in html
    assert "raised a regression:" in html
    section = html[html.index('id="history"'):]
    assert "threaded@500ms/10rps" in section and "register.p50_ms" in section
    for name in ("history_register_p50_ms", "history_register_p95_ms",
                 "history_time_to_inbox_p50_ms", "history_time_to_inbox_p95_ms",
                 "history_delivery"):
        assert (slower / "charts" / f"{name}.png").stat().st_size > 0
        assert f'id="chart-{name}"' in section
    # The step from the a-commits to the b-commits is a change point, labelled in the SVG.
    svg = (slower / "charts" / "history_register_p50_ms.svg").read_text()
    assert "bbbbbbb" in svg


def test_a_report_without_a_history_has_no_history_section(tmp_path: Path) -> None:
    from reports import build_report

    run = write_run(tmp_path / "run", seed=3)
    assert 'id="history"' not in build_report(run).read_text()
    first = build_report(run, tmp_path / "empty-history").read_text()
    assert "No earlier run to draw this one against yet." in first


# -- maillab calibrate ----------------------------------------------------------------------


def _calibration_folder(tmp_path: Path, runs: int, **changes: object) -> Path:
    """A calibration folder as `maillab calibrate` leaves it: runs/NNN and their history."""
    from maillab.calibrate import HISTORY, RUNS

    folder = tmp_path / "cal"
    for index in range(1, runs + 1):
        run = write_run(folder / RUNS / f"{index:03d}", seed=index, **changes)  # type: ignore[arg-type]
        assert history("--dir", str(folder / HISTORY), "add", str(run)).exit_code == 0
    return folder


def test_calibrate_judges_each_run_against_the_runs_before_it(tmp_path: Path) -> None:
    """A/A: twelve runs of one build raise no alarm in the history check (judged from the
    sixth on) and the rules fail none; a slower run added to the folder is the only one
    that fails, on its cell and figure."""
    from maillab.calibrate import HISTORY, RUNS

    folder = _calibration_folder(tmp_path, 12)
    rules = rules_file(tmp_path, "*.delivery.missing == 0", "*.register.p50_ms < 1000")
    result = CliRunner().invoke(cli, ["calibrate", "--judge", str(folder), "--rules", rules])
    assert result.exit_code == 0, result.output
    found = json.loads((folder / "calibration.json").read_text())
    assert found["rates"] == {
        "runs": 12, "rules_failed_runs": 0, "rules_checks": 12 * 3 * 2, "rules_failed_checks": 0,
        "invalid_runs": 0, "history_judged_runs": 7, "history_failed_runs": 0,
        "history_checks": found["rates"]["history_checks"], "history_failed_checks": 0,
        "gate_failed_runs": 0}
    # register p50 and p95 in 3 cells; time to inbox p50 and p95 and 3 counts in the 2 that
    # send email
    assert found["rates"]["history_checks"] == 7 * (3 * 2 + 2 * 2 + 2 * 3)
    assert "12 runs of maillab/quick: the rules failed 0 (0 of 72 checks)" in result.output
    assert "0 of 7 judged runs raised an alarm" in result.output
    slow = write_run(folder / RUNS / "013", seed=13, slower={"threaded": 1.3})
    assert history("--dir", str(folder / HISTORY), "add", str(slow)).exit_code == 0
    result = CliRunner().invoke(cli, ["calibrate", "--judge", str(folder), "--rules", rules])
    runs = json.loads((folder / "calibration.json").read_text())["runs"]
    assert [bool(r["history_failed"]) for r in runs] == [False] * 12 + [True]
    assert all(line.startswith("threaded@500ms/10rps register.p") for line in
               runs[-1]["history_failed"])
    assert "threaded@500ms/10rps register.p50_ms" in result.output


def test_calibrate_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    cases = {
        ("--bench-args", "--out elsewhere"): "--out is set by calibrate itself",
        ("--profile", "nonesuch"): "nonesuch",
        ("--judge", str(tmp_path)): "no runs to judge",
    }
    for args, said in cases.items():
        result = CliRunner().invoke(cli, ["calibrate", "--out", str(tmp_path / "c"), *args])
        assert result.exit_code != 0 and said in result.output, result.output
        assert "Traceback" not in result.output
