"""The matrix runner behind ``maillab bench``: every cell of a profile, measured for real.

For each cell (variant x SMTP latency x load) it starts a fresh app (fresh database) under
gunicorn, and the variant's consumer where it has one; waits for health; runs locust
headless as a child process (locust patches the interpreter with gevent, so it never runs in
this one) with a warm-up left out of the stats; waits, bounded, for email still in flight;
reads fakesmtp's capture; hands what it observed to :func:`loadtests.summary.summarize_cell`;
and rewrites results.json. fakesmtp runs once per run. Before the cells, where the profile
asks for it, each variant gets the account-enumeration timing probe (maillab.enumeration) on
a fresh app of its own.

Every child belongs to the run's :class:`~maillab.processes.Supervisor`, which stops it
whatever happened: Ctrl-C, SIGTERM, or a child that died, which stops the run with the reason.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.core.metrics import REGISTER_REQUESTS
from fakesmtp.tls import CERT_FILE, KEY_FILE, self_signed
from loadtests import cellfiles
from loadtests.cellfiles import CellKey
from loadtests.environment import capture_environment
from loadtests.history import git_state
from loadtests.profiles import Profile
from loadtests.results import (
    Attempt,
    Browser,
    CellResult,
    EnumerationCheck,
    Results,
    ScenarioEvent,
    TargetInfo,
    point_latest,
    write_results,
)
from loadtests.scenarios import PLAIN, STARTTLS_AUTH, Scenario
from loadtests.scenarios import scenario as scenario_of
from loadtests.smtpapi import SmtpApi
from loadtests.summary import (
    Capture,
    Observed,
    calibrate,
    summarize_cell,
    worth_another_attempt,
)
from loadtests.target import Target, TargetError, activate, built_in
from maillab.capacity import capacity_rows
from maillab.enumeration import ProbeError, probe
from maillab.ports import free_port
from maillab.processes import ManagedProcess, ProcessError, Stopped, Supervisor
from maillab.sampling import CellSampler, scraped
from maillab.services import ServiceError, Services
from maillab.targetrun import Recipe, Sizing, Smtp, recipes, reset_database, wait_ready
from maillab.targetrun import start as start_recipe

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadtests" / "locustfile.py"


@dataclass
class _App:
    url: str
    children: list[ManagedProcess]  # the server first, then the consumer where there is one
    # Where the queue's depth is read (a consumer's metrics URL and gauge), if anywhere.
    consumer_metrics: str | None = None
    queue_metric: str = "maillab_queue_depth"
    # How each child was started, so a scenario can start it again.
    recipes: list[Recipe] = field(default_factory=list)
    down: set[int] = field(default_factory=set)  # children a scenario stopped on purpose

    def watched(self) -> list[ManagedProcess]:
        """The children that should be running now."""
        return [c for i, c in enumerate(self.children) if i not in self.down]


class BenchError(RuntimeError):
    """The run cannot start or cannot go on; the message is the reason."""


def new_run_dir(root: Path, profile: Profile, out: Path | None) -> Path:
    if out is not None:
        if out.exists() and any(out.iterdir()):
            raise BenchError(f"--out {out} exists and is not empty")
        return out
    return root / (time.strftime("%Y%m%d-%H%M%S") + f"-{profile.name}")


class Bench:
    def __init__(self, profile: Profile, run_dir: Path, results_root: Path,
                 smtp_port: int = 0, api_port: int = 0,
                 on_cell: Callable[[int, CellKey], None] | None = None,
                 on_stage: Callable[[str], None] | None = None,
                 database_url: str | None = None, queue_url: str | None = None,
                 broker_url: str | None = None, on_note: Callable[[str], None] | None = None,
                 target: Target | None = None, skipped: dict[str, str] | None = None) -> None:
        self.profile = profile
        # Whose sign-up is measured: the lab's own variants unless a target file says.
        self.target = target or built_in()
        activate(self.target.variants)
        self.run_dir = run_dir
        self.results_root = results_root
        self._free_ports = not smtp_port and not api_port  # picked here, so can be re-picked
        self.smtp_port = smtp_port or free_port()
        self.api_port = api_port or free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.on_cell = on_cell or (lambda _i, _key: None)
        self.on_stage = on_stage or (lambda _text: None)
        self.on_note = on_note or (lambda _text: None)  # a line worth keeping in the output
        self.results = Results(
            run_id=run_dir.name, profile=profile.name, profile_settings=profile.settings(),
            started_at=_now(), finished_at=None, complete=False, stopped_reason=None,
            environment=capture_environment(profile.workers, profile.threads,
                                            profile.password_hash, profile.worker_threads),
            cells=[], target=TargetInfo(
                name=self.target.name, file=_shown_path(self.target.source),
                sha256=self.target.sha256, description=self.target.description,
                variants=dict(self.target.variants),
                built_in=self.target.built_in, source=git_state(self.target.folder),
                gate_rules=str(self.target.rules_file) if self.target.rules_file else None),
            skipped={**(skipped or {}), **skipped_work(self.target, profile)})
        self.supervisor = Supervisor(run_dir)
        self.services = Services(profile, run_dir, self.supervisor, database_url, queue_url,
                                 broker_url)
        self._smtp: tuple[str, ManagedProcess] | None = None  # fakesmtp's mode and process
        self._smtp_password = secrets.token_urlsafe(16)  # the starttls+auth login, per run
        self._scratch: Path | None = None  # what the run needs and does not keep
        self.events: list[ScenarioEvent] = []  # what the current cell's scenario did
        self.fault_ended_at: float | None = None  # when its last action was done

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> Results:
        """Run every cell; results.json is rewritten after each, and once more at the end."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_results(self.run_dir, self.results)
        point_latest(self.results_root, self.run_dir)
        try:
            with self.supervisor:
                self._start_smtp()
                try:
                    self.services.start()
                    for key in self.profile.cells():  # before any cell: one it cannot restart
                        if scenario_of(key.scenario).kill == "broker":
                            self.services.broker_for(key.variant)
                except ServiceError as exc:
                    raise BenchError(str(exc)) from None
                self.results.environment.services = dict(self.services.described)
                if self.profile.enumeration_samples and self.target.built_in:
                    for name in self.profile.variants:
                        self.on_stage(f"{name}: account-enumeration timing probe")
                        self.results.enumeration.extend(self._probe_enumeration(name))
                        write_results(self.run_dir, self.results)
                for index, key in enumerate(self.profile.cells()):
                    self.on_cell(index, key)
                    if self._past_capacity(key):
                        continue
                    self.results.cells.append(self._run_cell_once_more_if_passing(key))
                    if self.profile.capacity:
                        self.results.capacity = capacity_rows(self.results.cells, self.profile)
                    calibrate(self.results)
                    write_results(self.run_dir, self.results)
            self.results.complete = True
        except Stopped as stop:
            self.results.stopped_reason = f"stopped by {stop}"
            raise
        except (BenchError, ProcessError, OSError) as exc:
            self.results.stopped_reason = str(exc)
            raise BenchError(str(exc)) from None
        finally:
            self.results.finished_at = _now()
            write_results(self.run_dir, self.results)
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
        return self.results

    def _past_capacity(self, key: CellKey) -> bool:
        """In a capacity run, whether a lower rate of this series already broke the SLO."""
        if not self.profile.capacity:
            return False
        return any(row.variant == key.variant and row.smtp_latency_ms == key.latency_ms
                   and row.broke_at_rps is not None and key.load.rate > row.broke_at_rps
                   for row in self.results.capacity)

    def _start_smtp(self, mode: str = PLAIN) -> None:
        """fakesmtp in ``mode`` on the run's ports, stopping the one in another mode first
        (cells run mode by mode, so this happens once per mode). Ports picked free a moment
        ago can be taken before fakesmtp binds them (by any connection's ephemeral port): then
        it is started again on new ones, at most three times; ports given on the command line
        are not changed."""
        if self._smtp is not None:
            if self._smtp[0] == mode:
                return
            self.supervisor.stop(self._smtp[1])
            self._smtp = None
        flags, env = self._tls_flags() if mode == STARTTLS_AUTH else ([], {})
        log = self.run_dir / ("fakesmtp.log" if mode == PLAIN
                              else f"fakesmtp-{mode.replace('+', '-')}.log")
        for attempt in range(3):
            smtp = self.supervisor.spawn(
                "fakesmtp", ["smtp", "--port", str(self.smtp_port), "--api-port",
                             str(self.api_port), "--seed", "1", *flags],
                {**os.environ, **env}, log)
            try:
                smtp.wait_for_line(r"^fakesmtp HTTP API ", timeout=30)
                self._smtp = (mode, smtp)
                return
            except ProcessError:
                self.supervisor.stop(smtp)
                if not self._free_ports or attempt == 2:
                    raise
                self.smtp_port, self.api_port = free_port(), free_port()
                self.api_url = f"http://127.0.0.1:{self.api_port}"

    def _tls_flags(self) -> tuple[list[str], dict[str, str]]:
        """fakesmtp's flags and environment for ``starttls+auth``: a certificate made for
        this run (kept out of the results, removed with the run's scratch folder) and its one
        login, given in the environment (not on a command line anyone can list)."""
        cert, key = self._tls_files()
        return (["--tls-cert", str(cert), "--tls-key", str(key)],
                {"FAKESMTP_AUTH": f"{SMTP_USER}:{self._smtp_password}"})

    def _tls_files(self) -> tuple[Path, Path]:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="maillab-bench-"))
            return self_signed(self._scratch / "tls")
        return self._scratch / "tls" / CERT_FILE, self._scratch / "tls" / KEY_FILE

    def _smtp_for(self, mode: str) -> Smtp:
        """What the app (and its consumer) is told about the SMTP server in ``mode``: for
        ``starttls+auth``, a provider's settings, with the run's certificate as the CA to
        trust."""
        if mode == PLAIN:
            return Smtp("127.0.0.1", self.smtp_port)
        cert, _ = self._tls_files()
        return Smtp("127.0.0.1", self.smtp_port, tls=True, username=SMTP_USER,
                    password=self._smtp_password, ca_file=str(cert))

    # -- one cell -----------------------------------------------------------------------------

    def _start_app(self, name: str, folder: Path, smtp: str = PLAIN) -> _App:
        """The target's variant ``name`` with a fresh instance in ``folder``, and the processes
        it runs (its consumer), each ready; stop them with
        ``self.supervisor.stop(*app.children)``."""
        profile = self.profile
        try:
            services = self.services.for_cell()
        except ServiceError as exc:
            raise BenchError(str(exc)) from None
        sizing = Sizing(workers=profile.workers, threads=profile.threads,
                        worker_threads=profile.worker_threads, consumers=profile.consumers,
                        password_hash=profile.password_hash)
        app = _App("", [])
        try:
            started = recipes(self.target, name, sizing, self._smtp_for(smtp), folder, services)
            reset_database(self.target, started, folder)
            if not started.recipes:  # an app that runs elsewhere: up before the cell
                wait_ready(started.url + self.target.app.ready, self.target.app.ready_timeout_s)
            app = _App(started.url, [], recipes=started.recipes)
            for recipe in started.recipes:
                app.children.append(start_recipe(self.supervisor, recipe))
        except TargetError as exc:
            self.supervisor.stop(*app.children)
            self.services.end_cell()
            raise BenchError(str(exc)) from None
        except BaseException:
            self.supervisor.stop(*app.children)
            self.services.end_cell()
            raise
        # The queue is one, whichever consumer is asked its depth.
        queue = next((r for r in started.recipes if r.metrics_url and r.queue_depth), None)
        if queue is not None:
            app.consumer_metrics, app.queue_metric = queue.metrics_url, str(queue.queue_depth)
        return app

    def _probe_enumeration(self, name: str) -> list[EnumerationCheck]:
        """The timing probe on a fresh app of ``name``, with SMTP answering at once."""
        folder = self.run_dir / "enumeration" / name
        folder.mkdir(parents=True)
        self._smtp_call("POST", "/api/reset")
        self._smtp_call("PATCH", "/api/config", {"latency": {"eom": "0ms"}, "faults": []})
        app = self._start_app(name, folder)
        try:
            return probe(app.url, name, self.profile.enumeration_samples)
        except (ProbeError, OSError) as exc:
            raise BenchError(f"the timing probe of {name} failed: {exc}") from None
        finally:
            self.supervisor.stop(*app.children)
            self._end_cell()

    def _run_cell_once_more_if_passing(self, key: CellKey) -> CellResult:
        """The cell; run again once when it was invalid for a passing reason only (a late
        timer or a load generator that fell behind: a neighbour's burst on a shared machine),
        with the first attempt kept in its own folder and recorded in the cell."""
        cell = self._run_cell(key)
        if not worth_another_attempt(cell):
            return cell
        first = f"{key.folder}.attempt-1"
        (self.run_dir / key.folder).rename(self.run_dir / first)
        self.on_note(f"{key.label}: timing invalid ({'; '.join(cell.warnings)}); running it again, "
                     f"the first attempt kept in {first}")
        again = self._run_cell(key)
        again.attempts = [Attempt(files=first, invalid_for=cell.invalid_for,
                                  warnings=cell.warnings)]
        return again

    def _run_cell(self, key: CellKey) -> CellResult:
        self.events = []
        self.fault_ended_at = None
        cell_dir = self.run_dir / key.folder
        cell_dir.mkdir(parents=True)
        self._start_smtp(key.smtp)
        self._smtp_call("POST", "/api/reset")
        variant = self.target.variant(key.variant)
        app = self._start_app(key.variant, cell_dir, key.smtp)
        try:
            sampler = CellSampler(app.children[0].popen.pid if app.children else None,
                                  app.consumer_metrics,
                                  [c.popen.pid for c in app.children[1:]],
                                  queue_metric=app.queue_metric)
            sampler.start()
            try:
                locust_exit, merged, (browser, browser_note) = self._run_locust(
                    key, cell_dir, app, sampler)
                register_requests = scraped(f"{app.url}/metrics", REGISTER_REQUESTS[0])
                registrations = cellfiles.read_registrations(cell_dir)
                capture = self._drain(variant.sends_email, app.consumer_metrics,
                                      app.queue_metric)
            finally:
                sampler.stop()
        finally:
            self.supervisor.stop(*app.children)
            self._end_cell()
        observed = Observed(
            samples=cellfiles.read_samples(cell_dir), registrations=registrations,
            capture=capture, sends_email=variant.sends_email,
            peak_threads=sampler.peak_threads if app.children else None,
            peak_queue_depth=sampler.peak_queue_depth,
            load_cpu_percent=sampler.load_cpu_percent, app_cpu_percent=sampler.app_cpu_percent,
            load_processes=sampler.load_processes or None, load_rss=sampler.load_rss,
            merged=merged, app_register_requests=register_requests,
            locust_exit=locust_exit, events=self.events,
            fault_ended_at=self.fault_ended_at, browser=browser, browser_note=browser_note)
        return summarize_cell(key, self.profile, observed)

    def _run_locust(self, key: CellKey, cell_dir: Path, app: _App, sampler: CellSampler,
                    ) -> tuple[int, cellfiles.Merged, tuple[Browser | None, str | None]]:
        """Locust's exit code, how its processes' samples were joined, and the browser probe's
        block and note (None, None: no probe)."""
        profile = self.profile
        stop_timeout = profile.inbox_deadline_s + 15
        run_time = profile.run_time_s(key)
        processes = profile.load_processes
        # Open loop: one user per load process runs that process's share of the schedule.
        users = key.load.users or processes
        scenario = scenario_of(key.scenario)
        distributed = ["--processes", str(processes), "--master-bind-host", "127.0.0.1",
                       *_master_port(free_port())] if processes > 1 else []
        args = ["-f", str(LOCUSTFILE), "--headless", *distributed, "--users", str(users),
                "--spawn-rate", str(users), "--run-time", f"{run_time}s",
                "--arrival-rate", f"{key.load.rate:g}", "--arrivals", profile.arrivals,
                "--arrival-seed", str(profile.seed),
                "--max-in-flight", str(profile.max_in_flight),
                "--stop-timeout", f"{stop_timeout:g}", "--host", app.url,
                "--smtp-api", self.api_url, "--smtp-latency", f"{key.latency_ms}ms",
                "--smtp-faults", ";".join(scenario.faults) or "none",
                "--warmup", f"{profile.warmup_s:g}",
                "--render-allowance-ms", f"{profile.render_allowance_ms:g}",
                "--inbox-deadline", f"{profile.inbox_deadline_s:g}",
                "--target", self.target.source, "--target-variant", key.variant,
                "--samples-out", str(cell_dir), "--csv", str(cell_dir / "locust"),
                "--only-summary", "--loglevel", "WARNING"]
        locust = self.supervisor.spawn("locust", args, dict(os.environ),
                                       cell_dir / "locust.log", module="locust")
        sampler.watch_load(locust.popen.pid)
        browser = _BrowserProbe.start(app.url, profile.browser_signups, profile.warmup_s,
                                      profile.measured_s(key), cell_dir, self.target)
        actions = self._scenario_actions(scenario, time.time(), profile.warmup_s,
                                         profile.measured_s(key), app, sampler)
        deadline = time.monotonic() + run_time + stop_timeout + 60
        while locust.popen.poll() is None:
            if scenario.kill == "broker":
                self._restart_exited(app, sampler)
            self.supervisor.check(app.watched(), when="during the cell")
            while actions and actions[0][0] <= time.time():
                self._act(*actions.pop(0)[1:])
            if time.monotonic() > deadline:
                raise BenchError(f"locust did not finish in time; see {locust.log_path}")
            time.sleep(0.2)
        # A window shorter than kill + restart: what is down comes back now, as a process
        # manager would bring it back, so the drain can deliver what waits.
        for _, what, act in actions:
            self._act(what + " (after the load ended)", act)
        if scenario.kill == "broker":
            self._restart_exited(app, sampler)
        code = locust.popen.returncode
        sampler.load_ended_now()
        self.supervisor.stop(locust)
        browser_figures = browser.finish() if browser else (None, None)
        # Distributed: every worker's part, now that all have exited (alone, locust merged its
        # own and this reads back what it joined).
        merged = cellfiles.merge_parts(cell_dir)
        if not (cell_dir / cellfiles.SAMPLES_FILE).exists():
            raise BenchError(f"locust wrote no samples (exit {code}); see {locust.log_path}")
        return code, merged, browser_figures

    def _restart_exited(self, app: _App, sampler: CellSampler | None) -> None:
        """A consumer that exited on its own while its broker was away is started again and
        the event recorded, as a process manager (systemd's Restart=) would: what the exit
        cost shows in the counts, and the run goes on. (Seen: a Celery worker with late acks
        on Redis stops with "Unrecoverable error" when Redis goes away.)"""
        for index, child in enumerate(app.children):
            if index and index not in app.down and not child.alive():
                code = child.popen.returncode
                self._act(f"{app.recipes[index].name} exited on its own (exit {code}); started "
                          "again, as a process manager would",
                          functools.partial(self._restart, app, index, sampler))

    def _act(self, what: str, act: Callable[[], None]) -> None:
        """Do one scenario action and record it; one that fails is recorded with the reason
        (which makes the cell invalid)."""
        try:
            act()
            self.fault_ended_at = time.time()  # the last action ends the fault
        except (OSError, ProcessError) as exc:
            what = f"could not apply the scenario ({what}): {exc}"
        self.events.append(ScenarioEvent(at=round(time.time(), 3), what=what))

    def _scenario_actions(self, scenario: Scenario, started: float, warmup_s: float,
                          measured_s: float, app: _App | None = None,
                          sampler: CellSampler | None = None,
                          ) -> list[tuple[float, str, Callable[[], None]]]:
        """What the runner does during the cell, and when (epoch seconds), in order: an SMTP
        outage covers the middle third of the measured window; a kill lands in its middle,
        and the process is started again ``restart_after_s`` later, as a process manager
        would."""
        actions: list[tuple[float, str, Callable[[], None]]] = []
        if scenario.window_faults:
            begin = started + warmup_s + measured_s / 3
            end = started + warmup_s + 2 * measured_s / 3

            def faults(rules: tuple[str, ...]) -> Callable[[], None]:
                return lambda: self._smtp_call("PATCH", "/api/config", {"faults": list(rules)})

            actions += [(begin, f"SMTP faults on: {'; '.join(scenario.window_faults)}",
                         faults(scenario.faults + scenario.window_faults)),
                        (end, "SMTP faults off", faults(scenario.faults))]
        if scenario.kill == "broker" and app is not None:
            at = started + warmup_s + measured_s / 2
            try:
                broker = self.services.broker_for(app.recipes[0].name)
            except ServiceError as exc:
                raise BenchError(str(exc)) from None
            how = signal.Signals(scenario.signal).name
            actions += [(at, f"{how} to the {broker.kind} broker", broker.stop),
                        (at + scenario.restart_after_s, f"{broker.kind} broker started again",
                         broker.start)]
        elif scenario.kill is not None and app is not None:
            index = 0 if scenario.kill == "app" else 1
            at = started + warmup_s + measured_s / 2
            name = app.recipes[index].name
            sig = scenario.signal
            if scenario.in_place and self.target.app.reload_signal is not None:
                sig = signal.Signals["SIG" + self.target.app.reload_signal]  # the app's reload
            how = signal.Signals(sig).name
            if scenario.in_place:
                actions.append((at, f"{how} to {name} ({scenario.kill}, in place)",
                                lambda: app.children[index].popen.send_signal(sig)))
            else:
                actions += [(at, f"{how} to {name} ({scenario.kill})",
                             lambda: self._kill(app, index, scenario.signal)),
                            (at + scenario.restart_after_s, f"{name} started again",
                             lambda: self._restart(app, index, sampler))]
        return sorted(actions, key=lambda action: action[0])

    def _kill(self, app: _App, index: int, sig: int) -> None:
        """Signal a child's whole process group (gunicorn's master and workers together, as
        systemd does); SIGTERM is a graceful stop, waited for."""
        app.down.add(index)  # not a death to stop the run for
        self.supervisor.stop_with(app.children[index], sig)

    def _restart(self, app: _App, index: int, sampler: CellSampler | None) -> None:
        recipe = app.recipes[index]
        # A log of its own per start: a consumer may be started again twice in one cell (a
        # crash, then an exit of its own while the broker is away).
        log = recipe.log.with_name(f"{recipe.log.stem}-restarted{recipe.log.suffix}")
        number = 1
        while log.exists():
            number += 1
            log = recipe.log.with_name(f"{recipe.log.stem}-restarted-{number}{recipe.log.suffix}")
        again = Recipe(**{**vars(recipe), "log": log})
        process = start_recipe(self.supervisor, again)
        app.children[index] = process
        app.down.discard(index)
        if sampler is not None:
            if index == 0:
                sampler.server_pid = process.popen.pid
            else:
                sampler.consumer_pids[index - 1] = process.popen.pid

    def _end_cell(self) -> None:
        """The cell's database goes (its app and consumers have stopped)."""
        try:
            self.services.end_cell()
        except ServiceError as exc:
            raise BenchError(str(exc)) from None

    def _drain(self, sends_email: bool, consumer_metrics: str | None,
               queue_metric: str = "maillab_queue_depth") -> Capture:
        """Wait, bounded by the profile's ``drain_s``, until nothing is left in flight: no SMTP
        connection open at fakesmtp (a thread or a request still sending) and no task waiting
        in the variant's queue (retries scheduled for later included), three polls in a row
        with the message count unchanged. Then count per address, so a late retry or duplicate is
        seen too. How the wait ended goes into the cell."""
        started = time.monotonic()
        deadline = started + self.profile.drain_s
        quiet_polls, received, state = 0, -1, ""
        while sends_email:
            stats = self._smtp_call("GET", "/api/stats")
            depth = (scraped(consumer_metrics, queue_metric) or 0) if consumer_metrics else 0
            open_now = stats["connections"]["open"]
            state = f"{open_now} SMTP connections open" + (
                f", {depth} tasks queued" if consumer_metrics else "")
            quiet = open_now == 0 and depth == 0 and stats["received"] == received
            quiet_polls = quiet_polls + 1 if quiet else 0
            received = stats["received"]
            if quiet_polls >= 3:
                waited = time.monotonic() - started
                return self._captured(f"nothing left in flight after {waited:.1f} s")
            if time.monotonic() >= deadline:
                return self._captured(f"stopped at the {self.profile.drain_s:g} s bound with "
                                      f"{state}")
            time.sleep(0.25)
        return self._captured("the variant sends nothing")

    def _captured(self, drain: str) -> Capture:
        return SmtpApi(self.api_url).capture(drain)

    def _smtp_call(self, method: str, path: str, body: Any = None) -> Any:
        return SmtpApi(self.api_url).call(method, path, body)


