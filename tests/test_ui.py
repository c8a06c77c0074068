"""`maillab ui`: every variant plus locust's web UI; a swarm started from the UI's form."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from maillab.ports import free_port, port_in_use
from tests.conftest import read_until
from tests.test_bench import processes_of


def post_form(url: str, fields: dict[str, str]) -> dict:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
        return json.loads(r.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_ui_swarm_on_a_chosen_variant(tmp_path: Path) -> None:
    smtp, api, web = free_port(), free_port(), free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "maillab", "ui", "--smtp-port", str(smtp), "--smtp-api-port",
         str(api), "--web-port", str(web)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dirs: list[Path] = []
    try:
        lines = read_until(ui, "Ctrl-C stops everything", 90)
        assert any(f"http://127.0.0.1:{web}/" in line for line in lines)
        variant_ports = [int(found.group(1)) for line in lines if (found := re.search(
            r"^(?:baseline|sync|threaded|queued|outbox) +http://127\.0\.0\.1:(\d+)/register",
            line))]
        assert len(variant_ports) == 5, lines
        run_dirs = list((tmp_path / "results").iterdir())

        started = post_form(f"http://127.0.0.1:{web}/swarm", {
            "user_count": "1", "spawn_rate": "1", "host": "", "variant": "sync",
            "smtp_latency": "150ms", "smtp_faults": "none", "inbox_deadline": "10",
            "render_allowance_ms": "16.7", "warmup": "0", "smtp_api": f"http://127.0.0.1:{api}"})
        assert started["success"] is True, started
        deadline = time.monotonic() + 30
        register = None
        while time.monotonic() < deadline:
            rows = get_json(f"http://127.0.0.1:{web}/stats/requests")["stats"]
            register = next((r for r in rows if r["name"] == "register"), None)
            if register and register["num_requests"] >= 2:
                break
            time.sleep(0.5)
        assert register is not None and register["num_requests"] >= 2
        # The latency chosen in the UI reached fakesmtp, and sync waited for it.
        assert register["min_response_time"] >= 150
        assert get_json(f"http://127.0.0.1:{api}/api/config")["latency"]["eom"] == "150ms"
        stop = urllib.request.Request(f"http://127.0.0.1:{web}/stop", data=b"", method="POST")
        urllib.request.urlopen(stop, timeout=30).close()
        # Open loop from the same form: one user runs a schedule of 20 sign-ups/s.
        started = post_form(f"http://127.0.0.1:{web}/swarm", {
            "user_count": "1", "spawn_rate": "1", "host": "", "variant": "threaded",
            "arrival_rate": "20", "smtp_latency": "0ms", "smtp_faults": "none",
            "inbox_deadline": "10", "render_allowance_ms": "16.7", "warmup": "0",
            "smtp_api": f"http://127.0.0.1:{api}"})
        assert started["success"] is True, started
        deadline = time.monotonic() + 30
        lag = None
        while time.monotonic() < deadline:
            rows = get_json(f"http://127.0.0.1:{web}/stats/requests")["stats"]
            lag = next((r for r in rows if r["name"] == "start_lag"), None)
            if lag and lag["num_requests"] >= 20:
                break
            time.sleep(0.5)
        assert lag is not None and lag["num_requests"] >= 20, rows
        assert lag["num_failures"] == 0  # nothing dropped
        urllib.request.urlopen(stop, timeout=30).close()
        ui.send_signal(signal.SIGINT)
        output, _ = ui.communicate(timeout=60)
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.communicate()
        for run_dir in (tmp_path / "results").glob("*"):
            for pid in processes_of(run_dir):  # never leave a server behind, even on failure
                os.kill(pid, signal.SIGKILL)
    assert ui.returncode == 0, output
    assert "every process it started is stopped" in output
    assert run_dirs and processes_of(run_dirs[0]) == []
    for port in (smtp, api, web, *variant_ports):
        assert not port_in_use("127.0.0.1", port)
