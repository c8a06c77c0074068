"""fakesmtp speed: ingest rate vs. a bare aiosmtpd sink, eom latency accuracy, long-poll wake-up.

Method: each server runs in this process (its own loop thread); the load comes from
``python -m fakesmtp.bench`` in a separate process, so on 2 cores the client has a core of its
own and the client's own clock reports the rate. fakesmtp and the sink are measured in
alternating rounds in the same run, and medians are compared.

    .venv/bin/python -m pytest benchmarks/test_fakesmtp_ingest.py --benchmark-only -s
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from fakesmtp.config import Config
from fakesmtp.server import FakeSMTP

ROUNDS = 5
REUSE = ["--messages", "4000", "--concurrency", "8"]
NEW_CONNECTION = ["--messages", "2000", "--concurrency", "8", "--new-connection"]


def run_bench(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "fakesmtp.bench", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class _Sink:
    """The baseline: a handler that accepts everything and keeps nothing."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@pytest.fixture(scope="module")
def sink_port() -> Iterator[int]:
    with socket.socket() as sock:  # Controller cannot bind port 0: find a free one
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port,
                            server_hostname="sink.localhost")
    controller.start()
    yield port
    controller.stop()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSMTP]:
    with FakeSMTP(seed=1) as server:
        yield server


def _versus_sink(benchmark, capsys, fake: FakeSMTP, sink_port: int, args: list[str],
                 label: str, floor: float) -> None:
    fake_rates: list[float] = []
    sink_rates: list[float] = []

    def setup() -> None:  # untimed: the sink's round, then a clean store for ours
        sink_rates.append(run_bench("--port", str(sink_port), *args)["rate"])
        fake.clear_messages()

    def target() -> None:
        fake_rates.append(run_bench("--port", str(fake.smtp_port), *args)["rate"])

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1)
    ours, base = statistics.median(fake_rates), statistics.median(sink_rates)
    ratio = ours / base
    benchmark.extra_info.update(
        {"fakesmtp_msgs_per_s": fake_rates, "sink_msgs_per_s": sink_rates,
         "median_ratio": ratio}
    )
    with capsys.disabled():
        print(f"\n[{label}] fakesmtp median {ours:.0f} msg/s {[round(r) for r in fake_rates]}; "
              f"aiosmtpd sink median {base:.0f} msg/s {[round(r) for r in sink_rates]}; "
              f"ratio {ratio:.3f}")
    assert ours >= floor, f"{ours:.0f} msg/s is below {floor}"
    assert ratio >= 0.90, f"fakesmtp at {ratio:.1%} of the bare sink"


def test_ingest_reusing_connections(benchmark, capsys, fake, sink_port) -> None:
    _versus_sink(benchmark, capsys, fake, sink_port, REUSE, "reuse, 8 connections", 2000)


def test_ingest_new_connection_per_message(benchmark, capsys, fake, sink_port) -> None:
    _versus_sink(benchmark, capsys, fake, sink_port, NEW_CONNECTION,
                 "new connection per message, 8 at a time", 800)


def test_eom_latency_accuracy(benchmark, capsys) -> None:
    """eom at 200 ms, 200 concurrent sessions (starts spread over 200 ms), 1000 messages:
    the client sees p50 within 5 ms and p99 within 20 ms of 200 ms."""
    with FakeSMTP(config=Config.build({"eom": "200ms"}), seed=1) as server:
        results: list[dict[str, Any]] = []

        def target() -> None:
            results.append(run_bench(
                "--mode", "latency", "--port", str(server.smtp_port), "--messages", "1000",
                "--concurrency", "200", "--ramp", "0.2",
            ))

        benchmark.pedantic(target, rounds=1, iterations=1)
        server_side = server.stats()["latency"]["eom"]
    result = results[0]
    benchmark.extra_info.update({"client": result, "server": server_side})
    with capsys.disabled():
        print(f"\n[eom 200ms x 200 sessions] client p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; server observed "
              f"p50 {server_side['observed_p50_ms']} ms, p99 {server_side['observed_p99_ms']} ms")
    assert abs(result["p50_ms"] - 200) <= 5
    assert abs(result["p99_ms"] - 200) <= 20


def test_long_poll_wakeup(benchmark, capsys) -> None:
    """Final dot written -> the waiting GET /api/messages?to=..&wait=.. has its response."""
    with FakeSMTP(seed=1) as server:
        results: list[dict[str, Any]] = []

        def target() -> None:
            results.append(run_bench(
                "--mode", "wakeup", "--port", str(server.smtp_port),
                "--api-port", str(server.api_port), "--messages", "200",
            ))

        benchmark.pedantic(target, rounds=1, iterations=1)
    result = results[0]
    benchmark.extra_info.update(result)
    with capsys.disabled():
        print(f"\n[long-poll wake-up, 200 messages] p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
    assert result["p50_ms"] < 5
