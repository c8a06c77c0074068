"""results.json and gate.json: the one typed shape of a run's results, written and read here.

``maillab bench`` builds a :class:`Results` and writes it with :func:`write_results`; the
gate, the report and the CLI tables read it back with :func:`load_run`, the one loader of a
stored run. Everything else derives from these models rather than naming keys again: the JSON
schema (:func:`json_schema`), the metric names and statistics the gate accepts
(:data:`METRICS`), the report's columns.

Schema ``maillab.results/1``: the keys documented in DESIGN.md keep their names and meaning;
keys added since are optional when read, so a run written by an older maillab still loads
(tests/report_fixtures/v1_run is one). Readers ignore keys they do not know.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import is_dataclass
from functools import cached_property
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from fakesmtp.stats import LATENESS_FLOOR_S, LATENESS_SHARE, LATENESS_TAIL_DELAYS, SAMPLES
from loadtests.cellfiles import CellFileError, CellKey, CellSamples, Load, grid, read_samples
from loadtests.scenarios import CLEAN, PLAIN, SCENARIOS, SMTP_MODES
from loadtests.stats import Rating, inp_rating
from loadtests.target import VARIANT_NAME, Variant, activate, known_variants
from loadtests.target import sends_email as variant_sends_email

SCHEMA: Literal["maillab.results/1"] = "maillab.results/1"
RESULTS_FILE = "results.json"
GATE_FILE = "gate.json"


class RunError(ValueError):
    """A run directory whose results cannot be read; the message names the file and why."""


# Pydantic dataclasses rather than BaseModel: a cell has a field named ``register``, which
# BaseModel (an ABC) reserves. Unknown keys are ignored (newer writers may add some); in
# serialization mode every field is required in the schema, because the writer writes them all.
_CONFIG = ConfigDict(extra="ignore", json_schema_serialization_defaults_required=True)


def _known_variant(name: str) -> str:
    # Any target's variant: the run's target block says what each is.
    if not re.fullmatch(VARIANT_NAME, name):
        raise ValueError(f"not a variant name: {name!r}")
    return name


def _known_scenario(name: str) -> str:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return name


def _known_smtp(name: str) -> str:
    if name not in SMTP_MODES:
        raise ValueError(f"unknown SMTP mode {name!r}; known: {', '.join(SMTP_MODES)}")
    return name


Ms = Annotated[float | None, Field(ge=0, description="milliseconds; null with no samples")]

# The questions a cell answers, judged apart: a late SMTP timer or a load generator that fell
# behind spoils how long things took, not how many emails were lost.
Family = Literal["timing", "delivery"]
FAMILIES: tuple[Family, ...] = ("timing", "delivery")
# Blocks whose counts answer the delivery question; their statistics in milliseconds (start
# lag, the late emails' time to inbox) are timing all the same.
_COUNTED_BLOCKS = ("delivery", "arrivals", "smtp_faults")


def family(metric: str, stat: str | None = None) -> Family:
    """Which question ``metric.stat`` answers (the gate skips it where that is untrusted)."""
    if metric in _COUNTED_BLOCKS and not (stat or "").endswith("_ms"):
        return "delivery"
    return "timing"

Count = Annotated[int, Field(ge=0)]


@dataclass(config=_CONFIG, kw_only=True)
class RequestStats:
    """Response times of one request kind over the measured window, from every sample."""

    count: Count = Field(description="measured successful requests")
    failures: Count = Field(description="measured requests that failed")
    rps: float = Field(ge=0, description="measured successful requests per second")
    p50_ms: Ms
    p75_ms: Ms
    p95_ms: Ms
    p99_ms: Ms
    max_ms: Ms


@dataclass(config=_CONFIG, kw_only=True)
class InpProxy:
    """Submit until the confirmation arrived, plus a render allowance; rated at p75 like INP."""

    p75_ms: Ms
    rating: Rating | None
    render_allowance_ms: float | None = None
    calibrated_p75_ms: float | None = Field(
        default=None, ge=0, description="the same proxy with the render allowance Chromium "
        "measured in this run (Results.inp_calibration); null: the run has none")


@dataclass(config=_CONFIG, kw_only=True)
class InboxStats:
    """fakesmtp's ``received_at`` minus the moment the POST was sent."""

    count: Count = Field(description="measured emails that arrived")
    failures: Count = Field(0, description="measured sign-ups whose email did not arrive in "
                                           "the inbox deadline")
    p50_ms: Ms
    p95_ms: Ms
    p99_ms: Ms


