"""Starting, watching and stopping the lab's child processes (servers, workers, locust).

Each child runs in its own session, so stopping it also stops whatever it forked (gunicorn's
workers); its output goes to a log file, and readiness is a line it prints, with a deadline.
:class:`Supervisor` is the one owner of a run's children, for ``bench`` and ``ui`` alike: it
tags them with the run, turns SIGINT/SIGTERM into :class:`Stopped`, and stops every child it
started on the way out, whatever happened.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ProcessError(RuntimeError):
    pass


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived; what is running stops cleanly. A BaseException, like
    KeyboardInterrupt, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


class ManagedProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=cwd,
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


class Supervisor:
    """Every child process of one run. Use it as a context manager::

        with Supervisor(run_dir) as supervisor:
            app = supervisor.spawn("sync", ["serve", "sync"], env, log)

    Inside, SIGINT and SIGTERM raise :class:`Stopped`; on leaving, every child still running is
    stopped, newest first. Children carry ``MAILLAB_RUN_DIR`` in their environment so that
    anyone (the tests, a person with ps) can find every process of the run.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.children: list[ManagedProcess] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Supervisor:
        self._previous = {sig: signal.signal(sig, self._on_signal)
                          for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]  # what signal() returned
        self.stop(*self.children)

    @staticmethod
    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        raise Stopped(signum)

    def spawn(self, name: str, args: list[str], env: dict[str, str], log: Path,
              module: str = "maillab") -> ManagedProcess:
        """Start ``python -m module *args`` as a child of this run, logging to ``log``."""
        env = {**env, "MAILLAB_RUN_DIR": str(self.run_dir.resolve())}
        process = ManagedProcess(name, [sys.executable, "-m", module, *args], env, log)
        self.children.append(process)
        return process

    def spawn_program(self, name: str, argv: list[str], env: dict[str, str],
                      log: Path, cwd: Path | None = None) -> ManagedProcess:
        """Start another program (a server the run needs, such as redis-server, or a target's
        app) as a child of this run, in ``cwd``, stopped with the rest."""
        env = {**env, "MAILLAB_RUN_DIR": str(self.run_dir.resolve())}
        process = ManagedProcess(name, argv, env, log, cwd)
        self.children.append(process)
        return process

    def stop(self, *processes: ManagedProcess) -> None:
        """Stop ``processes``, newest first, and forget them."""
        for process in reversed(processes):
            process.stop()
            if process in self.children:
                self.children.remove(process)

    def stop_with(self, process: ManagedProcess, sig: int) -> None:
        """Stop ``process`` with ``sig`` (SIGKILL: at once, a crash) and forget it."""
        process.stop(timeout=0 if sig == signal.SIGKILL else 15.0, sig=sig)
        if process in self.children:
            self.children.remove(process)

    def check(self, processes: list[ManagedProcess] | None = None, when: str = "") -> None:
        """Raise :class:`ProcessError` naming the first of ``processes`` (default: every
        child) that has exited; ``when`` says during what (``"during the cell"``)."""
        for process in processes if processes is not None else self.children:
            if not process.alive():
                raise ProcessError(f"{process.name} died{' ' + when if when else ''} (exit "
                                   f"{process.popen.returncode}); see {process.log_path}")
