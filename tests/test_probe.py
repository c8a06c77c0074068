"""The browser probe: what the person sees, timed by real headless Chromium."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loadtests.cellfiles import BROWSER_FILE
from maillab.cli import cli
from maillab.ports import free_port
from maillab.probe import (
    BrowserSignup,
    ProbeUnavailable,
    _pair,
    check_url,
    find_chromium,
    summarize,
    write_signups,
)
from maillab.processes import ManagedProcess
from tests.conftest import FAST_HASH, chromium_or_skip
from tests.smtp_sink import Sink


@pytest.mark.parametrize(("url", "needle"), [
    ("ftp://127.0.0.1/", "not an http"),
    ("127.0.0.1:8000", "not an http"),
    ("http://example.com:8000", "only on a loopback address"),
    ("http://10.0.0.1:8000", "only on a loopback address"),
])
def test_the_probe_signs_up_only_on_loopback(url: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        check_url(url)
    result = CliRunner().invoke(cli, ["probe", url])
    assert result.exit_code == 2 and needle in result.output
    assert "Traceback" not in result.output


def test_loopback_urls_pass() -> None:
    assert check_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_url("http://[::1]:8000") == "http://[::1]:8000"
    assert check_url("http://localhost:8000") == "http://localhost:8000"


def test_a_chromium_that_is_not_there_is_named(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("MAILLAB_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(ProbeUnavailable, match="MAILLAB_CHROMIUM=.* is not an executable"):
        find_chromium()
    result = CliRunner().invoke(cli, ["probe", f"http://127.0.0.1:{free_port()}",
                                      "--count", "1"])
    assert result.exit_code == 1 and "is not an executable file" in result.output


def test_a_click_its_entries_and_the_next_page_paint_make_one_sign_up() -> None:
    click_at = 1_000_000.0
    reports: list[tuple[str, dict[str, Any]]] = [
        ("click", {"trusted": True, "at": click_at}),
        ("event", {"name": "pointerdown", "interaction": 7, "duration": 16.0,
                   "processing": 0.5, "presentation": 12.0}),
        ("event", {"name": "click", "interaction": 7, "duration": 24.0, "processing": 3.0,
                   "presentation": 18.5}),
        ("paint", {"path": "/register/sent", "at": click_at + 612.0,
                   "response_end": click_at + 580.0}),
    ]
    signup = _pair("a@maillab.test", reports)
    assert signup == BrowserSignup("a@maillab.test", True, 612.0, 24.0, 3.0, 18.5,
                                   response_ms=580.0, render_ms=32.0, proxy_ms=596.7)
    quiet = _pair("b@maillab.test", [reports[0], reports[3]])  # no entry: under 16 ms
    assert quiet.event_ms is None and quiet.click_to_confirmation_ms == 612.0
    summary = summarize([signup, quiet])
    assert (summary.count, summary.trusted, summary.events_reported) == (2, 2, 1)
    assert summary.event_p75_ms == 24.0 and summary.click_to_confirmation_p50_ms == 612.0
    assert (summary.response_p75_ms, summary.render_p50_ms) == (580.0, 32.0)


def test_every_browser_sign_up_is_kept_beside_the_cell(tmp_path: Path) -> None:
    signups = [BrowserSignup(f"{i}@maillab.test", True, 600.0 + i, None, None, None,
                             response_ms=560.0 + i, render_ms=40.0, proxy_ms=576.7 + i)
               for i in range(3)]
    path = write_signups(tmp_path, signups)
    assert path == tmp_path / BROWSER_FILE and not list(tmp_path.glob("*.partial"))
    with path.open(newline="") as kept:
        rows = list(csv.DictReader(kept))
    assert [r["email"] for r in rows] == ["0@maillab.test", "1@maillab.test", "2@maillab.test"]
    assert [float(r["click_to_confirmation_ms"]) for r in rows] == [600.0, 601.0, 602.0]
    assert rows[0]["event_ms"] == "" and rows[2]["render_ms"] == "40.0"


@pytest.mark.slow
def test_sign_ups_in_chromium_are_trusted_and_wait_for_the_server(
        tmp_path: Path, sink_factory: Callable[..., Sink],
        spawn: Callable[..., ManagedProcess]) -> None:
    """sync against an SMTP server that takes 300 ms: the confirmation cannot paint before the
    server answered, and each probe sign-up's email arrives."""
    chromium_or_skip()
    sink = sink_factory(delay=0.3)
    port = free_port()
    env = {**os.environ, "MAILLAB_INSTANCE_DIR": str(tmp_path / "instance"),
           "MAILLAB_SMTP_PORT": str(sink.port), "MAILLAB_PASSWORD_HASH": FAST_HASH}
    spawn(["serve", "sync", "--port", str(port), "--workers", "1"], env, "listening on")
    result = CliRunner().invoke(cli, ["probe", f"http://127.0.0.1:{port}", "--count", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert len(found["signups"]) == 3 and found["summary"]["trusted"] == 3
    for signup in found["signups"]:
        assert signup["click_to_confirmation_ms"] >= 300  # the SMTP wait is in it
        assert signup["proxy_ms"] >= 300
        assert len(sink.handler.wait_for(signup["email"], timeout=15)) == 1
