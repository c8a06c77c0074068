"""`maillab bench` end to end on a tiny profile, stopping mid-run, and its up-front errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from loadtests.cellfiles import BROWSER_FILE
from maillab.cli import cli
from maillab.ports import free_port, port_in_use
from tests.conftest import TinyRun, chromium_or_skip
from tests.runs import validate

LATENCY_MS = 300


RATE = 10


def tiny_profile(path: Path, **changes: object) -> Path:
    """Open loop at 10 sign-ups/s, 20 measured per cell: sync holds 3 requests in flight."""
    settings = {"variants": '["baseline", "sync", "threaded", "queued"]',
                "latencies_ms": f"[{LATENCY_MS}]", "rates": f"[{RATE}]", "min_signups": "20",
                "duration_s": "1", "warmup_s": "0.5", "drain_s": "10", "workers": "1",
                "threads": "8"}
    settings.update({k: str(v) for k, v in changes.items()})
    path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    return path


def processes_of(run_dir: Path) -> list[int]:
    """Every live process tagged with this run's MAILLAB_RUN_DIR."""
    tag = f"MAILLAB_RUN_DIR={run_dir.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if tag in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
@pytest.mark.xdist_group("tiny-run")
def test_tiny_run_end_to_end(tiny_run: TinyRun, tmp_path: Path) -> None:
    run_dir, output = tiny_run.run_dir, tiny_run.output
    document = json.loads((run_dir / "results.json").read_text())
    validate(document)
    assert document["complete"] is True and document["stopped_reason"] is None
    assert (tiny_run.root / "results" / "latest").resolve() == run_dir.resolve()
    cells = {cell["variant"]: cell for cell in document["cells"]}
    assert set(cells) == {"baseline", "sync", "threaded", "queued"}
    for variant, cell in cells.items():
        delivery = cell["delivery"]
        assert delivery["registered"] > 0
        # Equal load: every variant was offered the same schedule, and all of it started.
        assert (cell["mode"], cell["rate"]) == ("open", RATE)
        arrivals = cell["arrivals"]
        assert arrivals["offered"] >= 20 and arrivals["dropped"] == 0
        assert arrivals["started"] == arrivals["offered"] == delivery["registered"]
        assert 0 <= arrivals["lag_p50_ms"] <= arrivals["lag_p99_ms"]
        assert (run_dir / cell["files"] / "samples.csv.gz").exists()
        if variant == "baseline":
            assert delivery["delivered"] == 0 and delivery["expected"] is False
            assert cell["time_to_inbox"]["count"] == 0
        else:
            assert delivery["delivered"] + delivery["missing"] == delivery["registered"]
            assert delivery["missing"] == 0 and delivery["duplicates"] == 0
            assert delivery["verified"] == delivery["registered"]
            assert cell["time_to_inbox"]["p50_ms"] >= LATENCY_MS
    # The lab injected what it says: sync waits for SMTP in the request, baseline does not
    # (compared within the run, not against a wall-clock bound).
    assert cells["sync"]["register"]["p50_ms"] >= LATENCY_MS
    assert cells["baseline"]["register"]["p50_ms"] < cells["sync"]["register"]["p50_ms"]
    # Warm-up is left out of delivery as it is of latency: the same sign-ups in both.
    for variant in ("sync", "threaded", "queued"):
        delivery, inbox = cells[variant]["delivery"], cells[variant]["time_to_inbox"]
        assert delivery["counted"] == "registrations sent after the warm-up"
        assert delivery["delivered"] == inbox["count"] + inbox["failures"]
    # The timing probe ran on every variant, before the cells, and is in the report.
    checks = [(c["variant"], c["endpoint"], c["samples"]) for c in document["enumeration"]]
    assert checks == [(v, e, [10, 10]) for v in ("baseline", "sync", "threaded", "queued")
                      for e in ("/register", "/resend")]
    assert all(0 <= c["p_value"] <= 1 for c in document["enumeration"])
    assert "Account enumeration by timing" in output
    assert processes_of(run_dir) == []
    # The default rules pass this run; the same run with one variant's register samples
    # slowed by a fifth fails against it.
    assert CliRunner().invoke(cli, ["gate", str(run_dir)]).exit_code == 0
    slowed = slow_register(run_dir, tmp_path / "slowed", "threaded", 1.2)
    result = CliRunner().invoke(cli, ["gate", str(slowed), "--baseline", str(run_dir)])
    assert result.exit_code == 1, result.output
    failed = json.loads((slowed / "gate.json").read_text())["comparison"]["metrics"]
    assert [(m["cell"], m["metric"]) for m in failed if m["verdict"] == "fail"] == [
        (f"threaded@{LATENCY_MS}ms/{RATE}rps", "register")]


