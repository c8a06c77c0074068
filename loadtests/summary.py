"""A cell's figures from what was observed: samples and registrations in, a CellResult out.

:func:`summarize_cell` is a pure function (no process, no clock, no network), so every rule
of counting is unit-tested on hand-made inputs: percentiles from measured samples only,
delivery per measured registration against fakesmtp's capture, and the reasons a cell is
invalid. The runner (maillab.bench) gathers the :class:`Observed` inputs and calls it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from fakesmtp.stats import LATENESS_TAIL_DELAYS
from loadtests import cellfiles
from loadtests.cellfiles import CellKey, CellSamples, Merged, Registration, Series
from loadtests.profiles import Profile
from loadtests.results import (
    FAMILIES,
    Arrivals,
    Browser,
    CellResult,
    Delivery,
    Family,
    InboxStats,
    InpCalibration,
    InpProxy,
    LoadGenerator,
    PhaseLatency,
    RequestStats,
    Resources,
    Results,
    ScenarioEvent,
    SmtpFaults,
)
from loadtests.scenarios import CLEAN
from loadtests.scenarios import scenario as scenario_of
from loadtests.stats import inp_rating, median, percentile

SATURATED_CPU_PERCENT = 90.0  # locust is one gevent loop: past this it measures itself
MEASURED = "registrations sent after the warm-up"
LAGGED = "the load generator could not keep the schedule"


@dataclass
class Capture:
    """Messages per recipient in fakesmtp for this cell; ``truncated`` if some were not seen."""

    counts: Counter[str] = field(default_factory=Counter)
    truncated: bool = False
    drain: str | None = None  # how the wait for email in flight ended
    first_at: dict[str, float] = field(default_factory=dict)  # first arrival, epoch s
    # What each recipient met at fakesmtp (reply codes, actions), from /api/faults.
    faulted: dict[str, dict[str, int]] = field(default_factory=dict)
    smtp: SmtpFaults | None = None
    open_connections: int = 0  # SMTP connections open when it was read

    def refused(self, address: str) -> bool:
        """Whether fakesmtp answered a permanent (5xx) refusal for ``address``."""
        return any(outcome.startswith("5") for outcome in self.faulted.get(address, {}))


@dataclass
class Observed:
    """Everything measured during one cell, as the runner collected it."""

    samples: CellSamples
    registrations: Sequence[Registration]
    capture: Capture
    sends_email: bool
    peak_threads: int | None = None
    peak_queue_depth: int | None = None
    load_cpu_percent: float | None = None
    app_cpu_percent: float | None = None
    load_processes: int | None = None
    # (s, MiB, processes read): see maillab.sampling.CellSampler.load_rss
    load_rss: list[tuple[float, float, int]] = field(default_factory=list)
    merged: Merged | None = None  # how the load processes' parts were joined; None: not parts
    # POST /register the app's /metrics counted over every worker; None: not scraped.
    app_register_requests: int | None = None
    locust_exit: int = 0
    events: list[ScenarioEvent] = field(default_factory=list)
    # When the scenario's fault ended (the outage lifted, the process started again), epoch
    # s; None when it lasts the whole cell or there is none: then nothing can be late.
    fault_ended_at: float | None = None
    browser: Browser | None = None  # the browser probe's figures, where it ran
    browser_note: str | None = None  # why the probe gave no (or partial) figures


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def request_stats(series: Series, window_s: float) -> RequestStats:
    times = series.times
    return RequestStats(
        count=len(times), failures=series.failures,
        rps=round(len(times) / window_s, 3) if window_s > 0 else 0.0,
        p50_ms=_ms(percentile(times, 50)), p75_ms=_ms(percentile(times, 75)),
        p95_ms=_ms(percentile(times, 95)), p99_ms=_ms(percentile(times, 99)),
        max_ms=_ms(times[-1] if times else None))


def inbox_stats(series: Series) -> InboxStats:
    times = series.times
    return InboxStats(count=len(times), failures=series.failures,
                      p50_ms=_ms(percentile(times, 50)), p95_ms=_ms(percentile(times, 95)),
                      p99_ms=_ms(percentile(times, 99)))


def delivery(registrations: Sequence[Registration], capture: Capture, sends_email: bool,
             fault_ended_at: float | None = None) -> Delivery:
    """Each measured sign-up that started in one bucket, against the capture: delivered (its
    email arrived), refused (fakesmtp answered a permanent 5xx for its address and nothing
    arrived; ``refused_told`` of them saw an error), lost silently (``missing``: accepted,
    told to check their email, nothing arrived) or failed visibly (an error or a broken
    connection instead of "check your email"). Dropped arrivals are counted in
    :func:`arrivals`. Late: delivered after the fault ended though signed up before it.
    Warm-up sign-ups are left out, as their samples are."""
    measured = [r for r in registrations if not r.warmup and not r.dropped]
    accepted = [r for r in registrations if r.accepted]
    counts = capture.counts

    def arrived(r: Registration) -> bool:
        return counts.get(r.email, 0) >= 1

    told = [r for r in measured if r.accepted]
    shown_error = [r for r in measured if not r.accepted]
    refused = [r for r in measured if sends_email and not arrived(r) and capture.refused(r.email)]
    refused_told = sum(1 for r in refused if not r.accepted)
    delivered = [r for r in told if arrived(r)]
    late_ms = sorted(
        (capture.first_at[r.email] - r.sent_at) * 1000.0 for r in delivered
        if fault_ended_at is not None and r.sent_at is not None and r.sent_at < fault_ended_at
        and capture.first_at.get(r.email, 0.0) > fault_ended_at)
    return Delivery(
        registered=len(told), delivered=len(delivered),
        failed_visibly=len(shown_error) - refused_told,
        missing=len(told) - len(delivered) - (len(refused) - refused_told) if sends_email else 0,
        duplicates=sum(max(0, counts.get(r.email, 0) - 1) for r in told),
        verified=sum(1 for r in told if r.verified),
        expected=sends_email, counted=MEASURED, drain=capture.drain,
        warmup_excluded=len(accepted) - len(told),
        refused=len(refused), refused_told=refused_told,
        delivered_anyway=sum(1 for r in shown_error if arrived(r)),
        late=len(late_ms) if fault_ended_at is not None and sends_email else None,
        late_inbox_p50_ms=_ms(percentile(late_ms, 50)),
        late_inbox_max_ms=_ms(late_ms[-1] if late_ms else None))


def arrivals(registrations: Sequence[Registration]) -> Arrivals:
    """The measured sign-ups' schedule against what happened: started or dropped, and how
    late the started ones began."""
    measured = [r for r in registrations if not r.warmup]
    lags = sorted(r.lag_ms for r in measured if r.lag_ms is not None and not r.dropped)
    dropped = sum(1 for r in measured if r.dropped)
    return Arrivals(offered=len(measured), started=len(measured) - dropped, dropped=dropped,
                    lag_p50_ms=_ms(percentile(lags, 50)), lag_p99_ms=_ms(percentile(lags, 99)))


def summarize_cell(key: CellKey, profile: Profile, observed: Observed,
                   files: str | None = None) -> CellResult:
    schedule = arrivals(observed.registrations)
    window = profile.measured_s(key)
    if key.load.rate and schedule.offered:
        # The schedule's own span: locust's run time also holds its start-up.
        window = schedule.offered / key.load.rate
    samples = observed.samples
    inp = samples[cellfiles.INP_PROXY].times
    inp_p75 = _ms(percentile(inp, 75))
    register = request_stats(samples[cellfiles.REGISTER], window)
    verify = request_stats(samples[cellfiles.VERIFY], window)
    counts = delivery(observed.registrations, observed.capture, observed.sends_email,
                      observed.fault_ended_at)
    completed = verify.count if observed.sends_email else register.count
    found = _validity(observed, register, counts, schedule, profile)
    scenario = scenario_of(key.scenario)
    _count_alike(observed, scenario.kill == "app" and not scenario.in_place, found)
    rate = key.load.rate or None
    return CellResult(
        variant=key.variant, smtp_latency_ms=key.latency_ms,
        users=profile.max_in_flight if rate else key.load.users,
        mode="open" if rate else "closed", rate=rate, scenario=key.scenario, smtp=key.smtp,
        scenario_events=list(observed.events),
        duration_s=window, warmup_s=profile.warmup_s,
        register=register, verify=verify,
        inp_proxy=InpProxy(p75_ms=inp_p75, rating=inp_rating(inp_p75),
                           render_allowance_ms=round(profile.render_allowance_ms, 3)),
        time_to_inbox=inbox_stats(samples[cellfiles.TIME_TO_INBOX]),
        throughput_rps=round(completed / window, 3) if window > 0 else 0.0,
        delivery=counts, arrivals=schedule, smtp_faults=observed.capture.smtp,
        browser=observed.browser,
        resources=Resources(app_cpu_percent=observed.app_cpu_percent,
                            peak_threads=observed.peak_threads or None,
                            peak_queue_depth=observed.peak_queue_depth,
                            register_requests=observed.app_register_requests),
        load_generator=load_generator(observed),
        files=files or key.folder, valid=not found.invalid_for,
        invalid_for=[f for f in FAMILIES if f in found.invalid_for], warnings=found.warnings)


def _count_alike(observed: Observed, app_restarted: bool, found: _Validity) -> None:
    """Check that the app's own count of POST /register (every worker, from /metrics) is what
    the load generator recorded as answered, plus the browser probe's. Not checked where the
    app was started again (its count starts again) or the probe stopped part-way."""
    seen = observed.app_register_requests
    if seen is None or app_restarted or observed.browser_note:
        return
    answered = sum(1 for r in observed.registrations if r.status is not None)
    answered += observed.browser.count if observed.browser else 0
    if seen != answered:  # a record short of what happened: no figure of it can be trusted
        found.spoils(FAMILIES, f"the app counted {seen} POST /register (its /metrics, every "
                               f"worker) but the load generator recorded {answered} answered")


RSS_SETTLED_S = 60.0  # the memory baseline is read this long into the load


def load_generator(observed: Observed) -> LoadGenerator:
    """The load processes' CPU, memory and sample counts. Memory a minute in, not at the
    start: locust's imports and first connections are done by then, so growth after it is
    what a long run would keep adding. Only readings with every process up count: not the
    master alone before it forks its workers, or after they have exited."""
    every = max((n for _, _, n in observed.load_rss), default=0)
    rss = [(at, mb) for at, mb, n in observed.load_rss if n == every]
    first = next((mb for at, mb in rss if at >= RSS_SETTLED_S), rss[0][1] if rss else None)
    merged = observed.merged
    return LoadGenerator(cpu_percent=observed.load_cpu_percent,
                         processes=observed.load_processes,
                         samples=merged.samples if merged else None,
                         requests=merged.requests if merged else None,
                         rss_mb_first=first, rss_mb_last=rss[-1][1] if rss else None,
                         rss_mb_peak=max(mb for _, mb in rss) if rss else None)


class _Validity:
    """What doubts a cell's figures, per question (:data:`loadtests.results.FAMILIES`)."""

    def __init__(self) -> None:
        self.invalid_for: set[Family] = set()
        self.warnings: list[str] = []

    def warn(self, reason: str) -> None:
        self.warnings.append(reason)

    def spoils(self, families: Collection[Family], reason: str) -> None:
        self.invalid_for.update(families)
        self.warnings.append(reason)