class _BrowserProbe:
    """The browser probe's sign-ups in a thread of their own, spread over the measured window
    while locust runs; where Chromium or Playwright is missing the cell goes on without them
    and says why."""

    def __init__(self, url: str, count: int, warmup_s: float, measured_s: float,
                 cell_dir: Path, target: Target) -> None:
        self.url, self.count, self.cell_dir, self.target = url, count, cell_dir, target
        self.warmup_s, self.spacing_s = warmup_s, measured_s / count
        self.stop = threading.Event()
        self.signups: list[Any] = []
        self.note: str | None = None
        self.thread = threading.Thread(target=self._run, name="browser-probe", daemon=True)

    @classmethod
    def start(cls, url: str, count: int, warmup_s: float, measured_s: float,
              cell_dir: Path, target: Target) -> _BrowserProbe | None:
        if not count:
            return None
        found = cls(url, count, warmup_s, measured_s, cell_dir, target)
        found.thread.start()
        return found

    def _run(self) -> None:
        from maillab.probe import ProbeFailed, ProbeUnavailable, form_of, probe

        if self.stop.wait(self.warmup_s):
            return
        try:
            self.signups = probe(self.url, self.count, form_of(self.target),
                                 spacing_s=self.spacing_s, stop=self.stop)
        except ProbeUnavailable as exc:
            self.note = f"no browser figures: {exc}"
        except ProbeFailed as exc:
            self.note = f"the browser probe stopped: {exc}"

    def finish(self, timeout_s: float = 120.0) -> tuple[Browser | None, str | None]:
        """Wait (bounded) for the sign-ups under way, then the cell's browser block."""
        from maillab.probe import summarize, write_signups

        self.thread.join(timeout_s)
        self.stop.set()
        self.thread.join(5)
        if not self.signups:
            return None, self.note or "the browser probe made no sign-up"
        write_signups(self.cell_dir, self.signups)
        block = summarize(self.signups)
        note = self.note or (None if block.count == self.count else
                             f"the browser probe made {block.count} of {self.count} sign-ups")
        return block, note


