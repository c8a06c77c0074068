"""examples/flask-app-tests: a Flask app's own suite, which uses only fakesmtp's pytest plugin,
passes in one process and under pytest-xdist (a fakesmtp per worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask-app-tests"


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["one-process", "xdist-2"])
def test_the_example_apps_own_suite_passes(args: list[str]) -> None:
    pytest.importorskip("flask_mailman", reason="the examples extra is not installed")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=EXAMPLE,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout, done.stdout
