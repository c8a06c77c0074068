"""The maillab load: sign-ups, each what a person does to sign up.

    GET /register (the form, with its CSRF token)
    POST /register with a new address          -> "register"
    GET the page it redirects to               -> "register_sent"
    wait for the email at fakesmtp (long-poll) -> "time_to_inbox" (custom, type EMAIL)
    GET the link in the email                  -> "verify"

Custom measurements are fired as locust request events, so they show in the web UI and CSVs:
``inp_proxy`` (type INP) is the time from submit until the confirmation page arrived
(POST plus its redirect) plus a render allowance; ``time_to_inbox`` is fakesmtp's
``received_at`` minus the moment the POST was sent. An email that has not arrived by the
inbox deadline is a ``time_to_inbox`` failure, not a hang.

Two ways to load the app, chosen by ``--arrival-rate``:

- **open loop** (a rate above 0, what ``maillab bench`` does by default): sign-ups arrive on a
  schedule, constant or Poisson (seeded), whatever the app's speed, as k6's arrival-rate
  executors and wrk2 do. Each arrival runs one whole sign-up on its own greenlet with its own
  HTTP connection and cookies (a new person), so neither a slow answer nor the HTTP client's
  pool holds the next arrival back. Latency is measured from when the sign-up should have
  started: every sample carries the sign-up's start lag. An arrival past ``--max-in-flight``
  is dropped and recorded as such, never skipped. One user runs the schedule (run it with
  ``--users 1``; extra users stop at once). Distributed (``--processes N``, or workers on
  other hosts), each worker runs every N-th arrival of the same schedule, with one user per
  worker (``--users N``), and its share of ``--max-in-flight``.
- **closed loop** (rate 0): every locust user signs up over and over with no think time, so
  the load is what the app lets through.

Works with stock ``locust -f loadtests/locustfile.py --host http://127.0.0.1:8000`` against
any running variant, headless or with the web UI; the arguments below appear in the UI and
are applied to fakesmtp through its API at every test start. ``maillab bench`` also passes
``--samples-out`` so every sample is kept for exact percentiles, in the format
``loadtests.cellfiles`` owns: each process streams its samples to its own part file as they
are made (memory stays flat however long the test), and the parts are merged after the test
(by the process itself when it is alone, by ``maillab bench`` when distributed). Every
sample of one sign-up carries that sign-up's warm-up flag
(its start, passed in the request context), so a sign-up is measured or not as a whole.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gevent
from gevent.pool import Group
from geventhttpclient import URL, HTTPClient
from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from loadtests import cellfiles
from loadtests.arrivals import KINDS, MAX_RATE, schedule, valid_rate
from loadtests.cellfiles import PartRecorder, Registration, Sample, merge_parts
from loadtests.steps import Answer, StepFailed, email_link, register, verify
from loadtests.target import Target, TargetError, built_in, fill, load_target

# Filled at test start, read by every user. "recorder" streams this process's samples and
# finished registrations to disk; "in_flight" holds the sign-ups under way (at most
# --max-in-flight), so memory stays flat however long the test runs.
RUN: dict[str, Any] = {"expects_email": True, "target": None, "warmup_until": 0.0,
                       "stopping": False, "variant": "",
                       # The Lab tab (loadtests/lab.py): this process's finished sign-ups
                       # for it, and whether a worker reports them to its master's.
                       "lab": None, "lab_outbox": None, "lab_report": False,
                       "scheduler": None, "refused": False, "recorder": None,
                       "in_flight": {}, "fired": 0}
LOG = logging.getLogger("maillab.locustfile")


def _in_warmup(started: float) -> bool:
    return started < RUN["warmup_until"]


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--smtp-api", default="http://127.0.0.1:8026", env_var="MAILLAB_SMTP_API",
                       help="fakesmtp's HTTP API, where emails are awaited")
    parser.add_argument("--smtp-latency", default="", env_var="MAILLAB_SMTP_LATENCY",
                       help="fakesmtp latency after the final dot, set at test start "
                            "(e.g. 500ms, lognormal:p50=200ms,p99=2s; empty: leave as is)")
    parser.add_argument("--smtp-faults", default="", env_var="MAILLAB_SMTP_FAULTS",
                       help="fakesmtp fault rules separated by ';', set at test start "
                            "(e.g. id=r1,phase=rcpt,reply=451,prob=0.1; empty: leave as is; "
                            "'none' clears them)")
    parser.add_argument("--render-allowance-ms", type=float, default=1000 / 60,
                       env_var="MAILLAB_RENDER_ALLOWANCE_MS",
                       help="added to the response time to make the INP proxy (one 60 Hz frame)")
    parser.add_argument("--inbox-deadline", type=float, default=30.0,
                       env_var="MAILLAB_INBOX_DEADLINE",
                       help="seconds to wait for the email before counting it missing")
    parser.add_argument("--warmup", type=float, default=0.0, env_var="MAILLAB_WARMUP",
                       help="seconds at the start whose samples are left out of the stats")
    parser.add_argument("--arrival-rate", type=float, default=0.0,
                        env_var="MAILLAB_ARRIVAL_RATE",
                        help="sign-ups per second on a schedule (open loop, run with 1 user); "
                             "0: closed loop, each user signs up again as soon as it is done")
    parser.add_argument("--arrivals", default="constant", choices=list(KINDS),
                        env_var="MAILLAB_ARRIVALS",
                        help="open loop: constant gaps, or Poisson arrivals from --arrival-seed")
    parser.add_argument("--arrival-seed", type=int, default=1, env_var="MAILLAB_ARRIVAL_SEED",
                        help="open loop: the seed of the Poisson schedule")
    parser.add_argument("--max-in-flight", type=int, default=1000,
                        env_var="MAILLAB_MAX_IN_FLIGHT",
                        help="open loop: sign-ups running at once; an arrival past this is "
                             "dropped and counted")
    parser.add_argument("--target", default="", env_var="MAILLAB_TARGET",
                        help="the target file whose sign-up steps to run (empty: maillab's own, "
                             "apps/target.toml)")
    parser.add_argument("--target-variant", default="", env_var="MAILLAB_TARGET_VARIANT",
                        include_in_web_ui=False,
                        help="which of the target's variants runs at --host (whether to wait "
                             "for an email); empty: asked of maillab's /healthz")
    parser.add_argument("--variant", default="", env_var="MAILLAB_VARIANT",
                        choices=["", *built_in().variants],
                        help="which variant to load, from --variant-hosts (empty: use --host)")
    parser.add_argument("--variant-hosts", default="", env_var="MAILLAB_VARIANT_HOSTS",
                        include_in_web_ui=False,
                        help="variant=URL pairs separated by commas (set by maillab ui)")
    parser.add_argument("--lab-control", default="", env_var="MAILLAB_LAB_CONTROL",
                        include_in_web_ui=False,
                        help="maillab ui's control server, which signals and restarts the "
                             "app's processes for the Lab tab (set by maillab ui)")
    parser.add_argument("--lab-dir", default="", env_var="MAILLAB_LAB_DIR",
                        include_in_web_ui=False,
                        help="where the Lab tab keeps each test's files (default: a new "
                             "temporary folder)")
    parser.add_argument("--lab-report", action="store_true", default=False,
                        include_in_web_ui=False,
                        help="send finished sign-ups to the master's Lab tab (set by a "
                             "master with a web UI, for its workers)")
    parser.add_argument("--samples-out", default="", env_var="MAILLAB_SAMPLES_OUT",
                       include_in_web_ui=False,
                       help="folder for every sample and registration (gzip CSV)")


def _options(environment: Environment) -> Any:
    """The parsed command line; locust always sets it before a test starts."""
    assert environment.parsed_options is not None
    return environment.parsed_options


def _api(environment: Environment) -> str:
    return str(_options(environment).smtp_api).rstrip("/")


class _Refused(RuntimeError):
    """The test cannot start as asked; the message says why, in one line."""


@events.init.add_listener
def _on_init(environment: Environment, **_kw: Any) -> None:
    # Bad values on the command line stop locust before anything runs (the web UI's form is
    # checked again at each start, below).
    if environment.parsed_options is not None:
        try:
            _check_arrival_options(environment.parsed_options)
        except _Refused as refused:
            LOG.error("%s", refused)
            sys.exit(2)


@events.init.add_listener
def _lab_init(environment: Environment, **_kw: Any) -> None:
    """The Lab tab (loadtests/lab.py) on the process with the web UI; a worker reports its
    sign-ups to it when its master has one."""
    from loadtests import labweb
    from loadtests.lab import Lab

    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        RUN["lab_outbox"] = []
        labweb.install_worker(environment, _lab_drain)
        return
    if environment.web_ui is None:
        return
    options = _options(environment)
    options.lab_report = True  # sent to the workers with every spawn
    lab = Lab(_api(environment), options.lab_control or None,
              Path(options.lab_dir) if options.lab_dir else None,
              sends_email=lambda: bool(RUN["expects_email"]),
              variant=lambda: str(RUN["variant"]))
    RUN["lab"] = lab
    RUN["lab_outbox"] = []
    labweb.install_master(environment, lab,
                          None if isinstance(runner, MasterRunner) else _lab_drain)


def _lab_drain() -> tuple[list[Registration], int]:
    """The sign-ups this process finished since the last call, and how many are in flight."""
    outbox = RUN["lab_outbox"]
    finished = list(outbox or ())
    if outbox:
        outbox.clear()
    return finished, len(RUN["in_flight"])


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kw: Any) -> None:
    RUN["refused"] = False
    try:
        _start(environment)
    except _Refused as exc:
        # One line and a stop rather than a traceback and a test that runs anyway.
        LOG.error("the test cannot start: %s", exc)
        RUN["refused"] = True
        environment.process_exit_code = 2
        runner = environment.runner
        if runner is not None:
            gevent.spawn(runner.stop if environment.web_ui else runner.quit)


def _start(environment: Environment) -> None:
    options = _options(environment)
    if options.variant:
        hosts = dict(pair.split("=", 1) for pair in options.variant_hosts.split(",") if "=" in pair)
        if options.variant not in hosts:
            raise _Refused(f"--variant {options.variant}: not in --variant-hosts "
                           f"{options.variant_hosts!r}")
        # Runs before locust copies environment.host onto the user classes.
        environment.host = hosts[options.variant]
    _check_arrival_options(options)
    runner = environment.runner
    RUN["stopping"] = False
    RUN["scheduler"] = None
    RUN["warmup_until"] = time.time() + options.warmup
    RUN["in_flight"] = {}
    RUN["fired"] = 0
    RUN["lab_report"] = bool(options.lab_report)  # a worker whose master has a Lab tab
    if not isinstance(runner, WorkerRunner):
        _configure_smtp(environment)
    try:
        target = load_target(options.target) if options.target else built_in()
    except TargetError as exc:
        raise _Refused(str(exc)) from None
    RUN["target"] = target
    host = str(environment.host or "").rstrip("/")
    ready = host + target.app.ready
    health_status, health = _json_request("GET", ready)
    if health_status >= 500:
        raise _Refused(f"{ready} answered {health_status}")
    variant = options.target_variant or options.variant or str(health.get("variant", ""))
    if variant not in target.variants:
        raise _Refused(f"--target-variant: {variant!r} is not one of {target.name}'s variants "
                       f"({', '.join(target.variants)})")
    # A variant that sends nothing (the baseline) has no inbox to wait for.
    RUN["expects_email"] = target.variants[variant].sends_email
    RUN["variant"] = variant
    lab = RUN["lab"]
    if lab is not None:  # the test's files, for the Lab tab's download and report
        options.samples_out = str(lab.begin(variant, options.smtp_latency,
                                            options.arrival_rate, options.num_users or 1))
    if options.samples_out and not isinstance(runner, MasterRunner):
        # Each process that runs users streams its own part; the master runs none.
        RUN["recorder"] = PartRecorder(Path(options.samples_out), str(_share(environment)[0]))
    if options.warmup and runner is not None:
        gevent.spawn_later(options.warmup, runner.stats.reset_all)


def _configure_smtp(environment: Environment) -> None:
    """fakesmtp's latency and faults for the test: set once, by the master or the only
    process, never again by each worker (a second PATCH in the middle would reset them)."""
    options = _options(environment)
    patch: dict[str, Any] = {}
    if options.smtp_latency:
        patch["latency"] = {"eom": options.smtp_latency}
    if options.smtp_faults:
        rules = [] if options.smtp_faults.strip() == "none" else [
            rule.strip() for rule in options.smtp_faults.split(";") if rule.strip()]
        patch["faults"] = rules
    if patch:
        status, body = _json_request("PATCH", f"{_api(environment)}/api/config", patch)
        if status != 200:
            raise _Refused(f"fakesmtp refused the settings {patch}: {body}")


def _check_arrival_options(options: Any) -> None:
    """A bad rate or cap is refused with a one-line reason (argparse cannot bound them)."""
    rate = options.arrival_rate
    if rate != 0 and not valid_rate(rate):  # 0: closed loop
        raise _Refused(f"--arrival-rate must be sign-ups per second from 0 (closed loop) to "
                       f"{MAX_RATE}, got {rate!r}")
    if not 1 <= options.max_in_flight <= 100_000:
        raise _Refused(f"--max-in-flight must be 1..100000, got {options.max_in_flight!r}")


@events.test_stopping.add_listener
def _on_test_stopping(**_kw: Any) -> None:
    # The schedule stops here; sign-ups in flight finish (bounded by --stop-timeout).
    RUN["stopping"] = True


def _json_request(method: str, url: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    parsed = URL(url)
    client = HTTPClient.from_url(parsed, connection_timeout=10, network_timeout=30)
    try:
        payload = json.dumps(body) if body is not None else None
        response = client.request(method, parsed.request_uri, body=payload,
                                  headers={"Content-Type": "application/json",
                                           "Accept": "application/json"})
        text = response.read()
        status = response.status_code
    except OSError as exc:
        raise _Refused(f"{method} {url}: {exc}") from None
    finally:
        client.close()
    try:
        return status, json.loads(text or b"{}")
    except ValueError:
        return status, {"body": text[:200].decode("utf-8", "replace")}


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float, exception: Any = None,
                context: dict[str, Any] | None = None, **_kw: Any) -> None:
    context = context or {}
    # A request started response_time ago; a custom timing says when it started.
    if name == cellfiles.START_LAG:
        return  # the arrival's registration holds its lag; the event is for locust's UI
    start = context.get("start", time.time() - response_time / 1000)
    signup = context.get("signup_started", start)
    RUN["fired"] += 1  # counted apart from the writer: the merge checks none was lost
    recorder = RUN["recorder"]
    if recorder is not None and not recorder.closed:
        recorder.sample(Sample(name, request_type, start, round(response_time, 3),
                               exception is None, _in_warmup(signup),
                               round(context.get("lag_ms", 0.0), 3)))


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_kw: Any) -> None:
    recorder = RUN["recorder"]
    if recorder is None:
        return
    for record in list(RUN["in_flight"].values()):  # cut off by the stop: counted as they are
        _finished(record)
    recorder.close(RUN["fired"])
    RUN["recorder"] = None
    if not isinstance(environment.runner, WorkerRunner):
        # The only process: its part is the cell's files. (Distributed, the runner merges
        # every worker's part once they have all exited.)
        merge_parts(Path(_options(environment).samples_out))


def _finished(record: Registration) -> None:
    """A sign-up is over (or cut off): its registration goes to disk, once."""
    if RUN["in_flight"].pop(record.email, None) is None:
        return
    if RUN["recorder"] is not None:
        RUN["recorder"].registration(record)
    if RUN["lab_outbox"] is not None and (RUN["lab"] is not None or RUN["lab_report"]):
        RUN["lab_outbox"].append(record)


@dataclass
class SignUp:
    """One person signing up and confirming their address, over ``client`` (their browser).

    ``started`` is when the sign-up should have started (epoch seconds) and ``lag_ms`` how late
    it did; both go into every sample of it through the request context."""

    environment: Environment
    client: Any  # a FastHttpSession
    inbox: HTTPClient
    record: Registration
    started: float
    lag_ms: float = 0.0

    def context(self) -> dict[str, Any]:
        return {"signup_started": self.started, "lag_ms": self.lag_ms}

    def run(self) -> None:
        options = _options(self.environment)
        target: Target = RUN["target"]
        record, http = self.record, _LocustHttp(self.client, self.context())
        clock = {"post": 0.0}

        def on_post() -> None:
            record.sent_at = time.time()
            clock["post"] = time.perf_counter()

        def on_told() -> None:
            waited_ms = (time.perf_counter() - clock["post"]) * 1000
            self._fire("INP", cellfiles.INP_PROXY, waited_ms + options.render_allowance_ms,
                       float(record.sent_at or time.time()))

        values = {"email": record.email, "password": target.password}
        try:
            registered = register(target, http, values, on_post, on_told)
        except (StepFailed, TargetError) as exc:
            LOG.warning("%s: %s", record.email, exc)
            return
        record.status, record.told = registered.status, registered.accepted
        if not registered.accepted or not RUN["expects_email"]:
            return
        message = self._await_email(float(record.sent_at or time.time()),
                                    options.inbox_deadline)
        if message is None or target.verify is None:
            return
        try:
            link = email_link(target, message)
            verified = verify(target, http, link, registered.values)
        except (StepFailed, TargetError) as exc:
            LOG.warning("%s: %s", record.email, exc)
            return
        record.verify_status, record.confirmed = verified.status, verified.verified

    def _fire(self, request_type: str, name: str, ms: float, started: float,
              error: str | None = None) -> None:
        """Report a custom timing as a locust request, so it shows in the UI and CSVs too."""
        self.environment.events.request.fire(
            request_type=request_type, name=name, response_time=ms, response_length=0,
            exception=RuntimeError(error) if error else None,
            context={"start": started, **self.context()})

    def _await_email(self, sent_at: float, deadline: float) -> dict[str, Any] | None:
        """The sign-up's email (fakesmtp's JSON), or None after firing a time_to_inbox
        failure."""
        record = self.record
        query = f"/api/messages?to={quote(record.email)}&wait={deadline:g}"
        inbox = cellfiles.TIME_TO_INBOX
        try:
            response = self.inbox.get(query)
            messages = json.loads(response.read())
        except Exception as exc:  # the failure is reported as a sample, with its reason
            self._fire("EMAIL", inbox, deadline * 1000, sent_at,
                       f"fakesmtp long-poll failed: {exc!r}")
            return None
        if not messages:
            self._fire("EMAIL", inbox, deadline * 1000, sent_at,
                       f"no email within {deadline:g} s")
            return None
        message = messages[-1]
        inbox_ms = max(0.0, (message["received_at"] - sent_at) * 1000)
        record.inbox_ms = round(inbox_ms, 3)
        self._fire("EMAIL", inbox, inbox_ms, sent_at)
        return dict(message)


@dataclass
class _LocustHttp:
    """The steps' HTTP client (loadtests.steps.Http) over the person's locust session: every
    request is a locust sample named by its step, judged by the target's statuses."""

    client: Any  # a FastHttpSession
    context: dict[str, Any]

    def request(self, method: str, url: str, *, name: str, form: dict[str, str] | None = None,
                json: Any = None, headers: dict[str, str] | None = None,
                judge: Any = None) -> Answer:
        with self.client.request(method, url, name=name, data=form, json=json,
                                 headers=headers or None, allow_redirects=False,
                                 catch_response=True, context=self.context) as response:
            status = int(response.status_code or 0)
            failure = judge(status) if judge is not None else None
            if status == 0:
                failure = f"no answer: {response.error!r}"
            if failure:
                response.failure(failure)
            else:
                response.success()
            # No answer (the app is down): no headers, and a visible failure.
            headers = response.headers or {}
            return Answer(status, response.text or "" if status else "", headers.get("Location"))