def slow_register(run_dir: Path, copy: Path, variant: str, factor: float) -> Path:
    """A copy of a run whose ``variant`` register samples took ``factor`` times as long, its
    results.json figures recomputed from them by the product's own summary code."""
    import dataclasses
    import shutil

    from loadtests.cellfiles import REGISTER, CellRecorder, read_registrations, read_sample_rows
    from loadtests.results import load_run, write_results
    from loadtests.summary import request_stats

    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("gate.json", "report.html"))
    run = load_run(copy)
    cells = []
    for cell in run.cells:
        if cell.variant == variant:
            folder = run.cell_dir(cell)
            rows = [dataclasses.replace(s, ms=round(s.ms * factor, 3)) if s.name == REGISTER
                    else s for s in read_sample_rows(folder)]
            CellRecorder(rows, read_registrations(folder)).write(folder)
            samples = load_run(copy).samples(cell)
            assert samples is not None
            cell = dataclasses.replace(cell, register=request_stats(samples[REGISTER],
                                                                    cell.duration_s))
        cells.append(cell)
    write_results(copy, dataclasses.replace(run.results, cells=cells))
    return copy


def bench_under_load(tmp_path: Path, run_dir: Path, variants: str, *extra: str,
                     output: int = subprocess.PIPE) -> subprocess.Popen:
    """Start `maillab bench` on a 30 s tiny profile; return once its first cell is under load."""
    profile = tiny_profile(tmp_path / "tiny.toml", duration_s=30, variants=variants)
    first = json.loads(variants)[0]
    bench = subprocess.Popen(
        [sys.executable, "-m", "maillab", "bench", "--profile", str(profile), "--out",
         str(run_dir), *extra], cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
        text=True)
    deadline = time.monotonic() + 60
    # locust writes its stats history once a second while requests flow: a row after the
    # header means the app is up and the cell is under load.
    load = "2u" if "--users" in extra else f"{RATE}rps"
    history = run_dir / "cells" / f"{first}-{LATENCY_MS}ms-{load}" / "locust_stats_history.csv"
    while not (history.exists() and len(history.read_text().splitlines()) > 1):
        if bench.poll() is not None or time.monotonic() > deadline:
            bench.kill()
            raise AssertionError(f"the first cell never started: {bench.communicate()[0]}")
        time.sleep(0.1)
    return bench


@contextmanager
def stopping(bench: subprocess.Popen) -> Iterator[None]:
    """A bench that a failed check leaves running is killed, not left behind."""
    try:
        yield
    except BaseException:
        bench.kill()
        bench.communicate()
        raise


def interrupted(bench: subprocess.Popen) -> str:
    """Ctrl-C to a running bench; its output once it has exited (killed if it hangs)."""
    bench.send_signal(signal.SIGINT)
    try:
        return str(bench.communicate(timeout=60)[0])
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()


