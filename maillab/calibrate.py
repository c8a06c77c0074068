"""How often the gate fails a good run on this machine (``maillab calibrate``).

The same build is run N times (the smoke profile by default) into a history of its own, and
each run is judged, in order, as CI would judge it: against the rules (the profile's or the
target's) and against the history of the runs before it. Nothing changed between the runs,
so every failure is a false alarm; the rates are what a person needs to trust a red build:
the share of runs the rules fail, the share the history check fails, and the checks behind
them.

A folder already holding such runs (``--judge DIR``) is judged again without running
anything: runs added to it later (a build with a regression, for instance) are judged against
the ones before them in the same way, and their alarms are then true ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.history import History, read_history
from loadtests.historycheck import MIN_HISTORY, HistoryMismatch, check_history
from loadtests.results import load_run
from maillab.gate import Rule, check_rules, invalid_reasons, profile_rules

FILE = "calibration.json"
RUNS = "runs"
HISTORY = "history"


class CalibrationError(ValueError):
    """The calibration cannot go on; the message says why, in one line."""


@dataclass
class RunVerdict:
    """One run judged as CI would judge it, against the runs before it."""

    run_id: str
    run_dir: str
    commit: str | None
    rules_checked: int
    rules_failed: list[str]  # "rule @ cell: measured against limit"
    invalid: list[str]
    history_runs: int  # the most earlier comparable runs any figure had
    history_judged: int  # checks with a p value (enough history)
    history_failed: list[str]  # "cell figure: value against expected"

    @property
    def gate_fails(self) -> bool:
        """CI would fail this run (exit 1 or 3)."""
        return bool(self.rules_failed or self.invalid or self.history_failed)


@dataclass
class Calibration:
    folder: str
    profile: str
    target: str
    alpha: float
    min_effect: float
    runs: list[RunVerdict] = field(default_factory=list)

    def rates(self) -> dict[str, Any]:
        """False alarms per run, for the rules and for the history check, with the counts they
        are shares of."""
        gated = self.runs
        judged = [r for r in self.runs if r.history_judged]
        return {
            "runs": len(gated),
            "rules_failed_runs": sum(bool(r.rules_failed) for r in gated),
            "rules_checks": sum(r.rules_checked for r in gated),
            "rules_failed_checks": sum(len(r.rules_failed) for r in gated),
            "invalid_runs": sum(bool(r.invalid) for r in gated),
            "history_judged_runs": len(judged),
            "history_failed_runs": sum(bool(r.history_failed) for r in judged),
            "history_checks": sum(r.history_judged for r in judged),
            "history_failed_checks": sum(len(r.history_failed) for r in judged),
            "gate_failed_runs": sum(r.gate_fails for r in gated),
        }

    def to_json(self) -> dict[str, Any]:
        return {"folder": self.folder, "profile": self.profile, "target": self.target,
                "alpha": self.alpha, "min_effect": self.min_effect, "rates": self.rates(),
                "runs": [asdict(r) for r in self.runs]}


def bench_command(profile: str, run_dir: Path, history_dir: Path,
                  target: Path | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The bench of one calibration run: a child process, so that each run starts as CI's
    does and a Ctrl-C stops it (and everything it started) the way it stops a bench."""
    command = [sys.executable, "-m", "maillab", "bench", "--profile", profile,
               "--out", str(run_dir), "--history", str(history_dir)]
    if target is not None:
        command += ["--target", str(target)]
    return [*command, *extra]


def run_bench(command: list[str], log: Path) -> None:
    """Run one bench, its output kept in ``log``; a bench that fails stops the calibration
    with its last lines."""
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise CalibrationError(f"the bench exited {code} ({log}): {tail}")


