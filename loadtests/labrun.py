"""A test run from locust's web UI, kept as a bench cell: its samples and registrations (the
locustfile's own files, streamed as in a bench), summarised by :func:`summarize_cell` against
fakesmtp's capture into a results.json, and drawn by the report's code.

The Lab tab's "download" and "report" links serve what :func:`build` writes; the tab's live
figures come from the same two functions the summary uses (:func:`loadtests.summary.delivery`
and :func:`loadtests.summary.arrivals`), so the last figures the tab showed and the cell's agree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fakesmtp.latency import LatencyError, parse_latency
from loadtests import cellfiles
from loadtests.cellfiles import CellKey, Load
from loadtests.environment import capture_environment
from loadtests.history import git_state
from loadtests.profiles import Profile
from loadtests.results import Results, TargetInfo, write_results
from loadtests.smtpapi import SmtpApi
from loadtests.summary import Observed, summarize_cell
from loadtests.target import built_in

PROFILE_NAME = "ui"


@dataclass(frozen=True)
class LabTest:
    """What one test started from the web UI ran: where its files go and its cell's axes."""

    run_dir: Path
    variant: str
    latency: str  # fakesmtp's spec, as given
    rate: float  # 0: closed loop
    users: int
    started_at: str

    @property
    def key(self) -> CellKey:
        load = Load(rate=self.rate) if self.rate else Load(users=self.users)
        return CellKey(self.variant, latency_ms(self.latency), load)

    @property
    def cell_dir(self) -> Path:
        return self.run_dir / self.key.folder


def latency_ms(spec: str) -> int:
    """The cell's SMTP latency: the spec's typical value (its only one, median or mean)."""
    try:
        parsed = parse_latency(spec or "0ms")
    except LatencyError:
        return 0
    params = parsed.params
    if not params:
        return 0
    typical = (params[0] + params[1]) / 2 if parsed.kind == "uniform" else params[0]
    return round(typical * 1000)


def new_test(root: Path, variant: str, latency: str, rate: float, users: int) -> LabTest:
    """A fresh folder for a test under ``root`` (``ui-<time>``, numbered when two start in
    one second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = root / f"ui-{stamp}"
    number = 1
    while run_dir.exists():
        number += 1
        run_dir = root / f"ui-{stamp}-{number}"
    test = LabTest(run_dir, variant, latency, rate, users,
                   time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    test.cell_dir.mkdir(parents=True)
    return test


def profile_of(test: LabTest) -> Profile:
    key = test.key
    return Profile(name=PROFILE_NAME, variants=(test.variant,),
                   latencies_ms=(key.latency_ms,),
                   rates=(test.rate,) if test.rate else (),
                   users=() if test.rate else (test.users,),
                   mode="open" if test.rate else "closed", warmup_s=0.0, min_signups=1)


def build(test: LabTest, smtp_api: str, fault_ended_at: float | None = None) -> Path:
    """Merge the test's files (the workers' parts, distributed), summarise its cell against
    fakesmtp's capture, write results.json and the report; the run folder."""
    cell_dir = test.cell_dir
    cellfiles.merge_parts(cell_dir)  # the workers' parts; a no-op when merged already
    profile = profile_of(test)
    target = built_in()
    info = target.variant(test.variant)
    observed = Observed(
        samples=cellfiles.read_samples(cell_dir),
        registrations=cellfiles.read_registrations(cell_dir),
        capture=SmtpApi(smtp_api).capture("read when the report was asked for"),
        sends_email=info.sends_email, fault_ended_at=fault_ended_at)
    cell = summarize_cell(test.key, profile, observed)
    results = Results(
        run_id=test.run_dir.name, profile=profile.name, profile_settings=profile.settings(),
        started_at=test.started_at, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        complete=True, stopped_reason=None,
        environment=capture_environment(profile.workers, profile.threads,
                                        profile.password_hash, profile.worker_threads),
        cells=[cell], target=TargetInfo(
            name=target.name, file=target.source, sha256=target.sha256,
            description=target.description, variants=dict(target.variants),
            built_in=True, source=git_state(target.folder), gate_rules=None))
    write_results(test.run_dir, results)
    # The report's own command draws it (the report package sits above this one).
    done = subprocess.run([sys.executable, "-m", "maillab", "report", str(test.run_dir)],
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise OSError(f"maillab report {test.run_dir} exited {done.returncode}: "
                      f"{(done.stderr or done.stdout).strip()[-300:]}")
    return test.run_dir


def archive(run_dir: Path) -> Path:
    """The run folder as one zip beside it."""
    return Path(shutil.make_archive(str(run_dir), "zip", root_dir=run_dir.parent,
                                    base_dir=run_dir.name))