@dataclass(config=_CONFIG, kw_only=True)
class Delivery:
    """Per accepted registration, from fakesmtp's capture: the ground truth."""

    registered: Count = Field(description="measured registrations the app accepted")
    delivered: Count = Field(description="of those, how many got at least one email")
    missing: Count = Field(description="lost silently: accepted, told to check their email, "
                                       "none came")
    duplicates: Count = Field(description="emails beyond the first per registration")
    verified: Count = Field(description="registrations whose link verified the address (the "
                                        "target's verify statuses)")
    failed_visibly: Count | None = Field(None, description="measured sign-ups that started and "
                                                           "got an error or a broken "
                                                           "connection instead of the "
                                                           "confirmation; null in older runs")
    expected: bool | None = Field(None, description="whether the variant sends email; older "
                                                    "runs lack it (the registry answers)")
    counted: str = Field("all registrations", description="which registrations were counted")
    drain: str | None = Field(None, description="how the wait after the cell for email in "
                                                "flight and retries ended")
    warmup_excluded: Count | None = Field(None, description="accepted registrations left out "
                                                            "because they started in the "
                                                            "warm-up")
    refused: Count | None = Field(None, description="measured sign-ups whose email the SMTP "
                                                    "server refused for good (a 5xx) and that "
                                                    "never arrived; null in older runs")
    refused_told: Count | None = Field(None, description="of the refused, how many people saw "
                                                         "an error (the rest were told to check "
                                                         "their email)")
    delivered_anyway: Count | None = Field(None, description="of the failed visibly, how many "
                                                             "got the email all the same (a "
                                                             "retry by the person sends it "
                                                             "twice)")
    late: Count | None = Field(None, description="delivered, but only after the fault window "
                                                 "ended, though signed up before; null when "
                                                 "the scenario has no window")
    late_inbox_p50_ms: Ms = Field(None, description="the late ones' time to inbox, from "
                                                    "fakesmtp's capture")
    late_inbox_max_ms: Ms = None

    @property
    def unseen(self) -> int:
        """Emails the person was told were coming and never got: lost silently, or refused
        by the SMTP server without the person hearing of it."""
        return self.missing + (self.refused or 0) - (self.refused_told or 0)

    @property
    def buckets(self) -> int:
        """Delivered + refused + lost silently + failed visibly: every measured sign-up that
        started, each in one bucket (the dropped ones are in :class:`Arrivals`). A variant
        that sends nothing has two: accepted (``registered``) and failed visibly."""
        if self.expected is False:
            return self.registered + (self.failed_visibly or 0)
        return (self.delivered + (self.refused or 0) + self.missing
                + (self.failed_visibly or 0))


@dataclass(config=_CONFIG, kw_only=True)
class PhaseLatency:
    """One phase's injected latency as fakesmtp delivered it: a server too busy with its
    sessions fires its timers late, and then delivers more latency than the cell says."""

    count: Count = Field(description=f"delays slept (fakesmtp keeps the last {SAMPLES:,})")
    injected_p99_ms: Ms = Field(description="the delays drawn from the spec, p99")
    # Not Ms: a timer can fire a hair early, so lateness can be below zero.
    lateness_p50_ms: float | None = Field(description="slept minus drawn, per delay, p50")
    lateness_p99_ms: float | None = Field(description="slept minus drawn, per delay, p99")
    bound_ms: Ms = Field(description=f"the most p99 lateness that still counts as delivering "
                                     f"the spec: {LATENESS_SHARE:.0%} of the injected p99, at "
                                     f"least {LATENESS_FLOOR_S * 1000:g} ms; past it (over "
                                     f"{LATENESS_TAIL_DELAYS} delays or more, or at p50) the "
                                     "cell is invalid")


@dataclass(config=_CONFIG, kw_only=True)
class SmtpFaults:
    """What fakesmtp actually did to the cell's deliveries (its counters, reset per cell,
    warm-up included): the realised fault share beside the scenario's nominal one."""

    attempts: Count = Field(description="SMTP connections the app opened: delivery attempts, "
                                        "retries included")
    received: Count = Field(description="messages fakesmtp stored")
    injected: Count = Field(description="fault rules that fired (a reply, hang or drop)")
    injected_share: float | None = Field(None, description="injected / attempts")
    by_rule: dict[str, int] = Field(default_factory=dict, description="fires per rule id")
    latency: dict[str, PhaseLatency] = Field(
        default_factory=dict, description="per SMTP phase with injected latency (the eom "
                                          "phase in every cell): drawn, and how late it came")