_TIMING: tuple[Family] = ("timing",)
_DELIVERY: tuple[Family] = ("delivery",)


def schedule_lost(schedule: Arrivals | None, profile: Profile) -> str | None:
    """Why the load generator could not keep the schedule (its start lag p99 is past the
    profile's bound), or None when it kept it."""
    lag = schedule.lag_p99_ms if schedule is not None else None
    if lag is None or lag <= profile.max_start_lag_ms:
        return None
    return (f"{LAGGED}: start lag p99 {lag:.1f} ms is above the "
            f"{profile.max_start_lag_ms:g} ms bound")


def _validity(observed: Observed, register: RequestStats, counts: Delivery,
              schedule: Arrivals, profile: Profile) -> _Validity:
    """Every reason to doubt the cell's figures, and which question each spoils. The load
    generator falling behind, or fakesmtp firing its timers late, spoil timing only: every
    sign-up is still counted from the same capture. Those are also the passing reasons (a
    neighbour's burst on a shared machine), so a cell invalid for timing alone is worth a
    second attempt (:func:`worth_another_attempt`)."""
    found = _Validity()
    lagged = schedule_lost(schedule, profile)
    if lagged is not None:
        found.spoils(_TIMING, lagged)
    if schedule.dropped:
        found.warn(f"{schedule.dropped} of {schedule.offered} arrivals were dropped: "
                   f"{profile.max_in_flight} sign-ups were already in flight")
    cpu = observed.load_cpu_percent
    if cpu is not None and cpu > SATURATED_CPU_PERCENT:
        found.spoils(_TIMING, f"load generator saturated: locust used {cpu:.0f}% of a core, "
                              "so its timings include its own queueing")
    for event in observed.events:
        if event.what.startswith("could not apply the scenario"):
            found.spoils(FAMILIES, event.what)
    if observed.browser_note:
        found.warn(observed.browser_note)
    if observed.merged is not None and observed.merged.problems:
        for problem in observed.merged.problems:
            found.spoils(FAMILIES, problem)
    if observed.locust_exit not in (0, 1):  # 1 is locust's "some requests failed"
        found.spoils(FAMILIES, f"locust exited with {observed.locust_exit}; see locust.log")
    if observed.capture.truncated:
        found.spoils(_DELIVERY, "fakesmtp received more messages than it keeps (max_messages: "
                                "the oldest were evicted) or faulted more recipients than it "
                                "records: delivery counts are incomplete")
    smtp = observed.capture.smtp
    for phase, late in (smtp.latency if smtp else {}).items():
        _delivered(phase, late, found)
    if not register.count:
        found.spoils(FAMILIES, "no successful registration was measured")
    if observed.sends_email and counts.missing:
        found.warn(f"{counts.missing} of {counts.registered} emails never arrived "
                   f"({observed.capture.drain or f'within the {profile.drain_s:g} s drain'})")
    return found