@pytest.mark.slow
def test_interrupt_mid_run_stops_every_child(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    smtp_port, api_port = free_port(), free_port()
    # Closed loop here, so that mode runs end to end too.
    bench = bench_under_load(tmp_path, run_dir, '["threaded", "sync"]', "--smtp-port",
                             str(smtp_port), "--smtp-api-port", str(api_port), "--users", "2")
    with stopping(bench):
        assert len(processes_of(run_dir)) >= 3  # fakesmtp, the app (and workers), locust
    output = interrupted(bench)
    assert bench.returncode == 130, output
    assert "stopped by SIGINT" in output
    document = json.loads((run_dir / "results.json").read_text())
    validate(document)
    assert document["complete"] is False and "SIGINT" in document["stopped_reason"]
    assert processes_of(run_dir) == []
    assert not port_in_use("127.0.0.1", smtp_port) and not port_in_use("127.0.0.1", api_port)


@pytest.mark.slow
def test_a_cell_invalid_for_timing_is_run_once_more_and_still_gates_its_losses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start-lag bound no schedule can keep (0 ms) makes every cell invalid for timing, a
    passing reason: the cell is run once more, both attempts kept; its delivery is still
    counted and gated, its timing rules skipped with the reason, and the run is not invalid."""
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "lag.toml", variants='["sync"]', max_start_lag_ms=0,
                           min_signups=10)
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "running it again" in result.output
    [cell] = json.loads((run_dir / "results.json").read_text())["cells"]
    assert (cell["valid"], cell["invalid_for"]) == (False, ["timing"])
    [first] = cell["attempts"]
    assert first["invalid_for"] == ["timing"] and "start lag p99" in first["warnings"][0]
    assert first["files"] == cell["files"] + ".attempt-1"
    for folder in (first["files"], cell["files"]):
        assert (run_dir / folder / "samples.csv.gz").exists()
    assert cell["delivery"]["missing"] == 0 and cell["delivery"]["delivered"] > 0
    gated = CliRunner().invoke(cli, ["gate", str(run_dir)])
    assert gated.exit_code == 0, gated.output
    outcomes = json.loads((run_dir / "gate.json").read_text())["rules"]
    by_verdict = {o["rule"]: o["verdict"] for o in outcomes if o["cell"]}
    assert by_verdict["*{scenario=clean}.delivery.missing == 0"] == "pass"
    assert by_verdict["sync{scenario=clean}.register.p50_ms >= smtp_latency_ms"] == "skipped"


@pytest.mark.parametrize(("args", "needle"), [
    (["--variants", "sync,carrier-pigeon"], "unknown variant 'carrier-pigeon'"),
    (["--latencies", "0,fast"], "not a comma-separated list of integers"),
    (["--users", "0"], "users must be a list of 1..1000"),
    (["--rates", "0"], "'0': a rate must be sign-ups per second above 0"),
    (["--rates", "-5"], "'-5': a rate must be sign-ups per second above 0"),
    (["--rates", "nan"], "'nan': a rate must be sign-ups per second above 0"),
    (["--rates", "fast"], "'fast' is not a number of sign-ups per second"),
    (["--rates", "10", "--users", "2"], "--rates (open loop) and --users (closed loop)"),
    (["--mode", "closed"], "users must be a non-empty list in closed loop"),
    (["--mode", "sideways"], "'sideways' is not one of 'open', 'closed'"),
    (["--profile", "nonesuch"], "no profile 'nonesuch' (known: browser, capacity, driver, faults"),
    (["--junit", "gate.xml"], "--junit and --summary write the gate's verdict: add --gate"),
    (["--target", "nowhere.toml"], "nowhere.toml: no such target file"),
    (["--broker-url", "kafka://127.0.0.1:9092"], "must be a amqp:// or pyamqp:// or redis:// "
                                                 "or rediss:// URL, got 'kafka://127.0.0.1:9092'"),
])
def test_bad_flags_start_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 args: list[str], needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code in (1, 2)
    assert needle in result.output
    assert not (tmp_path / "results").exists()


def test_a_broker_restart_needs_a_queue_server(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "p.toml", variants='["queued", "outbox"]',
                           scenarios='["clean", "broker-restart"]')
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile)])
    assert result.exit_code == 1
    assert ("scenarios has broker-restart, which restarts the queue's server: queued need "
            "queue = \"redis\" (a SQLite queue is a file)") in result.output
    assert not (tmp_path / "results").exists()


def test_profile_that_does_not_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text('variants = ["sync"\nusers = [1]\n')
    result = CliRunner().invoke(cli, ["bench", "--profile", str(broken)])
    assert result.exit_code == 1
    assert f"{broken}: not valid TOML" in result.output
    wrong = tiny_profile(tmp_path / "wrong.toml", duration_s='"long"')
    result = CliRunner().invoke(cli, ["bench", "--profile", str(wrong)])
    assert result.exit_code == 1 and "duration_s must be a number" in result.output
    assert not (tmp_path / "results").exists()


def test_port_in_use_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["bench", "--profile", "smoke", "--smtp-port",
                                          str(port)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: --smtp-port {port}: 127.0.0.1:{port} is already in use"
    assert not (tmp_path / "results").exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_crashed_child_stops_the_run_cleanly(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    bench = bench_under_load(tmp_path, run_dir, '["threaded", "sync"]')
    try:
        serving = [pid for pid in processes_of(run_dir)
                   if b"serve\0threaded" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        # gunicorn's workers share the master's command line: the master is the one whose
        # parent is not one of them.
        [server] = [pid for pid in serving if parent_of(pid) not in serving]
        os.kill(server, signal.SIGKILL)  # the gunicorn master dies; its workers are orphaned
        output, _ = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.communicate()
    assert bench.returncode == 1, output
    assert "threaded died during the cell" in output
    document = json.loads((run_dir / "results.json").read_text())
    validate(document)
    assert document["complete"] is False and "died" in document["stopped_reason"]
    assert processes_of(run_dir) == []


@pytest.mark.slow
def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup; the children still go (PR_SET_PDEATHSIG)."""
    run_dir = tmp_path / "run"
    bench = bench_under_load(tmp_path, run_dir, '["threaded"]', output=subprocess.DEVNULL)
    try:
        assert processes_of(run_dir)
        bench.kill()
        bench.wait()
        deadline = time.monotonic() + 30
        while processes_of(run_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_of(run_dir) == []
    finally:
        for pid in processes_of(run_dir):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_capacity_run_stops_a_series_at_the_knee(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """sync with 1 worker x 2 threads at 300 ms SMTP serves about 2 / 0.3 s = 6.7 sign-ups/s:
    3/s holds, 12/s queues past the SLO, and 20/s is not run at all."""
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "capacity.toml", variants='["sync"]',
                           rates="[3, 12, 20]", capacity="true", threads="2")
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    document = json.loads((run_dir / "results.json").read_text())
    validate(document)
    assert [cell["rate"] for cell in document["cells"]] == [3, 12]
    [row] = document["capacity"]
    assert (row["knee_rps"], row["broke_at_rps"], row["skipped_rates"]) == (3, 12, [20])
    assert row["broke_because"].startswith("register p99 ")
    assert row["ended_by"] == "register SLO"
    assert row["predicted_rps"] == pytest.approx(2 / 0.3)
    assert "Capacity: the highest offered rate that held the SLO" in result.output
    # The step not run is not a missing cell: the gate judges the cells that ran.
    rules = tmp_path / "rules.toml"
    rules.write_text('rules = ["*.delivery.missing == 0"]\n')
    gated = CliRunner().invoke(cli, ["gate", str(run_dir), "--rules", str(rules)])
    assert gated.exit_code == 0, gated.output
    assert 'id="capacity"' in (run_dir / "report.html").read_text()


@pytest.mark.slow
def test_arrivals_past_the_cap_are_dropped_and_counted(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One sign-up in flight at most, while each takes over 300 ms (SMTP) at 10 arrivals/s:
    most arrivals cannot start, and every one of them is in the cell's files and figures."""
    from loadtests.cellfiles import read_registrations

    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "capped.toml", variants='["sync"]', max_in_flight=1)
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    [cell] = json.loads((run_dir / "results.json").read_text())["cells"]
    arrivals = cell["arrivals"]
    assert arrivals["dropped"] > arrivals["offered"] / 2
    assert arrivals["started"] + arrivals["dropped"] == arrivals["offered"]
    assert f"{arrivals['dropped']} of {arrivals['offered']} arrivals were dropped" in " ".join(
        cell["warnings"])
    registrations = read_registrations(run_dir / cell["files"])
    dropped = [r for r in registrations if r.dropped]
    assert dropped and all(r.status is None and r.sent_at is None and r.lag_ms is None
                           for r in dropped)
    assert cell["delivery"]["registered"] == arrivals["started"]  # only those reached the app
    gated = CliRunner().invoke(cli, ["gate", str(run_dir)])
    assert gated.exit_code == 1 and "arrivals.dropped" in gated.output


@pytest.mark.parametrize(("args", "needle"), [
    (["--arrival-rate", "-1"], "--arrival-rate must be sign-ups per second from 0"),
    (["--arrival-rate", "nan"], "--arrival-rate must be sign-ups per second from 0"),
    (["--max-in-flight", "0"], "--max-in-flight must be 1..100000"),
    (["--arrival-rate", "5", "--host", "http://127.0.0.1:9"],
     "the test cannot start: GET http://127.0.0.1:9/healthz: "),
])
def test_the_locustfile_refuses_bad_settings_in_one_line(tmp_path: Path, args: list[str],
                                                        needle: str) -> None:
    locustfile = Path(__file__).resolve().parent.parent / "loadtests" / "locustfile.py"
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
               "--users", "1", "-t", "3", "--host", "http://127.0.0.1:9", *args]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_flaky_smtp_server_shows_what_each_variant_loses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fifth of the RCPTs answered 451: sync tells the person (failed visibly), threaded
    tells them to check their email and loses the mail, queued retries and delivers it all.
    Every measured sign-up lands in one bucket."""
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "flaky.toml", variants='["sync", "threaded", "queued"]',
                           scenarios='["smtp-flaky"]', min_signups=40, drain_s=25,
                           inbox_deadline_s=8)  # threaded's lost mail: wait 8 s, not 30
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    cells = {c["variant"]: c for c in json.loads((run_dir / "results.json").read_text())["cells"]}
    assert {c["scenario"] for c in cells.values()} == {"smtp-flaky"}
    for cell in cells.values():
        d, a = cell["delivery"], cell["arrivals"]
        assert (a["dropped"] + d["failed_visibly"] + d["delivered"] + d["refused"]
                + d["missing"]) == a["offered"]
        assert a["offered"] >= 40
    sync, threaded, queued = cells["sync"], cells["threaded"], cells["queued"]
    assert sync["delivery"]["failed_visibly"] > 0 and sync["delivery"]["missing"] == 0
    assert threaded["delivery"]["missing"] > 0 and threaded["delivery"]["failed_visibly"] == 0
    assert queued["delivery"]["missing"] == 0 and queued["delivery"]["failed_visibly"] == 0
    # fakesmtp's own count of what it injected: threaded made one attempt per sign-up, so it
    # lost what was injected into its measured sign-ups.
    faults = threaded["smtp_faults"]
    assert faults["by_rule"] == {"flaky": faults["injected"]} and faults["injected"] > 0
    assert threaded["delivery"]["missing"] <= faults["injected"]
    assert queued["smtp_faults"]["attempts"] > queued["smtp_faults"]["received"]  # retried
    html = (run_dir / "report.html").read_text()
    assert 'id="losses"' in html and "answers 451 (try again later)" in html


@pytest.mark.slow
def test_crashes_show_what_each_variant_loses_and_leave_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app SIGKILLed mid-cell (and started again): threaded loses the emails its threads
    held, sync's failures are all visible, queued's tasks wait in the queue. The consumer
    SIGKILLed: Huey loses the tasks it was running, as its documentation says."""
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "crash.toml", variants='["sync", "threaded", "queued"]',
                           scenarios='["app-crash", "consumer-crash"]', min_signups=60,
                           drain_s=25, inbox_deadline_s=8)
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    cells = {(c["variant"], c["scenario"]): c
             for c in json.loads((run_dir / "results.json").read_text())["cells"]}
    assert set(cells) == {("sync", "app-crash"), ("threaded", "app-crash"),
                          ("queued", "app-crash"), ("queued", "consumer-crash")}
    for cell in cells.values():
        d, a = cell["delivery"], cell["arrivals"]
        assert (a["dropped"] + d["failed_visibly"] + d["delivered"] + d["refused"]
                + d["missing"]) == a["offered"]
        assert [e["what"].split(" (")[0] for e in cell["scenario_events"]][0].startswith("SIGKILL")
        assert cell["valid"], cell["warnings"]
    for variant in ("sync", "threaded", "queued"):
        assert cells[(variant, "app-crash")]["delivery"]["failed_visibly"] > 0  # the down time
    assert cells[("threaded", "app-crash")]["delivery"]["missing"] > 0
    assert cells[("sync", "app-crash")]["delivery"]["missing"] == 0
    assert cells[("queued", "app-crash")]["delivery"]["missing"] == 0
    assert cells[("queued", "consumer-crash")]["delivery"]["missing"] > 0
    # Killed and started again: the fault has an end, so lateness is counted against it.
    assert all(cell["delivery"]["late"] is not None for cell in cells.values())
    # A sign-up that met no server is a visible failure, not a crash of the load generator.
    for log in run_dir.glob("cells/*/locust.log"):
        assert "Traceback" not in log.read_text(encoding="utf-8"), log
    assert processes_of(run_dir) == []


