"""The account-enumeration timing probe against a real server: its shape and its errors.

Whether the variants leak is a measurement (maillab bench, in the report), not a unit test:
these tests check that the probe measures what it says, never how fast anything is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from maillab.enumeration import ProbeError, probe
from maillab.ports import free_port
from maillab.processes import ManagedProcess


@pytest.fixture
def baseline_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MAILLAB_INSTANCE_DIR": str(tmp_path),
           "MAILLAB_PASSWORD_HASH": "pbkdf2:sha256:1000", "PYTHONUNBUFFERED": "1"}
    server = ManagedProcess("serve", [sys.executable, "-m", "maillab", "serve", "baseline",
                                      "--port", str(port), "--workers", "1"], env,
                            tmp_path / "serve.log")
    try:
        server.wait_for_line("listening on", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_the_probe_times_known_and_unknown_addresses_on_both_endpoints(
        baseline_url: str) -> None:
    stages: list[str] = []
    checks = probe(baseline_url, "baseline", samples=15, on_progress=stages.append)
    assert [(c.endpoint, c.samples) for c in checks] == [("/register", [15, 15]),
                                                         ("/resend", [15, 15])]
    for check in checks:
        assert check.known_p50_ms > 0 and check.unknown_p50_ms > 0
        # Three figures each rounded to the microsecond: they agree within 1.5 us.
        assert check.gap_ms == pytest.approx(check.known_p50_ms - check.unknown_p50_ms, abs=2e-3)
        assert 0 <= check.p_value <= 1
        assert check.distinguishable == (check.p_value < 0.01)
    assert len(stages) == 3  # one sign-up phase, then one timing phase per endpoint


def test_an_answer_off_the_contract_stops_the_probe(baseline_url: str) -> None:
    """/resend answers 429 inside its cooldown; the probe never reuses an address, so a 429
    here can only come from an app that breaks the contract."""
    with pytest.raises(ProbeError, match="answered 404, not 202"):
        probe(baseline_url + "/nowhere", "baseline", samples=2)
