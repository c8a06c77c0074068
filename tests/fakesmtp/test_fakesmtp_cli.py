"""``python -m fakesmtp`` (the ``maillab smtp`` command) as a real subprocess, and bad flags."""

from __future__ import annotations

import json
import queue
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from fakesmtp.cli import smtp
from maillab.ports import free_port, port_in_use


def _port_is_free(port: int) -> bool:
    return not port_in_use("127.0.0.1", port)


class Proc:
    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "fakesmtp", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, needle: str, timeout: float = 15.0) -> list[str]:
        seen: list[str] = []
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"exited before {needle!r}: {seen}")
            seen.append(line)
            if needle in line:
                return seen

    def finish(self, timeout: float = 15.0) -> tuple[int, str]:
        _, err = self.popen.communicate(timeout=timeout)
        self._reader.join(timeout)
        return self.popen.returncode, err


@pytest.fixture
def run_cli() -> Iterator:
    procs: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc(*args)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.communicate(timeout=15)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_cleanly_on_signal(run_cli, sig) -> None:
    port, api_port = free_port(), free_port()
    proc = run_cli("--port", str(port), "--api-port", str(api_port), "--latency", "10ms",
                   "--fault", "id=nx,phase=rcpt,reply=550,to=*@fail.test", "--seed", "4")
    lines = proc.read_until("HTTP API")
    assert f"smtp://127.0.0.1:{port}" in lines[0]
    assert f"http://127.0.0.1:{api_port}/" in lines[1]
    assert "eom=10ms" in proc.read_until("latency")[0]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        refused = client.sendmail("a@x.test", ["ok@x.test", "no@fail.test"], b"Subject: s\r\n\r\nb")
    assert list(refused) == ["no@fail.test"]
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/messages?to=ok@x.test") as r:
        assert json.load(r)[0]["rcpt_tos"] == ["ok@x.test"]
    proc.popen.send_signal(sig)
    code, err = proc.finish()
    assert code == 0, err
    assert _port_is_free(port) and _port_is_free(api_port)


@pytest.mark.parametrize("which", ["--port", "--api-port"])
def test_port_in_use_is_a_one_line_error(run_cli, which) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = "--api-port" if which == "--port" else "--port"
        proc = run_cli(which, str(taken), other, "0")
        code, err = proc.finish()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f":{taken}" in lines[0] and "in use" in lines[0], err
    assert ("SMTP" if which == "--port" else "HTTP API") in lines[0]


def test_bad_flag_in_a_subprocess_starts_nothing(run_cli) -> None:
    port = free_port()
    code, err = run_cli("--port", str(port), "--latency", "fast").finish()
    assert code == 2 and "--latency" in err and "uniform:100ms..300ms" in err
    assert _port_is_free(port)


@pytest.mark.parametrize(
    ("args", "flag", "hint"),
    [
        (["--latency", "soon"], "--latency", "accepted:"),
        (["--phase-latency", "helo=1s"], "--phase-latency", "phases: connect"),
        (["--phase-latency", "eom"], "--phase-latency", "PHASE=SPEC"),
        (["--fault", "phase=eom,reply=200"], "--fault", "4xx or 5xx"),
        (["--fault", "id=a,phase=eom", "--fault", "id=a,phase=rcpt"], "--fault", "used twice"),
        (["--port", "70000"], "--port", "0<=x<=65535"),
        (["--max-messages", "0"], "--max-messages", "x>=1"),
        (["--seed", "abc"], "--seed", "not a valid integer"),
        (["--fault", "phase=eom,every=1e999"], "--fault", "every='1e999' is not a finite number"),
        (["--fault", "phase=mail,rate=Infinity"], "--fault", "rate='Infinity' is not a finite"),
        (["--fault", "phase=eom,prob=nan"], "--fault", "prob='nan' is not a finite number"),
        (["--fault", "phase=connect,conns=-inf"], "--fault", "conns='-inf' is not a finite"),
        (["--latency", "normal:nan,1ms"], "--latency", "duration='nan' is not a finite number"),
        (["--latency", "uniform:0ms..infms"], "--latency", "duration='inf' is not a finite"),
        (["--phase-latency", "rcpt=exp:Infinitys"], "--phase-latency", "is not a finite number"),
    ],
)
def test_bad_flags_name_the_flag(args, flag, hint) -> None:
    result = CliRunner().invoke(smtp, args)
    assert result.exit_code == 2, result.exception  # a usage error, not a crash
    assert flag in result.output and hint in result.output, result.output


@pytest.mark.parametrize(
    "args", [["--fault", "phase=eom,every=1e999"], ["--latency", "uniform:0ms..infms"]]
)
def test_non_finite_flag_is_one_error_line_in_a_subprocess(run_cli, args) -> None:
    code, err = run_cli("--port", "0", "--api-port", "0", *args).finish()
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and args[0] in errors[0] and "not a finite number" in errors[0]


def test_help_documents_the_syntaxes() -> None:
    result = CliRunner().invoke(smtp, ["--help"])
    assert result.exit_code == 0
    for text in ("lognormal:p50=200ms,p99=2s", "phase=rcpt,reply=550", "prob=P", "rate=N"):
        assert text in result.output


def test_smtp_bench_refuses_a_non_loopback_host() -> None:
    from click.testing import CliRunner

    from fakesmtp.bench import smtp_bench

    result = CliRunner().invoke(smtp_bench, ["--host", "192.0.2.1", "--messages", "1"])
    assert result.exit_code == 2
    assert "not a loopback address" in result.output