def _master_port(port: int) -> list[str]:
    """locust's master listens on ``port`` and its forked workers connect to it there."""
    return ["--master-bind-port", str(port), "--master-port", str(port)]


SMTP_USER = "maillab"  # the starttls+auth cells' login at fakesmtp


def skipped_work(target: Target, profile: Profile) -> dict[str, str]:
    """What ``profile`` asks that ``target`` cannot do, and why (kept in results.json): a
    scenario that applies to none or only some of its variants, the enumeration probe."""
    skipped: dict[str, str] = {}
    for name in profile.scenarios:
        left_out = [v for v in profile.variants if target.variants[v].sends_email
                    and not scenario_of(name).applies_to(v)]
        if left_out:
            needs = ("a server its email waits in (broker)" if scenario_of(name).needs_broker
                     else "a process that delivers the email (delivered_by)")
            skipped[name] = f"not run for {', '.join(left_out)}: it needs {needs}"
    if profile.enumeration_samples and not target.built_in:
        skipped["enumeration"] = ("the account-enumeration probe drives maillab's own /resend; "
                                  "a target file has no such step")
    return skipped


def _shown_path(path: str) -> str:
    """A target file's path relative to the working folder where it is under it (the lab's
    own, a user's project), so results do not carry a home folder's name."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


__all__ = ["Bench", "BenchError", "Stopped", "new_run_dir"]
