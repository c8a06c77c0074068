"""What a run ran on: the machine, the interpreter, the packages, the commit, the server sizes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from loadtests.results import Environment, Server

PACKAGES = ("flask", "flask-mail", "werkzeug", "sqlalchemy", "huey", "gunicorn", "locust",
            "aiosmtpd", "aiohttp", "itsdangerous")


def capture_environment(workers: int, threads: int, password_hash: str,
                        consumer_threads: int) -> Environment:
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        git_sha=_git_sha(),
        packages={name: _version(name) for name in PACKAGES},
        server=Server(workers=workers, threads=threads, worker_class="gthread",
                      queue_consumer_threads=consumer_threads),
        password_hash=password_hash,
        executable=sys.executable,
    )


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty.strip() else sha
