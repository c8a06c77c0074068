"""The Lab tab of locust's web UI: what a test costs in email, live, and faults at a click.

Whenever the locustfile runs with a web UI (``maillab ui``, or plain ``locust -f
loadtests/locustfile.py``), the master (or the only process) serves, beside locust's own:

- ``GET /lab/state``: the figures the tab shows, every 2 s while a test runs and once more
  after it stops: sign-ups offered, started, dropped; emails delivered, in flight, lost
  silently, failed visibly, refused, duplicated, late; time to inbox p50/p95/p99; the app's
  live threads, queue depth and consumer (from ``maillab ui``'s control server); what
  fakesmtp is injecting; the actions taken and a timeline for the charts. The buckets come
  from :func:`loadtests.summary.delivery` and :func:`loadtests.summary.arrivals` over the
  finished sign-ups and fakesmtp's capture (:class:`loadtests.smtpapi.SmtpApi`): the same
  code, on the same kind of inputs, that summarises a bench cell.
- ``POST /lab/action``: an SMTP scenario now (``smtp-outage`` ... ``smtp-drop``, the bench's
  names and rules; ``smtp-clear`` lifts them) or a process scenario now (``app-crash``,
  ``app-deploy``, ``consumer-crash``, ``consumer-deploy``: signalled and started again by
  ``maillab ui``). Each is logged with its time and the counts it found.
- ``GET /lab/run.zip`` and ``GET /lab/report``: the last test as a bench cell (samples,
  registrations, results.json) and its report, made by the bench's and the report's code.

Distributed, each worker sends the sign-ups it finished (and how many it has in flight) to
the master every 2 s; locust's reset clears them everywhere and starts a new window.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.cellfiles import Registration
from loadtests.scenarios import SCENARIOS
from loadtests.stats import percentile

LOG = logging.getLogger("maillab.lab")
# The lab's build of locust's web UI (make webui); locust's stock UI where it is not built.
WEBUI_BUILD = Path(__file__).resolve().parent.parent / "webui" / "dist"
PERIOD_S = 2.0
MESSAGE = "maillab_lab"  # worker -> master: finished sign-ups and the count in flight
TIMELINE_POINTS = 1800  # an hour at one point per 2 s; older points are thinned
SMTP_ACTIONS = {name: s for name, s in SCENARIOS.items() if s.faults or s.window_faults}
PROCESS_ACTIONS = {name: s for name, s in SCENARIOS.items()
                   if s.kill is not None and not s.in_place}
CLEAR = "smtp-clear"


class ActionError(ValueError):
    """An action that cannot be taken; the message says why, in one line."""


@dataclass
class Action:
    at: float
    name: str
    detail: str
    ok: bool
    # The counts when it was taken: the tab shows what each action cost since.
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Window:
    """What one test (or the part since locust's reset) has seen."""

    started_at: float = field(default_factory=time.time)
    finished: dict[str, Registration] = field(default_factory=dict)  # by address
    in_flight: dict[str, int] = field(default_factory=dict)  # by process
    actions: list[Action] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    fault_ended_at: float | None = None  # when the last outage was lifted (for "late")
    stopped_at: float | None = None


def registration_json(record: Registration) -> dict[str, Any]:
    return asdict(record)


def registration_from(data: dict[str, Any]) -> Registration:
    return Registration(**data)


class Lab:
    """The master's (or the only process's) view of the test for the tab."""

    def __init__(self, smtp_api: str, control: str | None, root: Path | None,
                 sends_email: Callable[[], bool], variant: Callable[[], str],
                 clock: Callable[[], float] = time.time) -> None:
        from loadtests.smtpapi import SmtpApi

        self.smtp_api = smtp_api
        self.smtp = SmtpApi(smtp_api, timeout_s=5)
        self.root = root
        self.test: Any = None  # the current or last test's files (loadtests.labrun.LabTest)
        self.control = control.rstrip("/") if control else None
        self.sends_email = sends_email
        self.variant = variant
        self.clock = clock
        self.window = Window(started_at=clock())
        self.last: dict[str, Any] = {}

    # -- what the processes running users report ----------------------------------------

    def reset(self) -> None:
        """A new window (a test starts, or locust's reset): nothing carried over but the
        processes' counts in flight (their sign-ups under way finish in the window before)."""
        self.window = Window(started_at=self.clock())
        self.last = {}

    def begin(self, variant: str, latency: str, rate: float, users: int) -> Path:
        """A new test: a new window and a new folder for its files (its cell's folder)."""
        from loadtests.labrun import new_test

        self.reset()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="maillab-lab-"))
        self.test = new_test(self.root, variant, latency, rate, users)
        return Path(self.test.cell_dir)

    def build(self) -> Path:
        """The last test as a bench cell with its report (:func:`loadtests.labrun.build`)."""
        from loadtests.labrun import build

        if self.test is None:
            raise ActionError("no test has run yet")
        if self.window.stopped_at is None:
            raise ActionError("the test is still running: stop it first")
        return Path(build(self.test, self.smtp_api, self.window.fault_ended_at))

    def add(self, process: str, finished: list[Registration], in_flight: int) -> None:
        for record in finished:
            # A sign-up that began before locust's reset belongs to the window before.
            if record.intended_at is None or record.intended_at >= self.window.started_at:
                self.window.finished[record.email] = record
        self.window.in_flight[process] = in_flight

    def stopped(self) -> None:
        self.window.stopped_at = self.clock()

    # -- figures --------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Every figure of the tab, from the same functions a bench cell is summarised with."""
        from loadtests.summary import arrivals, delivery

        window = self.window
        finished = list(window.finished.values())
        in_flight = sum(window.in_flight.values())
        errors: list[str] = []
        try:
            capture = self.smtp.capture()
        except OSError as exc:
            capture, errors = None, [str(exc)]
        sends = self.sends_email()
        found: dict[str, Any] = {"at": self.clock(), "since": window.started_at,
                                 "running": window.stopped_at is None,
                                 "variant": self.variant(), "sends_email": sends,
                                 "in_flight": in_flight, "errors": errors,
                                 "reporting": sorted(window.in_flight)}
        schedule = arrivals(finished)
        found["arrivals"] = {"offered": schedule.offered + in_flight,
                             "started": schedule.started + in_flight,
                             "dropped": schedule.dropped,
                             "lag_p99_ms": schedule.lag_p99_ms}
        if capture is not None:
            counts = delivery(finished, capture, sends, window.fault_ended_at)
            found["delivery"] = {
                "registered": counts.registered, "delivered": counts.delivered,
                "missing": counts.missing, "failed_visibly": counts.failed_visibly,
                "refused": counts.refused, "duplicates": counts.duplicates,
                "late": counts.late, "verified": counts.verified,
                "warmup_excluded": counts.warmup_excluded}
            found["smtp"] = self._smtp_state(capture)
        inbox = sorted(r.inbox_ms for r in finished
                       if r.inbox_ms is not None and not r.warmup and not r.dropped)
        found["time_to_inbox"] = {"count": len(inbox),
                                  **{f"p{p}_ms": percentile(inbox, p) for p in (50, 95, 99)}}
        found["processes"] = self._processes()
        d = found.get("delivery")
        if d is not None:
            # Live, an email not arrived may still sit in the variant's queue (a retry due
            # later): at most the queue's depth of the missing are "still queued", the rest
            # are lost. After the drain the queue is empty and "missing" is the bench's.
            depth = found["processes"].get("queue_depth") or 0
            d["still_queued"] = min(d["missing"], depth)
            d["lost_silently"] = d["missing"] - d["still_queued"]
        # Nothing left that could still deliver: no sign-up waiting, no task queued (retries
        # included), no SMTP conversation open; until then "lost" may yet arrive (late).
        smtp_open = (found.get("smtp") or {}).get("open")
        found["drained"] = (not in_flight and not found["processes"].get("queue_depth")
                            and not smtp_open)
        found["actions"] = [asdict(a) for a in window.actions]
        self._point(found)
        found["timeline"] = window.timeline
        self.last = found
        return found

    def _smtp_state(self, capture: Any) -> dict[str, Any]:
        state: dict[str, Any] = {}
        try:
            config = self.smtp.call("GET", "/api/config")
            state["latency"] = config.get("latency")
            state["faults"] = config.get("faults")
        except OSError as exc:
            state["error"] = str(exc)
        state["open"] = capture.open_connections  # read with the capture, not asked again
        smtp = capture.smtp
        if smtp is not None:
            state.update(attempts=smtp.attempts, received=smtp.received,
                         injected=smtp.injected, by_rule=smtp.by_rule,
                         lateness_p99_ms={phase: late.lateness_p99_ms
                                          for phase, late in smtp.latency.items()})
        return state

    def _processes(self) -> dict[str, Any]:
        """The app's and consumer's state from ``maillab ui``'s control server, or why none."""
        if self.control is None:
            return {"available": False,
                    "reason": "run under maillab ui to see and signal the app's processes"}
        from loadtests.smtpapi import SmtpApi  # the same small JSON client

        try:
            state = SmtpApi(self.control, timeout_s=5).call(
                "GET", f"/state?variant={self.variant()}")
        except OSError as exc:
            return {"available": False, "reason": str(exc)}
        return {"available": True, **state}

    def _point(self, found: dict[str, Any]) -> None:
        timeline = self.window.timeline
        d = found.get("delivery") or {}
        timeline.append({"t": round(found["at"] - self.window.started_at, 1),
                         "delivered": d.get("delivered"), "missing": d.get("lost_silently"),
                         "failed_visibly": d.get("failed_visibly"),
                         "in_flight": found["in_flight"],
                         "inbox_p50_ms": found["time_to_inbox"]["p50_ms"],
                         "inbox_p95_ms": found["time_to_inbox"]["p95_ms"]})
        if len(timeline) > TIMELINE_POINTS:
            del timeline[:len(timeline) - TIMELINE_POINTS:2]  # every other old point goes

    # -- actions ----------------------------------------------------------------------------

    def act(self, name: str) -> Action:
        """Take the action ``name`` now and log it; :class:`ActionError` for an unknown or
        impossible one (also logged)."""
        counts = {k: v for k, v in (self.last.get("delivery") or {}).items()
                  if isinstance(v, int)}
        try:
            detail = self._act(name)
        except ActionError as exc:
            self.window.actions.append(Action(self.clock(), name, str(exc), False, counts))
            raise
        action = Action(self.clock(), name, detail, True, counts)
        self.window.actions.append(action)
        LOG.info("lab: %s: %s", name, detail)
        return action

    def _act(self, name: str) -> str:
        if name == CLEAR:
            self._faults([])
            self.window.fault_ended_at = self.clock()
            return "fakesmtp answers every message again"
        if name in SMTP_ACTIONS:
            scenario = SMTP_ACTIONS[name]
            rules = [*scenario.faults, *scenario.window_faults]
            self._faults(rules)
            return f"fakesmtp applies {'; '.join(rules)} from now until lifted"
        if name in PROCESS_ACTIONS:
            scenario = PROCESS_ACTIONS[name]
            if self.control is None:
                raise ActionError(f"{name}: the lab can only signal processes it started "
                                  "(run under maillab ui)")
            from loadtests.smtpapi import SmtpApi

            try:
                answer = SmtpApi(self.control, timeout_s=30).call("POST", "/signal", {
                    "variant": self.variant(), "process": scenario.kill,
                    "signal": int(scenario.signal),
                    "restart_after_s": scenario.restart_after_s})
            except OSError as exc:
                raise ActionError(f"{name}: {exc}") from None
            return str(answer.get("detail", ""))
        known = [CLEAR, *SMTP_ACTIONS, *PROCESS_ACTIONS]
        raise ActionError(f"unknown action {name!r}; known: {', '.join(known)}")

    def _faults(self, rules: list[str]) -> None:
        try:
            self.smtp.call("PATCH", "/api/config", {"faults": rules})
        except OSError as exc:
            raise ActionError(str(exc)) from None


def actions_offered() -> list[dict[str, str]]:
    """The buttons of the tab, with what each does in one line."""
    return [{"name": name, "summary": s.summary, "kind": "smtp"}
            for name, s in SMTP_ACTIONS.items()] + [
        {"name": CLEAR, "summary": "Lift every fault: fakesmtp answers every message again.",
         "kind": "smtp"}] + [
        {"name": name, "summary": s.summary, "kind": "process"}
        for name, s in PROCESS_ACTIONS.items()]

