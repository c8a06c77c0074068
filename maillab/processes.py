"""Starting, watching and stopping the lab's child processes (servers, workers).

Each child runs in its own session, so stopping it also stops whatever it forked (gunicorn's
workers); its output goes to a log file, and readiness is a line it prints, with a deadline.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ProcessError(RuntimeError):
    pass


class ManagedProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_die_with_parent)

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> str:
        """Block until the log has a line matching ``pattern``; raise if the child died."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            for line in text.splitlines():
                if regex.search(line):
                    return line
            if self.popen.poll() is not None:
                raise ProcessError(f"{self.name} exited with {self.popen.returncode} before it "
                                   f"was ready; its log ({self.log_path}):\n{text[-2000:]}")
            time.sleep(0.05)
        raise ProcessError(f"{self.name} not ready after {timeout:g} s; see {self.log_path}")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` to the child's session, SIGKILL it if it outlives ``timeout``; return
        its exit code."""
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        # Whatever it forked and left behind goes too.
        _signal_group(self.popen.pid, signal.SIGKILL)
        self._log.close()
        return int(self.popen.returncode)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies.

    The child runs in its own session (so a terminal's Ctrl-C reaches only the supervisor,
    which stops children in order); without this, a supervisor killed with SIGKILL, which
    runs no cleanup, would leave its children running. No-op where prctl is unavailable.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def wait_http(url: str, timeout: float = 30.0, process: ManagedProcess | None = None) -> None:
    """Block until ``url`` answers 200."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise ProcessError(f"{process.name} exited; see {process.log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise ProcessError(f"{url} did not answer within {timeout:g} s: {last}")
