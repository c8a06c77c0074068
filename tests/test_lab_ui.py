"""The Lab tab of `maillab ui`, driven in real Chromium: a run started from the lab's start
form, faults and a crash at a click, and what each costs counted live; the tab's last counts
against the same run summarised by the bench's code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadtests.lab import WEBUI_BUILD
from maillab.ports import free_port, port_in_use
from tests.conftest import chromium_or_skip, read_until
from tests.test_bench import processes_of

WEBUI = WEBUI_BUILD / "index.html"
README_SHOT = Path(__file__).resolve().parent.parent / "docs" / "lab-tab.png"


@dataclass
class Ui:
    web: str
    api: str
    run_root: Path
    process: subprocess.Popen[Any]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[Ui]:
    smtp, api, web = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "maillab", "ui", "--smtp-port", str(smtp), "--smtp-api-port",
         str(api), "--web-port", str(web), "--inbox-deadline", "6"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        read_until(process, "Ctrl-C stops everything", 120)
        yield Ui(f"http://127.0.0.1:{web}", f"http://127.0.0.1:{api}", tmp_path / "results",
                 process)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        for run_dir in (tmp_path / "results").glob("*"):
            leftovers = processes_of(run_dir)
            for pid in leftovers:  # never leave a server behind, even on failure
                os.kill(pid, signal.SIGKILL)
            assert not leftovers, f"processes left running: {leftovers}"
    for port in (smtp, api, web):
        assert not port_in_use("127.0.0.1", port)


def figure(page: Any, name: str) -> int:
    text = page.get_by_test_id(f"figure-{name}").inner_text()
    return int(text) if re.fullmatch(r"\d+", text) else 0


def wait_for(page: Any, what: str, check: Any, timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"{what} within {timeout_s:g} s; the tab shows: "
                         f"{page.get_by_test_id('figure-delivered').inner_text()} delivered, "
                         f"{page.get_by_test_id('figure-lost_silently').inner_text()} lost, "
                         f"{page.get_by_test_id('figure-failed_visibly').inner_text()} failed")


def start(page: Any, variant: str, rate: str) -> None:
    page.get_by_label("Variant").click()
    page.get_by_role("option", name=variant, exact=True).click()
    page.get_by_label("Sign-ups per second").fill(rate)
    page.get_by_role("button", name="Start").click()
    page.get_by_test_id("figure-delivered").wait_for(timeout=20_000)


def register_failures(ui: Ui) -> tuple[int, int]:
    rows = get_json(f"{ui.web}/stats/requests")["stats"]
    register = next(r for r in rows if r["name"] == "register")
    return register["num_requests"], register["num_failures"]


def stop(page: Any, ui: Ui) -> dict[str, Any]:
    """Stop the test and wait until the tab's figures are final (nothing in flight, nothing
    queued, no SMTP conversation open)."""
    page.get_by_role("button", name="Stop").click()
    page.get_by_test_id("new-run").wait_for(timeout=30_000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = get_json(f"{ui.web}/lab/state")
        if not state["running"] and state["drained"]:
            return dict(state)
        time.sleep(0.5)
    raise AssertionError(f"email still in flight 30 s after the stop: {state}")


@pytest.mark.slow
@pytest.mark.skipif(not WEBUI.is_file(), reason="the lab's web UI is not built (make webui "
                    "needs npm)")
def test_the_lab_tab_shows_what_an_outage_and_a_crash_cost(ui: Ui) -> None:
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    from maillab.probe import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.goto(ui.web)
        # threaded at 10 sign-ups/s, from the lab's own start form.
        start(page, "threaded", "10")
        wait_for(page, "emails delivered", lambda: figure(page, "delivered") >= 10)
        assert figure(page, "lost_silently") == 0 and figure(page, "failed_visibly") == 0
        page.get_by_test_id("action-smtp-outage").click()
        wait_for(page, "threaded losing email to the outage",
                 lambda: figure(page, "lost_silently") >= 5)
        requests, failures = register_failures(ui)
        assert requests > 0 and failures == 0  # every POST still answered "check your email"
        page.get_by_test_id("action-smtp-clear").click()
        lost = figure(page, "lost_silently")
        page.get_by_test_id("action-app-crash").click()
        wait_for(page, "sign-ups failing visibly while the app is down",
                 lambda: figure(page, "failed_visibly") >= 3)
        wait_for(page, "the app back", lambda: page.get_by_test_id("figure-app-state")
                 .inner_text() == "running")
        log = page.get_by_test_id("action-log").inner_text()
        assert "smtp-outage" in log and "app-crash" in log and "SIGKILL" in log
        page.mouse.move(0, 0)  # no tooltip over the picture
        page.screenshot(path=str(README_SHOT) if os.environ.get("MAILLAB_README_SHOT")
                        else str(ui.run_root.parent / "lab-tab.png"), full_page=True)
        final = stop(page, ui)
        assert final["delivery"]["missing"] >= lost

        # The same window summarised by the bench's code: the run as a bench cell.
        with page.expect_download() as download:
            page.get_by_test_id("download-run").click()
        archive = ui.run_root.parent / "run.zip"
        download.value.save_as(archive)
        with zipfile.ZipFile(archive) as opened:
            [name] = [n for n in opened.namelist() if n.endswith("results.json")]
            cell = json.loads(opened.read(name))["cells"][0]
            assert any(n.endswith("report.html") for n in opened.namelist())
        for bucket in ("registered", "delivered", "missing", "failed_visibly", "refused",
                       "duplicates"):
            assert cell["delivery"][bucket] == final["delivery"][bucket], bucket
        for count in ("offered", "started", "dropped"):
            assert cell["arrivals"][count] == final["arrivals"][count], count

        # outbox under the same outage: nothing lost silently.
        page.get_by_test_id("new-run").click()
        start(page, "outbox", "10")
        wait_for(page, "emails delivered", lambda: figure(page, "delivered") >= 10)
        page.get_by_test_id("action-smtp-outage").click()
        page.wait_for_timeout(3000)
        page.get_by_test_id("action-smtp-clear").click()
        final = stop(page, ui)
        assert final["variant"] == "outbox"
        assert final["delivery"]["missing"] == 0, final["delivery"]
        assert final["delivery"]["delivered"] >= 20
        browser.close()


@pytest.mark.slow
def test_the_lab_tab_merges_the_workers_and_resets_with_locust(tmp_path: Path) -> None:
    """Distributed: two workers' sign-ups add up on the master's tab; locust's reset starts a
    new window there; the run's files (each worker's part) make one bench cell."""
    from maillab.processes import Supervisor, wait_http

    smtp, api, app, web, master = (free_port() for _ in range(5))
    env = {**os.environ, "MAILLAB_SMTP_PORT": str(smtp),
           "MAILLAB_INSTANCE_DIR": str(tmp_path / "instance"),
           "MAILLAB_PASSWORD_HASH": "pbkdf2:sha256:1000"}
    locustfile = str(Path(__file__).resolve().parent.parent / "loadtests" / "locustfile.py")
    with Supervisor(tmp_path) as supervisor:
        supervisor.spawn("fakesmtp", ["smtp", "--port", str(smtp), "--api-port", str(api)],
                         env, tmp_path / "fakesmtp.log").wait_for_line("HTTP API")
        server = supervisor.spawn("app", ["serve", "threaded", "--port", str(app), "--workers",
                                          "1"], env, tmp_path / "app.log")
        wait_http(f"http://127.0.0.1:{app}/healthz", process=server)
        head = supervisor.spawn("master", [
            "-f", locustfile, "--master", "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(master), "--expect-workers", "2",
            "--web-host", "127.0.0.1", "--web-port", str(web),
            "--host", f"http://127.0.0.1:{app}", "--smtp-api", f"http://127.0.0.1:{api}",
            "--inbox-deadline", "5", "--lab-dir", str(tmp_path / "lab")],
            env, tmp_path / "master.log", module="locust")
        for number in (1, 2):
            supervisor.spawn(f"worker-{number}", [
                "-f", locustfile, "--worker", "--master-host", "127.0.0.1", "--master-port",
                str(master)], env, tmp_path / f"worker-{number}.log", module="locust")
        ui = Ui(f"http://127.0.0.1:{web}", f"http://127.0.0.1:{api}", tmp_path, head.popen)
        wait_http(f"{ui.web}/", process=head)
        deadline = time.monotonic() + 30
        while get_json(f"{ui.web}/stats/requests").get("workers", []).__len__() < 2:
            assert time.monotonic() < deadline, "the workers did not connect"
            time.sleep(0.5)
        started = _post(f"{ui.web}/lab/swarm", {"variant": "", "arrival_rate": "10",
                                                "smtp_latency": "0ms", "scenario": "clean"})
        assert started["success"] is True, started
        state = _wait_state(ui, lambda s: (s.get("delivery") or {}).get("delivered", 0) >= 30
                            and len(s["reporting"]) == 2)
        before = state["arrivals"]["offered"]
        urllib.request.urlopen(f"{ui.web}/stats/reset", timeout=30).close()
        after = get_json(f"{ui.web}/lab/state")
        assert after["arrivals"]["offered"] < before / 2, (before, after["arrivals"])
        _wait_state(ui, lambda s: s["arrivals"]["offered"] >= 20)
        urllib.request.urlopen(f"{ui.web}/stop", timeout=30).close()
        final = _wait_state(ui, lambda s: not s["running"] and s["drained"])
        # The stop cuts the sign-ups under way short: each is counted (failed visibly), never
        # dropped from the count; none lost silently.
        assert final["delivery"]["missing"] == 0
        assert final["delivery"]["failed_visibly"] <= max(1, state["in_flight"]) + 5
        deadline = time.monotonic() + 30
        while True:  # the workers close their parts after the stop
            try:
                with urllib.request.urlopen(f"{ui.web}/lab/run.zip", timeout=60) as r:
                    archive = tmp_path / "run.zip"
                    archive.write_bytes(r.read())
                break
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(1)
        with zipfile.ZipFile(archive) as opened:
            [name] = [n for n in opened.namelist() if n.endswith("results.json")]
            cell = json.loads(opened.read(name))["cells"][0]
        # The whole test, both workers: more than the window after the reset.
        assert cell["arrivals"]["offered"] > final["arrivals"]["offered"]
        assert cell["delivery"]["missing"] == 0


def _post(url: str, fields: dict[str, str]) -> Any:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
        body = r.read()
    try:
        return json.loads(body)
    except ValueError:
        return body.decode()


def _wait_state(ui: Ui, check: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = get_json(f"{ui.web}/lab/state")
        if check(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"the Lab tab did not get there in {timeout_s:g} s: {state}")