@pytest.mark.slow
@pytest.mark.parametrize("chromium", ["present", "missing"])
def test_the_browser_probe_runs_alongside_the_load_or_says_why_not(
        chromium: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--browser N: N sign-ups in headless Chromium during each cell, as a browser block in
    results.json with every sign-up kept beside it; the baseline's calibrate the INP proxy.
    Without Chromium the cells go on, valid, and say why they have none."""
    if chromium == "present":
        chromium_or_skip()
    else:
        monkeypatch.setenv("MAILLAB_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.chdir(tmp_path)
    # Chromium shares the two cores with locust (the browser profile allows 50 ms of lag).
    profile = tiny_profile(tmp_path / "browser.toml", variants='["baseline", "sync"]',
                           max_start_lag_ms=200)
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--browser", "3",
                                      "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    document = json.loads((run_dir / "results.json").read_text())
    baseline, cell = document["cells"]
    assert cell["variant"] == "sync" and cell["valid"] and baseline["valid"]
    if chromium == "present":
        browser = cell["browser"]
        assert (browser["count"], browser["trusted"]) == (3, 3)
        assert browser["click_to_confirmation_p50_ms"] >= LATENCY_MS  # sync waits for SMTP
        assert browser["render_p50_ms"] is not None and browser["response_p75_ms"] is not None
        kept = (run_dir / cell["files"] / BROWSER_FILE).read_text().splitlines()
        assert len(kept) == 1 + 3  # the header and every sign-up behind the block
        calibration = document["inp_calibration"]
        assert calibration["reference"] == [f"baseline@{LATENCY_MS}ms/{RATE:g}rps"]
        proxy = cell["inp_proxy"]
        assert proxy["calibrated_p75_ms"] == pytest.approx(
            proxy["p75_ms"] - proxy["render_allowance_ms"] + calibration["allowance_ms"],
            abs=0.1)
        assert "waits p75" in result.output
        assert 'id="browser"' in (run_dir / "report.html").read_text()
    else:
        assert cell["browser"] is None and document["inp_calibration"] is None
        assert any("no browser figures" in w and "MAILLAB_CHROMIUM" in w
                   for w in cell["warnings"])


@pytest.mark.slow
def test_fakesmtp_moves_when_a_picked_port_is_taken_before_it_binds(tmp_path: Path) -> None:
    """A free port picked a moment ago can be taken by any new connection before fakesmtp
    binds it: the run starts fakesmtp again on new ports rather than going on against
    nothing (its error line also says "HTTP API": not to be mistaken for ready). Ports given
    on the command line are not moved: the failure names them."""
    from loadtests.profiles import load_profile
    from maillab.bench import Bench
    from maillab.processes import ProcessError

    profile = load_profile("smoke")
    bench = Bench(profile, tmp_path / "run", tmp_path)
    (tmp_path / "run").mkdir()
    taken = bench.api_port
    with socket.socket() as squatter, bench.supervisor:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        bench._start_smtp()  # noqa: SLF001
        assert bench.api_port != taken
        assert bench._smtp_call("GET", "/api/stats")["received"] == 0  # noqa: SLF001
    given = Bench(profile, tmp_path / "given", tmp_path, smtp_port=free_port(),
                  api_port=taken)
    (tmp_path / "given").mkdir()
    with socket.socket() as squatter, given.supervisor:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with pytest.raises(ProcessError, match=f"127.0.0.1:{taken}: Address already in use"):
            given._start_smtp()  # noqa: SLF001


@pytest.mark.slow
def test_cells_on_a_provider_like_smtp_server(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """smtp = ["plain", "starttls+auth"]: each emailing variant runs on both, the baseline on
    plain only; the app logs in over STARTTLS with the run's certificate trusted, every email
    arrives, fakesmtp counts a STARTTLS and an AUTH per delivery, and neither the password nor
    the key is left in the results."""
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "tls.toml", variants='["baseline", "sync", "queued"]',
                           latencies_ms="[0]", smtp='["plain", "starttls+auth"]')
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    cells = json.loads((run_dir / "results.json").read_text())["cells"]
    assert sorted((c["variant"], c["smtp"]) for c in cells) == [
        ("baseline", "plain"), ("queued", "plain"), ("queued", "starttls+auth"),
        ("sync", "plain"), ("sync", "starttls+auth")]
    for cell in cells:
        assert cell["valid"], cell["warnings"]
        if cell["variant"] != "baseline":
            d = cell["delivery"]
            assert d["missing"] == 0 and d["failed_visibly"] == 0 and d["delivered"] > 0
    tls = next(c for c in cells if c["variant"] == "sync" and c["smtp"] == "starttls+auth")
    assert tls["files"] == "cells/sync-0ms-10rps-starttls-auth"
    assert (run_dir / tls["files"] / "samples.csv.gz").exists()
    log = (run_dir / "fakesmtp-starttls-auth.log").read_text()
    assert "STARTTLS required" in log and "AUTH required" in log
    everything = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*")
                         if p.is_file() and p.suffix in (".json", ".log", ".html", ".csv"))
    assert "BEGIN PRIVATE KEY" not in everything and "MAILLAB_SMTP_PASSWORD" not in everything
    html = (run_dir / "report.html").read_text()
    assert "<small>starttls+auth</small>" in html  # the cells table names the mode
    assert "baseline @ 0 ms · 10rps · starttls+auth" not in html  # not in the grid: no note
    assert processes_of(run_dir) == []


@pytest.mark.slow
def test_a_broker_restart_is_counted_and_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's private Redis (Huey's queue) and RabbitMQ (Celery's broker) stopped mid-cell
    and started again: sign-ups meanwhile fail visibly, what was queued survives the clean
    stop, and no broker, port mapper or worker outlives the run."""
    pytest.importorskip("celery", reason="the celery extra is not installed")
    for binary in ("redis-server", "epmd"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed")
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "restart.toml",
                           variants='["queued", "celery-late-rabbitmq"]', queue='"redis"',
                           scenarios='["broker-restart"]', min_signups=60, drain_s=30,
                           inbox_deadline_s=8)
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    document = json.loads((run_dir / "results.json").read_text())
    cells = {c["variant"]: c for c in document["cells"]}
    assert set(cells) == {"queued", "celery-late-rabbitmq"}
    assert document["environment"]["services"]["rabbitmq"].startswith("a private RabbitMQ")
    for variant, kind in (("queued", "redis"), ("celery-late-rabbitmq", "rabbitmq")):
        cell = cells[variant]
        d, a = cell["delivery"], cell["arrivals"]
        assert (a["dropped"] + d["failed_visibly"] + d["delivered"] + d["refused"]
                + d["missing"]) == a["offered"]
        events = [e["what"] for e in cell["scenario_events"]]
        assert events[:2] == [f"SIGTERM to the {kind} broker",
                              f"{kind} broker started again"], events
        assert d["failed_visibly"] > 0, variant  # the sign-ups the broker was away for
        assert d["missing"] == 0, variant  # the clean stop kept what was queued
    assert processes_of(run_dir) == []


@pytest.mark.slow
def test_interrupting_a_celery_run_stops_its_brokers_and_worker(tmp_path: Path) -> None:
    pytest.importorskip("celery", reason="the celery extra is not installed")
    if shutil.which("epmd") is None:
        pytest.skip("rabbitmq-server is not installed")
    run_dir = tmp_path / "run"
    bench = bench_under_load(tmp_path, run_dir, '["celery-early-rabbitmq"]')
    with stopping(bench):
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in processes_of(run_dir)}
        assert {"beam.smp", "epmd"} <= names, names
    output = interrupted(bench)
    assert bench.returncode == 130, output
    assert processes_of(run_dir) == []