@dataclass(config=_CONFIG, kw_only=True)
class Browser:
    """Sign-ups in real headless Chromium during the cell (maillab.probe), apart from the
    load's: what the person sees."""

    count: Count = Field(description="probe sign-ups that completed")
    trusted: Count = Field(description="of those, clicks with event.isTrusted")
    click_to_confirmation_p50_ms: Ms = Field(description="the click until the confirmation "
                                                         "page's first contentful paint")
    click_to_confirmation_p75_ms: Ms
    click_to_confirmation_p95_ms: Ms
    event_p75_ms: Ms = Field(description="the click's Event Timing duration (the INP "
                                         "candidate), 16 ms where Chromium reported none")
    events_reported: Count = Field(description="clicks with an Event Timing entry (16 ms+)")
    proxy_p75_ms: Ms = Field(description="the lab's INP proxy for the same sign-ups")
    response_p75_ms: float | None = Field(
        default=None, ge=0, description="the click until the confirmation's last byte "
        "(responseEnd)")
    render_p50_ms: float | None = Field(
        default=None, ge=0, description="the confirmation's last byte until its first "
        "contentful paint")


@dataclass(config=_CONFIG, kw_only=True)
class InpCalibration:
    """The INP proxy's render allowance as Chromium measured it in this run, on the baseline
    (the floor, which sends no email): each reference cell's click to confirmation p75 minus
    its load's response p75 (the proxy without its allowance); the median of those. Fitted on
    baseline only, so the proxy's error on the other variants is measured, not fitted."""

    allowance_ms: float = Field(ge=0, description="what the browser adds to the response "
                                                  "time before the confirmation is painted")
    assumed_ms: float | None = Field(None, description="the profile's allowance it replaces")
    reference: list[str] = Field(description="the baseline cells it was measured on")
    signups: Count = Field(description="browser sign-ups behind it")


WaitSource = Literal["browser", "calibrated proxy", "proxy"]
# How the bench's summary table and the report's chart mark a wait's source, in one letter.
WAIT_MARKS: dict[str, str] = {"browser": "B", "calibrated proxy": "C", "proxy": "P"}


@dataclass(frozen=True)
class Wait:
    """What the person waits for a sign-up, at p75, rated on INP's thresholds, and where the
    figure comes from: the browser probe's click to confirmation painted where the cell has
    one; else the INP proxy with the render allowance measured in this run; else the proxy
    with its assumed allowance (one 60 Hz frame), which runs short (see the browser profile)."""

    p75_ms: float | None
    rating: Rating | None
    source: WaitSource


@dataclass(config=_CONFIG, kw_only=True)
class Arrivals:
    """The schedule against what happened: every arrival started, or was dropped."""

    offered: Count = Field(description="measured arrivals the schedule asked for")
    started: Count = Field(description="of those, how many began their sign-up")
    dropped: Count = Field(description="could not start: the cap on sign-ups in flight")
    lag_p50_ms: Ms = Field(description="how late sign-ups started against the schedule")
    lag_p99_ms: Ms


@dataclass(config=_CONFIG, kw_only=True)
class Resources:
    peak_threads: Count | None = Field(description="most live threads over the app's processes")
    peak_queue_depth: Count | None = Field(description="most tasks waiting; null: no queue")
    app_cpu_percent: float | None = Field(None, description="CPU of the app's processes "
                                                            "(workers and consumer) over the "
                                                            "cell, % of one core")
    register_requests: int | None = Field(default=None, ge=0, description="POST /register "
                                          "the app answered, from its /metrics summed over "
                                          "every worker after the load")


