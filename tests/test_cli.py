"""The CLI: clear one-line errors, and real serve/worker processes that stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from maillab.cli import cli
from maillab.ports import free_port, port_in_use
from maillab.processes import ManagedProcess
from tests.flow_helpers import PASSWORD
from tests.smtp_sink import Sink


def test_unknown_variant_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["serve", "pigeon"])
    assert result.exit_code == 2
    assert "'pigeon' is not one of" in result.output


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "sync", "--port", str(port)],
                                    env={"MAILLAB_INSTANCE_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: --port {port}: 127.0.0.1:{port} is already in use"
    assert not (tmp_path / "maillab.db").exists()


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "sync", "--port", str(free_port())],
                                env={"MAILLAB_INSTANCE_DIR": str(tmp_path),
                                     "MAILLAB_SMTP_TIMEOUT": "never"})
    assert result.exit_code == 1
    assert "MAILLAB_SMTP_TIMEOUT must be a number" in result.output


def test_bad_flag_values_are_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["serve", "sync", "--workers", "0"]).exit_code == 2
    assert runner.invoke(cli, ["worker", "--threads", "0"]).exit_code == 2


# --- real processes -------------------------------------------------------------------------

def output_of(process: ManagedProcess) -> str:
    return process.log_path.read_text()


def post_json(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def get_status(url: str) -> int:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


@pytest.mark.slow
def test_serve_sync_and_queued_with_worker(tmp_path: Path, sink: Sink,
                                           spawn: Callable[..., ManagedProcess]) -> None:
    env = {**os.environ, "MAILLAB_SMTP_PORT": str(sink.port),
           "MAILLAB_PASSWORD_HASH": "pbkdf2:sha256:1000"}
    sync_env = {**env, "MAILLAB_INSTANCE_DIR": str(tmp_path / "sync")}
    queued_env = {**env, "MAILLAB_INSTANCE_DIR": str(tmp_path / "queued")}
    sync_port, queued_port, metrics_port = free_port(), free_port(), free_port()

    sync = spawn(["serve", "sync", "--port", str(sync_port), "--workers", "2"], sync_env,
                 "listening on")
    queued = spawn(["serve", "queued", "--port", str(queued_port), "--workers", "1"],
                   queued_env, "listening on")
    worker = spawn(["worker", "--metrics-port", str(metrics_port)], queued_env, "consuming")
    assert f"maillab sync listening on http://127.0.0.1:{sync_port}" in output_of(sync)

    for name, port in (("sync", sync_port), ("queued", queued_port)):
        to = f"cli-{name}@maillab.test"
        status, body = post_json(f"http://127.0.0.1:{port}/register",
                                 {"email": to, "password": PASSWORD})
        assert (status, body["status"]) == (202, "pending")
        [message] = sink.handler.wait_for(to, timeout=20)
        link = message.links[0]
        assert link.startswith(f"http://127.0.0.1:{port}/verify/")
        assert get_status(link) == 200
        assert get_status(link) == 409

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        assert 'maillab_emails_delivered_total{variant="queued-worker"} 1.0' in r.read().decode()

    assert sync.stop(sig=signal.SIGTERM) == 0
    assert queued.stop(sig=signal.SIGINT) == 0
    assert worker.stop(sig=signal.SIGTERM) == 0
    assert "1 delivered, 0 failed" in output_of(worker)
    for port in (sync_port, queued_port, metrics_port):
        assert not port_in_use("127.0.0.1", port), f"port {port} still bound"