def _share(environment: Environment) -> tuple[int, int]:
    """(this process's index, how many processes run the schedule): (0, 1) alone; a worker
    of a distributed load takes every n-th arrival (run it with one user per worker)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        workers = int(getattr(_options(environment), "expect_workers", 1) or 1)
        return runner.worker_index % workers, workers
    return 0, 1


def _new_registration(intended_at: float, lag_ms: float | None = 0.0,
                      dropped: bool = False) -> Registration:
    """A sign-up's record, kept from the moment it arrives, so every arrival is counted."""
    target: Target = RUN["target"] or built_in()
    address = fill(target.email.address, {"id": uuid.uuid4().hex}, "email.address").lower()
    record = Registration(email=address, sent_at=None,
                          warmup=_in_warmup(intended_at), intended_at=intended_at,
                          lag_ms=None if lag_ms is None else round(lag_ms, 3), dropped=dropped)
    RUN["in_flight"][record.email] = record
    if dropped:
        _finished(record)
    return record


class SignUpUser(FastHttpUser):
    """Closed loop: signs up over and over with no think time. Open loop (``--arrival-rate``):
    the first user runs the arrival schedule, and every arrival is a new person."""

    def on_start(self) -> None:
        options = _options(self.environment)
        open_loop = options.arrival_rate > 0
        self.arrivals: Group | None = None
        # Idle: the test could not start (the reason is logged), or another user already runs
        # the schedule (more would multiply the rate). Such a user stops at its first task;
        # StopUser raised here would be logged as an error with a traceback.
        self.idle = RUN["refused"] or (open_loop and RUN["scheduler"] is not None)
        if open_loop and not self.idle:
            RUN["scheduler"] = self
        self.inbox = HTTPClient.from_url(
            URL(_api(self.environment)), concurrency=options.max_in_flight if open_loop else 1,
            connection_timeout=10, network_timeout=options.inbox_deadline + 10)

    def on_stop(self) -> None:
        if self.arrivals is not None:  # killed at --stop-timeout: so are its sign-ups
            self.arrivals.kill(block=True, timeout=5)
        self.inbox.close()

    @task
    def sign_up(self) -> None:
        if self.idle:
            raise StopUser()
        rate = _options(self.environment).arrival_rate
        if rate > 0:
            self._run_schedule(rate)
            return
        started = time.time()
        record = _new_registration(started)
        try:
            SignUp(self.environment, self.client, self.inbox, record, started).run()
        finally:
            _finished(record)

    def _run_schedule(self, rate: float) -> None:
        """Start a sign-up at every arrival until the test stops, then let those in flight
        finish. Scheduled on the monotonic clock; recorded in epoch seconds."""
        options = _options(self.environment)
        index, of = _share(self.environment)
        offsets = schedule(rate, options.arrivals, options.arrival_seed, index, of)
        cap = -(-options.max_in_flight // of)  # this process's share of the cap
        self.arrivals = Group()
        epoch, origin = time.time(), time.monotonic()
        # The warm-up is the schedule's first seconds, so it holds exactly rate x warm-up.
        RUN["warmup_until"] = epoch + options.warmup
        while not RUN["stopping"]:
            offset = next(offsets)
            due = origin + offset
            while not RUN["stopping"] and (delay := due - time.monotonic()) > 0:
                gevent.sleep(min(delay, 0.25))
            if RUN["stopping"]:
                break
            intended = epoch + offset
            if len(self.arrivals) >= cap:
                _new_registration(intended, lag_ms=None, dropped=True)
                self.environment.events.request.fire(
                    request_type="ARRIVAL", name=cellfiles.START_LAG, response_time=0,
                    response_length=0, exception=RuntimeError(
                        f"dropped: {cap} sign-ups already in flight in this process"),
                    context={})
                continue
            self.arrivals.spawn(self._arrive, intended, due)
        self.arrivals.join(timeout=max(1.0, (self.environment.stop_timeout or 0) - 2))
        self.arrivals.kill(block=True, timeout=5)

    def _arrive(self, intended: float, due: float) -> None:
        lag_ms = max(0.0, (time.monotonic() - due) * 1000)
        self.environment.events.request.fire(
            request_type="ARRIVAL", name=cellfiles.START_LAG, response_time=lag_ms,
            response_length=0, exception=None, context={})
        record = _new_registration(intended, lag_ms)
        # A new person: their own connection and cookies, nothing shared with other arrivals.
        client = FastHttpSession(
            self.host, self.environment.events.request, user=None, concurrency=1,
            network_timeout=self.network_timeout, connection_timeout=self.connection_timeout,
            max_redirects=self.max_redirects, max_retries=self.max_retries)
        try:
            SignUp(self.environment, client, self.inbox, record, intended, lag_ms).run()
        finally:
            _finished(record)
            client.client.clientpool.close()
