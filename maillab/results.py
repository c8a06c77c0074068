"""results/<run-id>/results.json (schema "maillab.results/1"): the one place that writes it.

The file is rewritten after every cell, atomically (write a temporary file, then rename), so
a run cut short still leaves valid JSON for the cells it finished.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "maillab.results/1"
SCHEMA_FILE = Path(__file__).with_name("results_schema.json")
PACKAGES = ("flask", "flask-mail", "werkzeug", "sqlalchemy", "huey", "gunicorn", "locust",
            "aiosmtpd", "aiohttp", "itsdangerous")


def environment(workers: int, threads: int, password_hash: str,
                consumer_threads: int) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count() or 0,
        "cpu_model": _cpu_model(),
        "git_sha": _git_sha(),
        "packages": {name: _version(name) for name in PACKAGES},
        "server": {"workers": workers, "threads": threads, "worker_class": "gthread",
                   "queue_consumer_threads": consumer_threads},
        "password_hash": password_hash,
        "executable": sys.executable,
    }


def write_results(run_dir: Path, document: dict[str, Any]) -> Path:
    path = run_dir / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def point_latest(results_root: Path, run_dir: Path) -> None:
    """Point ``results/latest`` at ``run_dir`` (relative when inside, replaced atomically)."""
    results_root.mkdir(parents=True, exist_ok=True)
    link = results_root / "latest"
    tmp = results_root / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    inside = run_dir.resolve().parent == results_root.resolve()
    tmp.symlink_to(run_dir.name if inside else run_dir.resolve())
    os.replace(tmp, link)


def validate(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``document`` breaks the schema (needs jsonschema)."""
    import jsonschema

    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


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