@dataclass(config=_CONFIG, kw_only=True)
class LoadGenerator:
    cpu_percent: float | None = Field(description="locust's CPU over the cell, % of one core "
                                                  "(the busiest process, when several)")
    processes: int | None = Field(default=None, ge=1, description="load processes: locust, "
                                  "or its master and workers")
    samples: int | None = Field(default=None, ge=0, description="samples kept, warm-up "
                                "included: every timing the load processes fired")
    requests: int | None = Field(default=None, ge=0, description="timings the load processes "
                                 "counted as they fired them (equal to samples, or the cell is "
                                 "invalid)")
    rss_mb_first: float | None = Field(default=None, ge=0, description="resident memory of "
                                       "every load process a minute into the load (at the "
                                       "first reading in a shorter cell), MiB")
    rss_mb_last: float | None = Field(default=None, ge=0, description="the same at the last "
                                      "reading")
    rss_mb_peak: float | None = Field(default=None, ge=0, description="the highest reading")


@dataclass(config=_CONFIG, kw_only=True)
class ScenarioEvent:
    """Something the runner did to the cell's world, and when."""

    at: float = Field(description="epoch seconds")
    what: str


@dataclass(config=_CONFIG, kw_only=True)
class Attempt:
    """An earlier run of a cell that was invalid for a transient reason and run once more."""

    files: str = Field(description="its folder, relative to the run (every sample kept)")
    invalid_for: list[Family]
    warnings: list[str]


@dataclass(config=_CONFIG, kw_only=True)
class CellResult:
    """One cell's figures. Blocks of statistics are the metrics the gate can name."""

    variant: Annotated[str, AfterValidator(_known_variant)]
    smtp_latency_ms: Count
    users: Annotated[int, Field(ge=1, description="closed loop: locust users; open loop: the "
                                                 "cap on sign-ups in flight")]
    mode: Literal["open", "closed"] = Field("closed", description="open: arrivals on a "
                                            "schedule; closed: users with no think time")
    rate: float | None = Field(None, gt=0, description="open loop: offered sign-ups per second")
    scenario: str = Field(CLEAN, description="what went wrong during the cell "
                                            "(loadtests/scenarios.py); clean: nothing")
    scenario_events: list[ScenarioEvent] = Field(default_factory=list,
                                                 description="what the runner did, and when")
    smtp: Annotated[str, AfterValidator(_known_smtp)] = Field(
        PLAIN, description="fakesmtp's mode: plain SMTP, or starttls+auth (a provider's port "
                           "587: STARTTLS and AUTH before every message)")
    duration_s: float = Field(ge=0, description="the measured window")
    warmup_s: float | None = Field(None, description="left out of every statistic before it")
    register: RequestStats
    verify: RequestStats
    inp_proxy: InpProxy
    time_to_inbox: InboxStats
    throughput_rps: float | None = Field(None, description="completed sign-ups per second")
    delivery: Delivery
    arrivals: Arrivals | None = None
    smtp_faults: SmtpFaults | None = None
    browser: Browser | None = None
    resources: Resources
    load_generator: LoadGenerator | None = None
    files: str | None = Field(None, description="the cell's folder, relative to the run")
    valid: bool = Field(description="every figure can be trusted: invalid_for is empty")
    invalid_for: list[Family] = Field(
        default_factory=list, description="the questions whose figures cannot be trusted: "
        "timing (response times, time to inbox, resources) or delivery (the buckets, "
        "arrivals, fakesmtp's counters); the warnings say why")
    warnings: list[str]
    attempts: list[Attempt] = Field(default_factory=list, description="earlier attempts at "
                                    "this cell, invalid for a transient reason and run again "
                                    "once; the figures above are the last attempt's")

    @property
    def untrusted(self) -> frozenset[Family]:
        """The questions this cell cannot answer; every one for an invalid cell of a run
        older than per-question validity."""
        if self.valid:
            return frozenset()
        return frozenset(self.invalid_for or FAMILIES)

    @property
    def key(self) -> CellKey:
        return CellKey(self.variant, self.smtp_latency_ms, self.load, self.scenario, self.smtp)

    @property
    def load(self) -> Load:
        if self.mode == "open" and self.rate:
            return Load(rate=self.rate)
        return Load(users=self.users)

    @property
    def label(self) -> str:
        return self.key.label

    @property
    def folder(self) -> str:
        return self.files or self.key.folder

    @property
    def sends_email(self) -> bool:
        """As recorded in the cell; runs older than that key ask the variant registry."""
        if self.delivery.expected is not None:
            return self.delivery.expected
        return variant_sends_email(self.variant)

    @property
    def wait(self) -> Wait:
        """What the person waits: the browser's figure where there is one (see :class:`Wait`)."""
        if self.browser is not None and self.browser.click_to_confirmation_p75_ms is not None:
            seen = self.browser.click_to_confirmation_p75_ms
            return Wait(seen, inp_rating(seen), "browser")
        proxy = self.inp_proxy
        if proxy.calibrated_p75_ms is not None:
            return Wait(proxy.calibrated_p75_ms, inp_rating(proxy.calibrated_p75_ms),
                        "calibrated proxy")
        return Wait(proxy.p75_ms, proxy.rating, "proxy")

    def metric(self, metric: str, stat: str | None = None) -> float | None:
        """The number behind ``metric.stat`` (a block) or ``metric`` (a scalar), or None.
        Raises KeyError for a name :data:`METRICS` does not have."""
        stats = METRICS.get(metric)
        known = stats is not None and (stat in stats if stats else stat is None)
        if not known:
            raise KeyError(f"{metric}.{stat}" if stat else metric)
        value = getattr(self, metric)
        if stat is not None:
            value = None if value is None else getattr(value, stat)
        return None if value is None else float(value)


