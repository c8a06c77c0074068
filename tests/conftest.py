"""Fixtures: a real SMTP sink on a free port, app factories per variant, a real consumer."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apps.core import create_app
from apps.core.registry import VARIANTS
from maillab.ports import free_port
from maillab.processes import ManagedProcess
from tests.smtp_sink import Sink, SinkHandler

# Cheap hashing keeps the suite fast; the default (scrypt) is exercised in test_config.
FAST_HASH = "pbkdf2:sha256:1000"


@pytest.fixture(autouse=True)
def _builtin_variants() -> Iterator[None]:
    """Each test starts and ends with maillab's own variants active (a bench with --target or
    a loaded run of another target makes its variants the ones the lab answers for)."""
    from loadtests.target import activate

    activate(None)
    yield
    activate(None)


@dataclass(frozen=True)
class TinyRun:
    root: Path  # the working folder the bench ran in: results/ and results/latest are here
    run_dir: Path
    output: str  # what `maillab bench` printed


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRun]:
    """One finished tiny run (4 variants at one latency and one rate, with the enumeration
    probe), shared by the tests that check the bench end to end and the report drawn from
    it: a bench run is the suite's dearest fixture. Tests that use it carry one xdist group
    mark; none of them may change the run's own results."""
    from click.testing import CliRunner

    from maillab.cli import cli
    from tests.test_bench import tiny_profile

    root = tmp_path_factory.mktemp("tiny-bench")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        # 40 sign-ups a cell: enough for the comparison to find a fifth's slowdown in one
        # variant on a busy machine (at 20, p was 0.012 against 0.01 under two test processes).
        profile = tiny_profile(root / "tiny.toml", enumeration_samples=10, min_signups=40)
        run_dir = root / "results" / "run"
        result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out",
                                          str(run_dir)])
    # Outside the chdir: a session fixture that yielded inside it would leave every later
    # test of the process in this folder.
    assert result.exit_code == 0, result.output
    yield TinyRun(root, run_dir, result.output)


@pytest.fixture
def sink_factory() -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []

    def start(**handler_options: Any) -> Sink:
        sink = Sink(SinkHandler(**handler_options), free_port()).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture
def sink(sink_factory: Callable[..., Sink]) -> Sink:
    return sink_factory()


@pytest.fixture
def make_app(tmp_path: Path, sink: Sink) -> Iterator[Callable[..., Flask]]:
    """Build an app for a variant, in its own instance folder, sending to ``sink``."""
    count = 0
    built: list[Flask] = []

    def build(variant: str, **config: Any) -> Flask:
        nonlocal count
        count += 1
        settings = {
            "TESTING": True,
            "INSTANCE_DIR": str(tmp_path / f"instance-{count}"),
            "SMTP_PORT": sink.port,
            "SMTP_TIMEOUT": 5.0,
            "PASSWORD_HASH": FAST_HASH,
            "QUEUE_RETRY_DELAY": 0.2,
        }
        settings.update(config)
        app = create_app(variant, settings)
        built.append(app)
        return app

    yield build
    # After the consumers (run_consumer is requested later, so torn down first): a pool's
    # open connections (psycopg) would otherwise warn when a later test's garbage collection
    # frees them, and fail that test under filterwarnings=error.
    for app in built:
        close_database(app)
        close = getattr(app.extensions["mailer"], "close", None)  # celery's broker connections
        if close is not None:
            close()


@pytest.fixture
def run_consumer() -> Iterator[Callable[[Flask], Any]]:
    """Start the real consumer of an app's variant in this process: a Huey consumer (threads)
    for queued, the relay (in a thread) for outbox. Returns what counts its work; stopped,
    gracefully, after the test."""
    running: list[Callable[[], None]] = []
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def start(app: Flask) -> Any:
        if app.config["VARIANT"] == "outbox":
            from apps.outbox.relay import Relay

            relay = Relay(app, threads=2)
            thread = threading.Thread(target=relay.run, name="test-relay")
            thread.start()

            def stop_relay() -> None:
                relay.stop()
                thread.join(30)
                close_database(app)

            running.append(stop_relay)
            return relay
        from apps.queued.worker import build_consumer

        consumer, stats = build_consumer(app, threads=2)
        consumer.start()

        def stop_consumer() -> None:
            consumer.stop(graceful=True)
            close_database(app)

        running.append(stop_consumer)
        return stats

    yield start
    for stop in running:
        stop()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def close_database(app: Flask) -> None:
    """Close the connections the consumer left in the app's pool: a test that disposed of
    the engine while the consumer ran leaves it a new pool, whose open connections (psycopg)
    would otherwise warn when some later test's garbage collection frees them."""
    app.extensions["maillab.db"].engine.dispose()


# The in-process flow of each variant whose consumer runs here too (run_consumer); celery's
# needs a broker and a worker process: tests/test_celery.py.
@pytest.fixture(params=[v for v in VARIANTS if v != "celery"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ManagedProcess]]:
    """Start ``maillab ARGS`` and wait for a line matching ``ready``; stopped after the test."""
    started: list[ManagedProcess] = []

    def start(args: list[str], env: dict[str, str], ready: str) -> ManagedProcess:
        name = args[0] + str(len(started))
        process = ManagedProcess(name, [sys.executable, "-m", "maillab", *args], env,
                                 tmp_path / f"{name}.log")
        started.append(process)
        process.wait_for_line(ready, timeout=30)
        return process

    yield start
    for process in started:
        process.stop()


def chromium_or_skip() -> None:
    """Skip the calling test, saying why, unless Playwright and a Chromium are here."""
    from maillab.probe import ProbeUnavailable, find_chromium

    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    try:
        find_chromium()
    except ProbeUnavailable as exc:
        pytest.skip(str(exc))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Captured output a hostile-input test logged (undecodable bytes, kept as surrogates)
    made text that pytest-xdist cannot send from its worker, which then stopped the whole
    run; it is kept with the bytes escaped instead."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]


def read_until(process: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    """``process``'s output lines up to the first holding ``text`` (``maillab ui``'s "Ctrl-C
    stops everything": all is up); fails the test if it ends or the deadline passes first."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} within {timeout} s: {''.join(lines)}")
