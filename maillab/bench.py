"""The matrix runner behind ``maillab bench``: every cell of a profile, measured for real.

For each cell (variant x SMTP latency x users) it starts a fresh app (fresh database) under
gunicorn, and for ``queued`` its consumer; waits for health; runs locust headless as a child
process (locust patches the interpreter with gevent, so it never runs in this one) with a
warm-up left out of the stats; waits, bounded, for email still in flight; counts delivery per
registration from fakesmtp's capture; and rewrites results.json. fakesmtp runs once per run.

Every child runs in its own session and is stopped in ``finally``, whatever happened: Ctrl-C,
SIGTERM, or a child that died, which stops the run with the reason.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtests.profiles import Profile
from maillab import results, stats
from maillab.ports import free_port
from maillab.processes import ManagedProcess, ProcessError, wait_http
from maillab.sampling import CellSampler

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtests" / "locustfile.py"
SATURATED_CPU_PERCENT = 90.0  # locust is one gevent loop: past this it measures itself


CAPTURE_LIMIT = 10_000  # fakesmtp's largest page of /api/messages


@dataclass
class Capture:
    """Messages per recipient in fakesmtp for this cell; ``truncated`` if some were not seen."""

    counts: Counter[str]
    truncated: bool = False


class BenchError(RuntimeError):
    """The run cannot start or cannot go on; the message is the reason."""


class Stopped(BaseException):
    """SIGTERM/SIGINT arrived; the run stops cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


@dataclass
class RunPaths:
    root: Path
    run_dir: Path


def new_run_dir(root: Path, profile: Profile, out: Path | None) -> RunPaths:
    if out is not None:
        if out.exists() and any(out.iterdir()):
            raise BenchError(f"--out {out} exists and is not empty")
        return RunPaths(root, out)
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{profile.name}"
    return RunPaths(root, root / run_id)