# The cell's axes and settings: a rule's variables, not measurements.
VARIABLES = ("smtp_latency_ms", "users", "rate", "duration_s")
_SETTINGS = (*VARIABLES, "warmup_s")


def _kinds(annotation: Any) -> tuple[Any, ...]:
    """The types an annotation admits: ``Annotated`` and ``X | None`` unwrapped."""
    if get_origin(annotation) is Annotated:
        return _kinds(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return tuple(k for arg in get_args(annotation) for k in _kinds(arg))
    return (annotation,)


def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _numeric(annotation: Any) -> bool:
    return any(k in (int, float) for k in _kinds(annotation))


def _block(annotation: Any) -> type | None:
    return next((k for k in _kinds(annotation) if isinstance(k, type) and is_dataclass(k)),
                None)


def _metrics() -> dict[str, tuple[str, ...]]:
    """Every block of a cell with its numeric statistics, and every numeric measurement that
    stands alone (with no statistics), derived from :class:`CellResult`'s fields."""
    found: dict[str, tuple[str, ...]] = {}
    for name, annotation in _hints(CellResult).items():
        block = _block(annotation)
        if block is not None:
            found[name] = tuple(n for n, sub in _hints(block).items() if _numeric(sub))
        elif name not in _SETTINGS and _numeric(annotation):
            found[name] = ()
    return found


METRICS: dict[str, tuple[str, ...]] = _metrics()


@dataclass(config=_CONFIG, kw_only=True)
class Server:
    workers: int
    threads: int
    worker_class: str | None = None
    queue_consumer_threads: int | None = None


@dataclass(config=_CONFIG, kw_only=True)
class Environment:
    python: str
    platform: str
    cpu_count: int
    cpu_model: str | None = None
    git_sha: str | None
    packages: dict[str, str | None]
    server: Server
    password_hash: str
    executable: str | None = None
    services: dict[str, str] = Field(default_factory=dict, description="the database and "
                                     "queue the cells ran on (passwords hidden)")


@dataclass(config=_CONFIG, kw_only=True)
class Grid:
    """The axes of the profile a run was asked for (checked once, when the run is read)."""

    variants: list[str]
    latencies_ms: list[int]
    users: list[int] = Field(default_factory=list)
    rates: list[float] = Field(default_factory=list)
    mode: Literal["open", "closed"] = "closed"
    scenarios: list[Annotated[str, AfterValidator(_known_scenario)]] = Field(
        default_factory=lambda: [CLEAN])
    scenario_latencies_ms: list[int] = Field(default_factory=list)
    smtp: list[Annotated[str, AfterValidator(_known_smtp)]] = Field(
        default_factory=lambda: [PLAIN])


_GRID = TypeAdapter(Grid)


def _has_grid(settings: dict[str, Any]) -> dict[str, Any]:
    _GRID.validate_python(settings)
    return settings


# Every setting of the profile, as the runner wrote it; the grid's keys must be there.
ProfileSettings = Annotated[dict[str, Any], AfterValidator(_has_grid)]


@dataclass(config=_CONFIG, kw_only=True)
class EnumerationCheck:
    """Whether response time tells a known address from an unknown one at one endpoint."""

    variant: Annotated[str, AfterValidator(_known_variant)]
    endpoint: str
    samples: list[int] = Field(description="known, unknown")
    known_p50_ms: float
    unknown_p50_ms: float
    gap_ms: float = Field(description="known p50 minus unknown p50")
    p_value: float = Field(description="two-sided Mann-Whitney U")
    distinguishable: bool = Field(description="p below 0.01")


EndedBy = Literal["register SLO", "inbox SLO", "failures SLO",
                  "load generator could not keep the schedule", "invalid"]


@dataclass(config=_CONFIG, kw_only=True)
class Capacity:
    """One variant at one SMTP latency in a capacity run: the rate stepped up until the SLO
    broke, beside what first principles predict."""

    variant: Annotated[str, AfterValidator(_known_variant)]
    smtp_latency_ms: Count
    slo: str = Field(description="what sustainable means here")
    knee_rps: float | None = Field(description="the highest offered rate that held the SLO; "
                                               "null: even the lowest step broke it")
    broke_at_rps: float | None = Field(description="the rate where the series ended: the first "
                                                   "that broke an SLO, or that the load "
                                                   "generator could not offer; null: none did")
    broke_because: str | None = None
    ended_by: EndedBy | None = Field(None, description="what ended the series at broke_at_rps: "
                                     "an SLO (register, inbox, failures) or the load generator "
                                     "itself, which is no SLO break")
    skipped_rates: list[float] = Field(default_factory=list, description="steps not run "
                                                                         "after the break")
    predicted_rps: float | None = Field(None, description="capacity from first principles, "
                                                          "where the variant has one")
    prediction: str | None = Field(None, description="how the prediction was made")
    peak_threads: Count | None = Field(None, description="at the knee")
    predicted_email_threads: float | None = Field(None, description="at the knee, Little's "
                                                                    "law: rate x SMTP time")
    email_threads: float | None = Field(None, description="at the knee: live threads above "
                                                          "the baseline's at the same rate")
    peak_queue_depth: Count | None = None
    app_cpu_percent: float | None = None
    inbox_p99_ms: float | None = Field(None, description="time to inbox p99 at the knee")


@dataclass(config=_CONFIG, kw_only=True)
class TargetInfo:
    """Whose sign-up the run measured: the target file's name, path and hash, and what each
    of its variants is (loadtests/target.py)."""

    name: str
    file: str = Field(description="the target file, as the run was given it")
    sha256: str = Field(description="of the target file's bytes")
    description: str = ""
    variants: dict[str, Variant] = Field(default_factory=dict)
    built_in: bool = Field(True, description="maillab's own variants (apps/target.toml)")
    gate_rules: str | None = Field(None, description="the target's own rules file, if any")
    source: dict[str, Any] | None = Field(None, description="the git commit, branch and dirty "
                                          "flag of the target's folder when the run started")


@dataclass(config=_CONFIG, kw_only=True)
class Results:
    """A whole results.json."""

    schema: Literal["maillab.results/1"] = SCHEMA
    run_id: str
    profile: str
    profile_settings: ProfileSettings | None = None
    started_at: str
    finished_at: str | None
    complete: bool = True
    stopped_reason: str | None = None
    environment: Environment
    cells: list[CellResult]
    enumeration: list[EnumerationCheck] = Field(default_factory=list,
                                                description="timing probe per variant")
    capacity: list[Capacity] = Field(default_factory=list,
                                     description="capacity runs: the knee per variant and "
                                                 "SMTP latency")
    inp_calibration: InpCalibration | None = Field(
        default=None, description="the INP proxy's render allowance measured in Chromium in "
        "this run; null: no baseline cell had browser sign-ups")
    target: TargetInfo | None = Field(default=None, description="whose sign-up was measured; "
                                      "null in runs older than target files: maillab's own")
    skipped: dict[str, str] = Field(default_factory=dict, description="what the profile asks "
                                    "that this run's target cannot do, and why")

    def cell(self, key: CellKey) -> CellResult | None:
        for cell in self.cells:
            if cell.key == key:
                return cell
        return None

    @property
    def expected_cells(self) -> list[CellKey]:
        """The profile's grid; a run without profile settings expects the cells it has."""
        asked = self.profile_settings
        if asked is None:
            return [c.key for c in self.cells]
        loads = ({"rates": asked["rates"]} if asked.get("mode", "closed") == "open"
                 else {"users": asked["users"]})
        return grid(asked["variants"], asked["latencies_ms"],
                    scenarios=asked.get("scenarios", [CLEAN]),
                    scenario_latencies_ms=asked.get("scenario_latencies_ms", []),
                    smtp=asked.get("smtp", [PLAIN]), **loads)

    @property
    def missing_cells(self) -> list[CellKey]:
        """The grid's cells that did not run, except a capacity run's steps past the break,
        which were left out on purpose."""
        present = {c.key for c in self.cells}
        return [key for key in self.expected_cells
                if key not in present | self.past_capacity]

    @property
    def past_capacity(self) -> set[CellKey]:
        """A capacity run's steps above a series' end, left out on purpose."""
        return {CellKey(row.variant, row.smtp_latency_ms, Load(rate=rate))
                for row in self.capacity for rate in row.skipped_rates}

    def to_json(self) -> str:
        return json.dumps(_RESULTS.dump_python(self, mode="json"), indent=2) + "\n"


_RESULTS = TypeAdapter(Results)


def json_schema() -> dict[str, Any]:
    """The JSON schema of results.json as maillab writes it (``maillab schema`` prints it)."""
    schema = _RESULTS.json_schema(mode="serialization")
    schema["$id"] = SCHEMA
    return schema


# -- gate.json ------------------------------------------------------------------------------

Verdict = Literal["pass", "fail", "error", "skipped"]


@dataclass(config=_CONFIG, kw_only=True)
class RuleOutcome:
    rule: str
    cell: str | None = Field(description="the cell's label; null: the rule matched no cell")
    measured: float | None
    limit: str
    verdict: Verdict
    detail: str = ""


@dataclass(config=_CONFIG, kw_only=True)
class Comparison:
    """One metric of one cell against a stored run."""

    cell: str
    metric: str
    samples: list[int]
    verdict: Verdict
    detail: str = ""
    median_ms: list[float] | None = None
    change: float | None = None
    p_value: float | None = None


@dataclass(config=_CONFIG, kw_only=True)
class ComparisonReport:
    comparable: bool
    differing_keys: dict[str, Any] = Field(default_factory=dict)
    alpha: float | None = None
    min_effect: float | None = None
    metrics: list[Comparison] = Field(default_factory=list)


@dataclass(config=_CONFIG, kw_only=True)
class HistoryCheck:
    """One figure of one cell against the history of that cell (loadtests/historycheck.py)."""

    cell: str
    figure: str = Field(description="METRIC.STAT, as a rule names it")
    value: float
    verdict: Verdict
    detail: str = ""
    history: int = Field(default=0, description="earlier comparable runs with this figure")
    segment: int = Field(default=0, description="of them, the runs since the last change "
                         "point")
    segment_since: str | None = Field(default=None, description="the run the segment starts "
                                      "at")
    change_points: list[str] = Field(default_factory=list, description="runs each later "
                                     "segment of the history starts at")
    expected: float | None = Field(default=None, description="timing: the segment's mean; "
                                   "counts: the count its rate's upper bound allows")
    change: float | None = Field(default=None, description="timing: value / expected - 1")
    p_value: float | None = None
    q_value: float | None = Field(default=None, description="after Benjamini-Hochberg over "
                                  "the run")


@dataclass(config=_CONFIG, kw_only=True)
class HistoryReport:
    alpha: float
    min_effect: float
    runs: int = Field(description="earlier comparable runs in the history")
    path: str | None = Field(default=None, description="the history file judged against")
    warning: str | None = None
    expected_false_alarms: str = ""
    checks: list[HistoryCheck] = Field(default_factory=list)


@dataclass(config=_CONFIG, kw_only=True)
class GateReport:
    """A whole gate.json: the verdict, each rule's outcome, why the run is invalid."""

    verdict: Literal["pass", "fail", "invalid"] = "pass"
    exit_code: int = 0
    rules: list[RuleOutcome] = Field(default_factory=list)
    invalid: list[str] = Field(default_factory=list, description="why the run cannot be "
                               "trusted at all (exit 3)")
    partly_invalid: list[str] = Field(default_factory=list, description="cells invalid for "
                                      "some questions only: their rules of those are skipped")
    comparison: ComparisonReport | None = None
    history: HistoryReport | None = None

    def to_json(self) -> str:
        return json.dumps(_GATE.dump_python(self, mode="json"), indent=2) + "\n"


_GATE = TypeAdapter(GateReport)


# -- files ----------------------------------------------------------------------------------

def write_results(run_dir: Path, results: Results) -> Path:
    """Write ``run_dir/results.json`` atomically (a temporary file, then a rename), so a run cut
    short still leaves valid JSON for the cells it finished."""
    return _write_atomic(run_dir / RESULTS_FILE, results.to_json())


def write_gate(run_dir: Path, report: GateReport) -> Path:
    return _write_atomic(run_dir / GATE_FILE, report.to_json())


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
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


def parse_results(text: str, where: str) -> Results:
    """A results.json's text as :class:`Results`; :class:`RunError` names what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RunError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise RunError(f"{where}: not a {SCHEMA} document")
    try:
        return _RESULTS.validate_python(data)
    except ValidationError as exc:
        raise RunError(f"{where}: {_problems(exc)}") from None


def _problems(exc: ValidationError, shown: int = 3) -> str:
    errors = exc.errors()
    text = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                     for e in errors[:shown])
    return text + (f" (and {len(errors) - shown} more)" if len(errors) > shown else "")


class Run:
    """A stored run: its results, its gate verdict if any, and its cells' samples on demand.

    A gate.json that cannot be read does not make the run unreadable: :attr:`gate_error`
    says why it is absent.
    """

    def __init__(self, run_dir: Path, results: Results, gate: GateReport | None = None,
                 gate_error: str | None = None) -> None:
        self.run_dir = run_dir
        self.results = results
        self.gate = gate
        self.gate_error = gate_error
        self._samples: dict[CellKey, CellSamples | None] = {}

    @property
    def cells(self) -> list[CellResult]:
        return self.results.cells

    @cached_property
    def variants(self) -> list[str]:
        """Variants the profile asked for or the run holds, in the registry's order."""
        wanted = {k.variant for k in self.results.expected_cells} | {
            c.variant for c in self.cells}
        order = known_variants()
        return [v for v in order if v in wanted] + sorted(wanted - set(order))

    @cached_property
    def latencies(self) -> list[int]:
        return sorted({k.latency_ms for k in self.results.expected_cells}
                      | {c.smtp_latency_ms for c in self.cells})

    @cached_property
    def loads(self) -> list[Load]:
        """Every load of the grid, closed-loop users first, then rates, each ascending."""
        return sorted({k.load for k in self.results.expected_cells}
                      | {c.load for c in self.cells})

    @property
    def complete(self) -> bool:
        return self.results.complete and not self.results.stopped_reason

    def cell(self, variant: str, latency_ms: int, load: Load,
             scenario: str = CLEAN, smtp: str = PLAIN) -> CellResult | None:
        return self.results.cell(CellKey(variant, latency_ms, load, scenario, smtp))

    def cell_dir(self, cell: CellResult) -> Path:
        return self.run_dir / cell.folder

    def samples(self, cell: CellResult) -> CellSamples | None:
        """The cell's kept samples, or None when the file is absent or unreadable."""
        if cell.key not in self._samples:
            try:
                self._samples[cell.key] = read_samples(self.cell_dir(cell))
            except CellFileError:
                self._samples[cell.key] = None
        return self._samples[cell.key]


def load_run(run_dir: Path) -> Run:
    """Read ``run_dir/results.json`` (and ``gate.json`` when present) into a :class:`Run`.

    Raises :class:`RunError` when run_dir is not a directory or results.json is missing, not
    JSON, not a ``maillab.results/1`` document, or breaks the model (naming the field).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run directory")
    path = run_dir / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: no {RESULTS_FILE} in this run directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot be read: {exc}") from None
    run = Run(run_dir, parse_results(text, str(path)))
    # The run's own target answers what its variants are (the scenarios that apply to each,
    # their consumers) for whoever reads it next: the gate, the report.
    target = run.results.target
    activate(target.variants if target is not None and not target.built_in else None)
    gate_path = run_dir / GATE_FILE
    if gate_path.exists():
        try:
            run.gate = _GATE.validate_json(gate_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValidationError) as exc:
            reason = _problems(exc) if isinstance(exc, ValidationError) else str(exc)
            run.gate_error = f"{gate_path}: cannot be read ({reason})"
    return run
