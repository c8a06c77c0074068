"""A history of runs: every finished ``maillab bench`` run appends its cells' figures, one JSON
line, to ``history.jsonl`` in a folder (``results/history`` by default) that a CI cache or a
git branch can carry from build to build.

A line is keyed by what a comparison must hold equal: the target (its name and file hash),
the profile, the source it measured (the git commit, branch and dirty flag of the target's
folder: the app's own repository, or the lab's for its own variants) and the machine (a
fingerprint of the CPU model, cores, Python and the key libraries' versions). The file is
only ever appended to, one ``write`` per line; a line that cannot be read (a run killed in
the middle of writing, a hand edit) is reported with its number and skipped, never fatal and
never silently dropped.

JSON lines rather than SQLite: a CI cache, a git branch or a person can carry, merge and read
it as text, and an append is one write.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.results import METRICS, CellResult, Results, load_run

SCHEMA = "maillab.history/1"
FILE = "history.jsonl"
DEFAULT_DIR = Path("results") / "history"
# The libraries whose versions change what a run measures: a new one is a new machine.
FINGERPRINT_PACKAGES = ("flask", "werkzeug", "sqlalchemy", "gunicorn", "huey", "locust")


class HistoryError(ValueError):
    """The history cannot take this run; the message says why, in one line."""


@dataclass
class History:
    """What a history folder holds: its readable entries, in the order they were added, and
    a line per entry that could not be read."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def git_state(folder: Path) -> dict[str, Any]:
    """The commit, branch and dirty flag of the repository ``folder`` is in (nulls outside
    one)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "branch": None, "dirty": None}
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"commit": commit, "branch": None if branch in (None, "HEAD") else branch,
            "dirty": bool(status)}


def fingerprint(results: Results) -> dict[str, Any]:
    """The machine a run was measured on, and a short id of it: runs compare only within one
    fingerprint."""
    env = results.environment
    found: dict[str, Any] = {
        "cpu_model": env.cpu_model, "cpu_count": env.cpu_count,
        "python": env.python,
        "packages": {name: env.packages.get(name) for name in FINGERPRINT_PACKAGES},
    }
    found["id"] = hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:12]
    return found


def _figures(cell: CellResult) -> dict[str, float]:
    """Every figure the gate can name (``METRIC.STAT``), as measured in ``cell``."""
    figures = {}
    for metric, stats in METRICS.items():
        for stat in stats or (None,):
            value = cell.metric(metric, stat)
            if value is not None:
                figures[metric + (f".{stat}" if stat else "")] = value
    return figures


def source_of(results: Results) -> dict[str, Any]:
    """What the run measured: the target folder's git state recorded when it started, or, for
    runs older than that, the lab's commit (a trailing -dirty is the flag)."""
    if results.target is not None and results.target.source is not None:
        return dict(results.target.source)
    sha = results.environment.git_sha
    return {"commit": sha.removesuffix("-dirty") if sha else None, "branch": None,
            "dirty": sha.endswith("-dirty") if sha else None}


def entry_for(results: Results) -> dict[str, Any]:
    """The history line of a run."""
    target = results.target
    return {
        "schema": SCHEMA, "run_id": results.run_id,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "started_at": results.started_at, "finished_at": results.finished_at,
        "complete": results.complete, "profile": results.profile,
        "target": {"name": target.name if target else "maillab",
                   "sha256": target.sha256 if target else None,
                   "file": target.file if target else None},
        "source": source_of(results), "fingerprint": fingerprint(results),
        "cells": [{"cell": c.label, "variant": c.variant, "smtp_latency_ms": c.smtp_latency_ms,
                   "rate": c.rate, "scenario": c.scenario, "smtp": c.smtp, "valid": c.valid,
                   "invalid_for": list(c.invalid_for), "figures": _figures(c)}
                  for c in results.cells],
    }


def read_history(folder: Path) -> History:
    """Every readable line of ``folder``'s history (none yet: an empty history)."""
    return _parse(folder / FILE, _read(folder / FILE))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise HistoryError(f"{path}: cannot be read: {exc}") from None


def _parse(path: Path, text: str) -> History:
    found = History(path)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            found.problems.append(f"{path}:{number}: not JSON ({exc.args[0]}); skipped")
            continue
        missing = [k for k in ("schema", "run_id", "profile", "target", "fingerprint", "cells")
                   if not isinstance(entry, dict) or k not in entry]
        if missing:
            found.problems.append(f"{path}:{number}: no {missing[0]!r}; skipped")
        elif entry["schema"] != SCHEMA:
            found.problems.append(f"{path}:{number}: schema {entry['schema']!r}, not "
                                  f"{SCHEMA!r}; skipped")
        else:
            found.entries.append(entry)
    return found


def append(folder: Path, entry: dict[str, Any]) -> Path:
    """Add ``entry`` as one line (one write, flushed to disk); a run already in the history is
    refused, so adding it twice does not weigh it twice."""
    text = _read(folder / FILE)
    history = _parse(folder / FILE, text)
    if any(e["run_id"] == entry["run_id"] for e in history.entries):
        raise HistoryError(f"{history.path}: run {entry['run_id']} is already in the history")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        line = json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n"
    except ValueError as exc:  # a NaN or infinity would not read back as JSON elsewhere
        raise HistoryError(f"run {entry['run_id']}: {exc}") from None
    if text and not text.endswith("\n"):
        line = "\n" + line  # a line cut short before: it stays damaged, alone
    with open(history.path, "a", encoding="utf-8") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())
    return history.path


def add_run(folder: Path, run_dir: Path) -> dict[str, Any]:
    """Add an existing run (its results.json) to the history in ``folder``."""
    entry = entry_for(load_run(run_dir).results)
    append(folder, entry)
    return entry