def worth_another_attempt(cell: CellResult) -> bool:
    """Whether the cell is invalid for a passing reason only (see :func:`_validity`)."""
    return cell.invalid_for == ["timing"]


def _delivered(phase: str, late: PhaseLatency, found: _Validity) -> None:
    """Whether fakesmtp delivered the latency it injected at ``phase`` (if not, the cell's
    timing is not what it says). Judged on the p99 where there are enough delays for one to
    be a tail; with fewer, the p99 is the single worst delay, and one stall (Chromium starting
    beside a small cell, say) is a warning, while a p50 past the bound still means the server
    was overloaded throughout."""
    bound, p99, p50 = late.bound_ms, late.lateness_p99_ms, late.lateness_p50_ms
    if bound is None or p99 is None or p99 <= bound:
        return
    told = (f"fakesmtp's delays at {phase} came {p99:.1f} ms late at p99, past the "
            f"{bound:g} ms bound")
    if late.count >= LATENESS_TAIL_DELAYS or (p50 is not None and p50 > bound):
        found.spoils(_TIMING, f"fakesmtp did not deliver the latency it injected: {told} (the "
                              "SMTP server was overloaded)")
    else:
        found.warn(f"{told}, in {late.count} delays: the worst one, not a tail; the cell "
                   "stays valid")