@pytest.mark.slow
def test_celery_on_a_given_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--broker-url: the machine's RabbitMQ instead of a private one (skipped without one);
    the run empties only the lab's own queue on it, and cannot restart it."""
    pytest.importorskip("celery", reason="the celery extra is not installed")
    url = os.environ.get("MAILLAB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means no broker here
        pytest.skip(f"no RabbitMQ at {url.split('@')[-1]} (set MAILLAB_TEST_RABBITMQ_URL): "
                    f"{exc}")
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "given.toml", variants='["celery-late-rabbitmq"]')
    run_dir = tmp_path / "results" / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out", str(run_dir),
                                      "--broker-url", url])
    assert result.exit_code == 0, result.output
    document = json.loads((run_dir / "results.json").read_text())
    [cell] = document["cells"]
    assert cell["delivery"]["delivered"] == cell["delivery"]["registered"] > 0
    assert "rabbitmq" not in document["environment"]["services"]  # none started
    assert document["environment"]["services"]["celery broker"].startswith("given, at amqp://")
    assert not (run_dir / "rabbitmq").exists()
    restart = tiny_profile(tmp_path / "restart.toml", variants='["celery-late-rabbitmq"]',
                           scenarios='["broker-restart"]')
    result = CliRunner().invoke(cli, ["bench", "--profile", str(restart), "--out",
                                      str(tmp_path / "again"), "--broker-url", url])
    assert result.exit_code == 1
    assert "broker was given with --broker-url: the run restarts only the servers it started" \
        in result.output
    assert processes_of(tmp_path / "again") == []