class Bench:
    def __init__(self, profile: Profile, paths: RunPaths, smtp_port: int = 0,
                 api_port: int = 0, on_cell: Callable[[int, str], None] | None = None) -> None:
        self.profile = profile
        self.paths = paths
        self.smtp_port = smtp_port or free_port()
        self.api_port = api_port or free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.on_cell = on_cell or (lambda _i, _label: None)
        self.children: list[ManagedProcess] = []
        self.document: dict[str, Any] = {}

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        profile, run_dir = self.profile, self.paths.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.document = {
            "schema": results.SCHEMA, "run_id": run_dir.name, "profile": profile.name,
            "profile_settings": _profile_settings(profile),
            "started_at": _now(), "finished_at": None, "complete": False,
            "stopped_reason": None,
            "environment": results.environment(profile.workers, profile.threads,
                                               profile.password_hash, profile.worker_threads),
            "cells": [],
        }
        results.write_results(run_dir, self.document)
        results.point_latest(self.paths.root, run_dir)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._start_smtp()
            for index, (variant, latency, users) in enumerate(profile.cells()):
                label = f"{variant} @ {latency} ms x {users} users"
                self.on_cell(index, label)
                cell = self._run_cell(variant, latency, users)
                self.document["cells"].append(cell)
                results.write_results(run_dir, self.document)
            self.document["complete"] = True
        except Stopped as stop:
            self.document["stopped_reason"] = f"stopped by {stop}"
            raise
        except (BenchError, ProcessError) as exc:
            self.document["stopped_reason"] = str(exc)
            raise BenchError(str(exc)) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_children()
            self.document["finished_at"] = _now()
            results.write_results(run_dir, self.document)
        return self.document

    def _on_signal(self, signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    def _spawn(self, name: str, args: list[str], env: dict[str, str], log: Path,
               module: str = "maillab") -> ManagedProcess:
        command = [sys.executable, "-m", module, *args]
        # The tag lets anyone (the tests, a person with ps) find every child of this run.
        env = {**env, "MAILLAB_RUN_DIR": str(self.paths.run_dir.resolve())}
        process = ManagedProcess(name, command, env, log)
        self.children.append(process)
        return process

    def _stop_children(self) -> None:
        while self.children:
            self.children.pop().stop()

    def _start_smtp(self) -> None:
        smtp = self._spawn("fakesmtp", ["smtp", "--port", str(self.smtp_port), "--api-port",
                                        str(self.api_port), "--seed", "1"],
                           dict(os.environ), self.paths.run_dir / "fakesmtp.log")
        smtp.wait_for_line("HTTP API", timeout=30)

    # -- one cell -----------------------------------------------------------------------------

    def _run_cell(self, variant: str, latency: int, users: int) -> dict[str, Any]:
        profile = self.profile
        cell_dir = self.paths.run_dir / "cells" / f"{variant}-{latency}ms-{users}u"
        cell_dir.mkdir(parents=True)
        self._smtp_call("POST", "/api/reset")
        env = {**os.environ, "MAILLAB_INSTANCE_DIR": str(cell_dir / "instance"),
               "MAILLAB_SMTP_PORT": str(self.smtp_port),
               "MAILLAB_PASSWORD_HASH": profile.password_hash}
        port = free_port()
        app_url = f"http://127.0.0.1:{port}"
        server = self._spawn(variant, ["serve", variant, "--port", str(port), "--workers",
                                       str(profile.workers), "--threads", str(profile.threads)],
                             env, cell_dir / "app.log")
        cell_children = [server]
        queue_metrics = None
        if variant == "queued":
            metrics_port = free_port()
            queue_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            cell_children.append(self._spawn(
                "worker", ["worker", "--threads", str(profile.worker_threads),
                           "--metrics-port", str(metrics_port)], env, cell_dir / "worker.log"))
        try:
            wait_http(f"{app_url}/healthz", timeout=60, process=server)
            if variant == "queued":
                cell_children[1].wait_for_line("consuming", timeout=30)
            sampler = CellSampler(server.popen.pid, queue_metrics)
            sampler.start()
            try:
                locust_code = self._run_locust(cell_dir, app_url, latency, users, sampler,
                                               cell_children)
                registrations = _read_registrations(cell_dir)
                capture = self._drain(variant, registrations)
            finally:
                sampler.stop()
        finally:
            for process in cell_children:
                process.stop()
                self.children.remove(process)
        return self._cell(variant, latency, users, cell_dir, locust_code, registrations,
                          capture, sampler)

    def _run_locust(self, cell_dir: Path, app_url: str, latency: int, users: int,
                    sampler: CellSampler, watched: list[ManagedProcess]) -> int:
        profile = self.profile
        run_time = run_seconds(profile)
        stop_timeout = profile.inbox_deadline_s + 15
        args = ["-f", str(LOCUSTFILE), "--headless", "--users", str(users),
                "--spawn-rate", str(users), "--run-time", f"{run_time}s",
                "--stop-timeout", f"{stop_timeout:g}", "--host", app_url,
                "--smtp-api", self.api_url, "--smtp-latency", f"{latency}ms",
                "--smtp-faults", "none", "--warmup", f"{profile.warmup_s:g}",
                "--render-allowance-ms", f"{profile.render_allowance_ms:g}",
                "--inbox-deadline", f"{profile.inbox_deadline_s:g}",
                "--samples-out", str(cell_dir), "--csv", str(cell_dir / "locust"),
                "--only-summary", "--loglevel", "WARNING"]
        locust = self._spawn("locust", args, dict(os.environ), cell_dir / "locust.log",
                             module="locust")
        sampler.watch_load(locust.popen.pid)
        deadline = time.monotonic() + run_time + stop_timeout + 60
        while locust.popen.poll() is None:
            for process in watched:
                if not process.alive():
                    raise BenchError(f"{process.name} died during the cell (exit "
                                     f"{process.popen.returncode}); see {process.log_path}")
            if time.monotonic() > deadline:
                raise BenchError(f"locust did not finish in time; see {locust.log_path}")
            time.sleep(0.2)
        code = locust.stop()
        self.children.remove(locust)
        if not (cell_dir / "samples.csv.gz").exists():
            raise BenchError(f"locust wrote no samples (exit {code}); see {locust.log_path}")
        return code

    def _drain(self, variant: str, registrations: list[dict[str, Any]]) -> Capture:
        """Wait (bounded) until every accepted registration's email arrived; count per address.

        Polls fakesmtp's message count, which is cheap, and fetches the messages themselves
        only when enough have arrived (or at the deadline)."""
        wanted = {r["email"] for r in registrations if r["status"] == "303"}
        deadline = time.monotonic() + self.profile.drain_s
        while variant != "baseline" and time.monotonic() < deadline:
            if self._smtp_call("GET", "/api/stats")["received"] >= len(wanted):
                capture = self._captured()
                if wanted <= capture.counts.keys():
                    return capture
            time.sleep(0.25)
        return self._captured()

    def _captured(self) -> Capture:
        received = self._smtp_call("GET", "/api/stats")["received"]
        messages = self._smtp_call("GET", f"/api/messages?limit={CAPTURE_LIMIT}")
        counts: Counter[str] = Counter()
        for message in messages:
            for rcpt in message["rcpt_tos"]:
                counts[rcpt.lower()] += 1
        return Capture(counts, truncated=received > len(messages))

    def _smtp_call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.api_url + path, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def _cell(self, variant: str, latency: int, users: int, cell_dir: Path, locust_code: int,
              registrations: list[dict[str, Any]], capture: Capture,
              sampler: CellSampler) -> dict[str, Any]:
        profile = self.profile
        window = measured_seconds(profile)
        samples = _read_samples(cell_dir)
        warnings: list[str] = []

        def measured(name: str) -> tuple[list[float], int]:
            rows = [s for s in samples if s["name"] == name and s["warmup"] == "0"]
            return ([float(s["ms"]) for s in rows if s["ok"] == "1"],
                    sum(1 for s in rows if s["ok"] != "1"))

        register_ms, register_failures = measured("register")
        verify_ms, verify_failures = measured("verify")
        inp_ms, _ = measured("inp_proxy")
        inbox_ms, inbox_failures = measured("time_to_inbox")
        inp_p75 = stats.percentile(sorted(inp_ms), 75)
        expected = variant != "baseline"
        counts = capture.counts
        accepted = [r for r in registrations if r["status"] == "303"]
        delivered = sum(1 for r in accepted if counts.get(r["email"], 0) >= 1)
        delivery = {
            "registered": len(accepted),
            "delivered": delivered,
            "missing": len(accepted) - delivered if expected else 0,
            "duplicates": sum(max(0, counts.get(r["email"], 0) - 1) for r in accepted),
            "verified": sum(1 for r in accepted if r["verify_status"] == "200"),
            "expected": expected,
        }
        completed = len(verify_ms) if expected else len(register_ms)
        cpu = sampler.load_cpu_percent
        valid = True
        if cpu is not None and cpu > SATURATED_CPU_PERCENT:
            valid = False
            warnings.append(f"load generator saturated: locust used {cpu:.0f}% of a core, so "
                            "its timings include its own queueing")
        if locust_code not in (0, 1):  # 1 is locust's "some requests failed"
            valid = False
            warnings.append(f"locust exited with {locust_code}; see locust.log")
        if capture.truncated:
            valid = False
            warnings.append(f"fakesmtp held more messages than one fetch returns "
                            f"({CAPTURE_LIMIT}): delivery counts are incomplete")
        if not register_ms:
            valid = False
            warnings.append("no successful registration was measured")
        if expected and delivery["missing"]:
            warnings.append(f"{delivery['missing']} of {len(accepted)} emails never arrived "
                            f"within the {profile.drain_s:g} s drain")
        return {
            "variant": variant,
            "smtp_latency_ms": latency,
            "users": users,
            "duration_s": window,
            "warmup_s": profile.warmup_s,
            "register": stats.request_summary(register_ms, register_failures, window),
            "verify": stats.request_summary(verify_ms, verify_failures, window),
            "inp_proxy": {"p75_ms": None if inp_p75 is None else round(inp_p75, 3),
                          "rating": stats.inp_rating(inp_p75),
                          "render_allowance_ms": round(profile.render_allowance_ms, 3)},
            "time_to_inbox": stats.inbox_summary(inbox_ms, inbox_failures),
            "throughput_rps": round(completed / window, 3),
            "delivery": delivery,
            "resources": {"peak_threads": sampler.peak_threads or None,
                          "peak_queue_depth": sampler.peak_queue_depth},
            "load_generator": {"cpu_percent": cpu},
            "files": str(cell_dir.relative_to(self.paths.run_dir)),
            "valid": valid,
            "warnings": warnings,
        }


def run_seconds(profile: Profile) -> int:
    """locust's --run-time takes whole seconds: warm-up plus duration, rounded up."""
    return math.ceil(profile.warmup_s + profile.duration_s)


def measured_seconds(profile: Profile) -> float:
    """The measured window: the run time after the warm-up."""
    return run_seconds(profile) - profile.warmup_s


def _read_samples(cell_dir: Path) -> list[dict[str, str]]:
    with gzip.open(cell_dir / "samples.csv.gz", "rt", newline="") as fh:
        return list(csv.DictReader(fh))


def _read_registrations(cell_dir: Path) -> list[dict[str, Any]]:
    path = cell_dir / "registrations.csv.gz"
    if not path.exists():
        return []
    with gzip.open(path, "rt", newline="") as fh:
        return [{**row, "email": row["email"].lower()} for row in csv.DictReader(fh)]


def _profile_settings(profile: Profile) -> dict[str, Any]:
    settings = asdict(profile)
    del settings["name"]  # the document's "profile"
    return settings


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = ["Bench", "BenchError", "Stopped", "new_run_dir"]