def inp_calibration(cells: Sequence[CellResult]) -> InpCalibration | None:
    """The proxy's render allowance measured on the run's clean baseline cells that had
    browser sign-ups (see :class:`InpCalibration`); None where there are none."""
    gaps, reference, signups, assumed = [], [], 0, set()
    for cell in cells:
        seen = cell.browser.click_to_confirmation_p75_ms if cell.browser else None
        proxy = cell.inp_proxy
        if (cell.variant != "baseline" or cell.scenario != CLEAN or cell.browser is None
                or seen is None or proxy.p75_ms is None or proxy.render_allowance_ms is None):
            continue
        gaps.append(seen - (proxy.p75_ms - proxy.render_allowance_ms))
        reference.append(cell.label)
        signups += cell.browser.count
        assumed.add(proxy.render_allowance_ms)
    found = median(gaps)
    if found is None:
        return None
    return InpCalibration(allowance_ms=round(max(0.0, found), 1),
                          assumed_ms=assumed.pop() if len(assumed) == 1 else None,
                          reference=reference, signups=signups)


def calibrate(results: Results) -> None:
    """Set the run's calibration, and each cell's calibrated proxy from it (again from the
    measured proxy, so calling this after every cell gives the same as calling it once)."""
    found = inp_calibration(results.cells)
    results.inp_calibration = found
    for cell in results.cells:
        proxy = cell.inp_proxy
        if found is None or proxy.p75_ms is None or proxy.render_allowance_ms is None:
            proxy.calibrated_p75_ms = None
        else:
            proxy.calibrated_p75_ms = round(
                proxy.p75_ms - proxy.render_allowance_ms + found.allowance_ms, 1)