def judge(run_dir: Path, earlier: History, rules: list[Rule] | None, alpha: float,
          min_effect: float) -> RunVerdict:
    """``run_dir`` against its rules and against the ``earlier`` runs."""
    results = load_run(run_dir).results
    outcomes = check_rules(results, rules if rules is not None else profile_rules(results))
    try:
        report = check_history(results, earlier, alpha, min_effect)
        checks = report.checks
    except HistoryMismatch:  # no earlier run of this machine yet: nothing to judge against
        checks = []
    source = results.target.source if results.target is not None else None
    return RunVerdict(
        run_id=results.run_id, run_dir=str(run_dir),
        commit=(source or {}).get("commit") or results.environment.git_sha,
        rules_checked=len(outcomes),
        rules_failed=[f"{o.rule} @ {o.cell}: {o.measured:g} against {o.limit}"
                      if o.measured is not None else f"{o.rule} @ {o.cell}: {o.detail}"
                      for o in outcomes if o.verdict in ("fail", "error")],
        invalid=invalid_reasons(results),
        history_runs=max((c.history for c in checks), default=0),
        history_judged=sum(c.p_value is not None for c in checks),
        history_failed=[f"{c.cell} {c.figure}: {c.value:g} against {c.expected:g}"
                        for c in checks if c.verdict == "fail"])


def earlier_than(history: History, run_id: str) -> History:
    """The runs ``history`` holds before ``run_id``."""
    ids = [e["run_id"] for e in history.entries]
    if run_id not in ids:
        raise CalibrationError(f"{history.path}: run {run_id} is not in the history")
    return History(history.path, history.entries[:ids.index(run_id)])


def judge_folder(folder: Path, rules: list[Rule] | None = None, alpha: float = 0.01,
                 min_effect: float = 0.10,
                 on_run: Callable[[RunVerdict], None] | None = None) -> Calibration:
    """Judge every run of a calibration folder, in the order its history holds them, against
    the runs before it."""
    history = read_history(folder / HISTORY)
    if not history.entries:
        raise CalibrationError(f"{folder / HISTORY}: no runs to judge")
    found = Calibration(folder=str(folder), profile=history.entries[0]["profile"],
                        target=history.entries[0]["target"]["name"], alpha=alpha,
                        min_effect=min_effect)
    by_id: dict[str, Path] = {}
    for found_dir in sorted((folder / RUNS).iterdir()) if (folder / RUNS).is_dir() else []:
        if (found_dir / "results.json").is_file():
            by_id[json.loads((found_dir / "results.json").read_text())["run_id"]] = found_dir
    for entry in history.entries:
        run_dir = by_id.get(entry["run_id"])
        if run_dir is None:
            raise CalibrationError(f"{folder / HISTORY}: run {entry['run_id']} has no folder "
                                   f"in {folder / RUNS}")
        verdict = judge(run_dir, earlier_than(history, entry["run_id"]), rules, alpha,
                        min_effect)
        found.runs.append(verdict)
        if on_run is not None:
            on_run(verdict)
    return found


def write(folder: Path, calibration: Calibration) -> Path:
    path = folder / FILE
    path.write_text(json.dumps(calibration.to_json(), indent=2) + "\n")
    return path


def summary(calibration: Calibration) -> list[str]:
    """The figures, in words a person can quote."""
    r = calibration.rates()
    lines = [f"{r['runs']} runs of {calibration.target}/{calibration.profile}: the rules "
             f"failed {r['rules_failed_runs']} ({r['rules_failed_checks']} of "
             f"{r['rules_checks']} checks); {r['invalid_runs']} invalid"]
    if r["history_judged_runs"]:
        lines.append(
            f"history check (alpha {calibration.alpha:g}, from the {MIN_HISTORY + 1}th run "
            f"on): {r['history_failed_runs']} of {r['history_judged_runs']} judged runs "
            f"raised an alarm ({r['history_failed_checks']} of {r['history_checks']} checks)")
    else:
        lines.append(f"history check: no run had {MIN_HISTORY} earlier runs to be judged "
                     "against")
    lines.append(f"the gate as CI runs it would have failed {r['gate_failed_runs']} of "
                 f"{r['runs']} runs: each a false alarm where the runs are of one build")
    return lines
