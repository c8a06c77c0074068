"""The history of runs (maillab/history.py): what a bench appends, `maillab history` and
`maillab history add`, and a damaged line reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from maillab.cli import cli
from maillab.history import FILE, SCHEMA, read_history
from tests.conftest import TinyRun
from tests.test_gate import write_run


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
