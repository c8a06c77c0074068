"""A cell's figures from what was observed: samples and registrations in, a CellResult out.

:func:`summarize_cell` is a pure function (no process, no clock, no network), so every rule
of counting is unit-tested on hand-made inputs: percentiles from measured samples only,
delivery per measured registration against fakesmtp's capture, and the reasons a cell is
invalid. The runner (maillab.bench) gathers the :class:`Observed` inputs and calls it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from loadtests import cellfiles
from loadtests.cellfiles import CellKey, CellSamples, Registration, Series
from loadtests.profiles import Profile
from loadtests.results import (
    Arrivals,
    CellResult,
    Delivery,
    InboxStats,
    InpProxy,
    LoadGenerator,
    RequestStats,
    Resources,
    ScenarioEvent,
)
from loadtests.stats import inp_rating, percentile

SATURATED_CPU_PERCENT = 90.0  # locust is one gevent loop: past this it measures itself
CAPTURE_LIMIT = 10_000  # fakesmtp's largest page of /api/messages
MEASURED = "registrations sent after the warm-up"


@dataclass
class Capture:
    """Messages per recipient in fakesmtp for this cell; ``truncated`` if some were not seen."""

    counts: Counter[str] = field(default_factory=Counter)
    truncated: bool = False
    drain: str | None = None  # how the wait for email in flight ended


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
    locust_exit: int = 0
    events: list[ScenarioEvent] = field(default_factory=list)


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


def delivery(registrations: Sequence[Registration], capture: Capture,
             sends_email: bool) -> Delivery:
    """Each measured sign-up in one bucket, against the capture: dropped (never started,
    counted in arrivals), failed visibly (started, and the person saw an error or a broken
    connection instead of "check your email"), or accepted, and then delivered or lost
    silently (``missing``). Warm-up sign-ups are left out, as their samples are."""
    accepted = [r for r in registrations if r.accepted]
    measured = [r for r in accepted if not r.warmup]
    started = [r for r in registrations if not r.warmup and not r.dropped]
    counts = capture.counts
    delivered = sum(1 for r in measured if counts.get(r.email, 0) >= 1)
    return Delivery(
        registered=len(measured), delivered=delivered,
        failed_visibly=len(started) - len(measured),
        missing=len(measured) - delivered if sends_email else 0,
        duplicates=sum(max(0, counts.get(r.email, 0) - 1) for r in measured),
        verified=sum(1 for r in measured if r.verify_status == 200),
        expected=sends_email, counted=MEASURED, drain=capture.drain,
        warmup_excluded=len(accepted) - len(measured))


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
    counts = delivery(observed.registrations, observed.capture, observed.sends_email)
    completed = verify.count if observed.sends_email else register.count
    valid, warnings = _validity(observed, register, counts, schedule, profile)
    rate = key.load.rate or None
    return CellResult(
        variant=key.variant, smtp_latency_ms=key.latency_ms,
        users=profile.max_in_flight if rate else key.load.users,
        mode="open" if rate else "closed", rate=rate, scenario=key.scenario,
        scenario_events=list(observed.events),
        duration_s=window, warmup_s=profile.warmup_s,
        register=register, verify=verify,
        inp_proxy=InpProxy(p75_ms=inp_p75, rating=inp_rating(inp_p75),
                           render_allowance_ms=round(profile.render_allowance_ms, 3)),
        time_to_inbox=inbox_stats(samples[cellfiles.TIME_TO_INBOX]),
        throughput_rps=round(completed / window, 3) if window > 0 else 0.0,
        delivery=counts, arrivals=schedule,
        resources=Resources(app_cpu_percent=observed.app_cpu_percent,
                            peak_threads=observed.peak_threads or None,
                            peak_queue_depth=observed.peak_queue_depth),
        load_generator=LoadGenerator(cpu_percent=observed.load_cpu_percent),
        files=files or key.folder, valid=valid, warnings=warnings)


def _validity(observed: Observed, register: RequestStats, counts: Delivery,
              schedule: Arrivals, profile: Profile) -> tuple[bool, list[str]]:
    """Whether the cell's figures can be trusted, and every reason to doubt them."""
    valid, warnings = True, []
    lag = schedule.lag_p99_ms
    if lag is not None and lag > profile.max_start_lag_ms:
        valid = False
        warnings.append(f"the load generator could not keep the schedule: start lag p99 "
                        f"{lag:.1f} ms is above the {profile.max_start_lag_ms:g} ms bound")
    if schedule.dropped:
        warnings.append(f"{schedule.dropped} of {schedule.offered} arrivals were dropped: "
                        f"{profile.max_in_flight} sign-ups were already in flight")
    cpu = observed.load_cpu_percent
    if cpu is not None and cpu > SATURATED_CPU_PERCENT:
        valid = False
        warnings.append(f"load generator saturated: locust used {cpu:.0f}% of a core, so "
                        "its timings include its own queueing")
    for event in observed.events:
        if event.what.startswith("could not apply the scenario"):
            valid = False
            warnings.append(event.what)
    if observed.locust_exit not in (0, 1):  # 1 is locust's "some requests failed"
        valid = False
        warnings.append(f"locust exited with {observed.locust_exit}; see locust.log")
    if observed.capture.truncated:
        valid = False
        warnings.append(f"fakesmtp held more messages than one fetch returns "
                        f"({CAPTURE_LIMIT}): delivery counts are incomplete")
    if not register.count:
        valid = False
        warnings.append("no successful registration was measured")
    if observed.sends_email and counts.missing:
        warnings.append(f"{counts.missing} of {counts.registered} emails never arrived "
                        f"({observed.capture.drain or f'within the {profile.drain_s:g} s drain'})")
    return valid, warnings
