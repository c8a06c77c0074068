"""The one owner of a run's child processes, used by ``bench`` and ``ui`` alike."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from maillab.processes import ProcessError, Stopped, Supervisor

# A child that runs until stopped: a web server on a free loopback port.
FOREVER = ("http.server", ["0", "--bind", "127.0.0.1"])
UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its banner reaches the log at once


def test_a_signal_stops_the_run_and_every_child(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped, match="SIGTERM"), Supervisor(tmp_path) as supervisor:
        module, args = FOREVER
        child = supervisor.spawn("server", args, UNBUFFERED, tmp_path / "server.log",
                                 module=module)
        child.wait_for_line("Serving HTTP", timeout=30)
        env = (Path(f"/proc/{child.popen.pid}/environ")).read_bytes().split(b"\0")
        assert f"MAILLAB_RUN_DIR={tmp_path.resolve()}".encode() in env
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises Stopped long before this ends
    assert child.popen.poll() is not None
    assert supervisor.children == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_dead_child_is_named(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as supervisor:
        module, args = FOREVER
        child = supervisor.spawn("server", args, UNBUFFERED, tmp_path / "server.log",
                                 module=module)
        supervisor.check()
        os.kill(child.popen.pid, signal.SIGKILL)
        child.popen.wait(timeout=30)
        with pytest.raises(ProcessError, match=r"server died \(exit -9\); see .*server\.log"):
            supervisor.check()
