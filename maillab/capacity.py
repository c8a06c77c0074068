"""Capacity: the highest offered rate each variant sustains, beside first principles.

A capacity run (``capacity = true`` in a profile, or ``maillab bench --capacity``) steps each
variant up the profile's rates at each SMTP latency. After every cell :func:`breach` says
whether it broke the SLO (register p99 from the intended start, and the share of sign-ups
dropped or failed); the runner then skips that series' higher rates. :func:`capacity_rows`
turns the finished cells into one :class:`~loadtests.results.Capacity` per series: the knee
(the highest rate that held), what broke above it, the resources at the knee, and the
prediction.

The predictions are the arithmetic the seeds' advice rests on, not a fit:

- ``sync`` holds an app thread for the whole SMTP conversation, so it serves at most
  ``workers x threads / SMTP time`` sign-ups per second (plus the request's own time, which
  the prediction leaves out, so the measured knee sits a little below it);
- ``threaded`` answers at once but keeps one thread per email in flight: by Little's law,
  ``rate x SMTP time`` of them, on top of what the request threads need (measured as the
  baseline's live threads at the same rate);
- ``queued`` answers at once too; its consumer delivers at most ``consumer threads / SMTP
  time`` emails per second, beyond which emails wait in the queue (time to inbox grows,
  register does not);
- ``baseline`` sends nothing: its knee is the machine's, CPU-bound.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtests.profiles import Profile
from loadtests.results import Capacity, CellResult, EndedBy
from loadtests.summary import schedule_lost
from loadtests.target import variant_info


def slo_text(profile: Profile) -> str:
    return (f"register p99 <= {profile.slo_p99_ms:g} ms from the intended start, time to inbox "
            f"p99 <= {profile.slo_inbox_p99_ms:g} ms, dropped or failed (and emails past the "
            f"inbox deadline) <= {profile.slo_bad_share:.0%}, schedule kept")


def breach(cell: CellResult, profile: Profile) -> tuple[EndedBy, str] | None:
    """What ended the series at ``cell`` and why, or None when it held every SLO. A load
    generator that could not keep the schedule says nothing about the variant: that ends the
    series (no higher rate can be offered either) but is not an SLO break."""
    lagged = schedule_lost(cell.arrivals, profile)
    if lagged is not None:
        return "load generator could not keep the schedule", lagged
    if not cell.valid:
        return "invalid", "; ".join(cell.warnings or ["marked invalid"])
    p99 = cell.register.p99_ms
    if p99 is None:
        return "register SLO", "no registration was measured"
    if p99 > profile.slo_p99_ms:
        return "register SLO", f"register p99 {p99:.0f} ms > {profile.slo_p99_ms:g} ms"
    arrivals = cell.arrivals
    offered = arrivals.offered if arrivals else cell.register.count + cell.register.failures
    bad = (arrivals.dropped if arrivals else 0) + cell.register.failures
    if offered and bad / offered > profile.slo_bad_share:
        return "failures SLO", f"{bad} of {offered} sign-ups dropped or failed"
    if cell.sends_email:
        inbox = cell.time_to_inbox
        if inbox.p99_ms is not None and inbox.p99_ms > profile.slo_inbox_p99_ms:
            return "inbox SLO", (f"time to inbox p99 {inbox.p99_ms:.0f} ms > "
                                 f"{profile.slo_inbox_p99_ms:g} ms")
        waited = inbox.count + inbox.failures
        if waited and inbox.failures / waited > profile.slo_bad_share:
            return "inbox SLO", (f"{inbox.failures} of {waited} emails not in the inbox "
                                 f"within {profile.inbox_deadline_s:g} s")
    return None


def predicted_rps(variant: str, latency_ms: int, profile: Profile) -> tuple[float | None, str]:
    """The variant's capacity from first principles at ``latency_ms``, and how it was made."""
    seconds = latency_ms / 1000
    if variant_info(variant).waits_for_smtp and seconds > 0:
        slots = profile.workers * profile.threads
        return slots / seconds, (f"{profile.workers} workers x {profile.threads} threads / "
                                 f"{seconds:g} s SMTP")
    if variant_info(variant).consumer is not None and seconds > 0:
        return profile.worker_threads / seconds, (
            f"emails, not sign-ups: {profile.worker_threads} consumer threads / {seconds:g} s "
            "SMTP; register is not bounded by it")
    info = variant_info(variant)
    if not info.sends_email:
        return None, "bound by CPU, not SMTP"
    if info.in_threads:
        return None, "no bound from SMTP: one more thread per email in flight"
    return None, "none at 0 ms SMTP"


def predicted_backlog_ms(variant: str, latency_ms: int, rate: float | None, warmup_s: float,
                         window_s: float, consumer_threads: int | None) -> float:
    """How much later than the SMTP time an email reaches the inbox at p95, from first
    principles, because the consumer cannot keep up: 0 for a variant without one, or at or
    below its capacity ``mu`` = threads / SMTP time. Above it the queue grows by ``rate - mu``
    each second from the start of the load, so the sign-up at time t waits
    ``(rate / mu - 1) x t`` for a free thread; the 95th percentile of the measured sign-ups
    (arriving after the warm-up, over the window) waits ``(rate / mu - 1) x (warm-up + 0.95 x
    window)``. The gate's inbox rules add it (``backlog_ms``), so a profile that offers more
    than its consumers deliver is judged against what they can, not failed for it."""
    seconds = latency_ms / 1000
    if (variant_info(variant).consumer is None or not rate or not consumer_threads
            or seconds <= 0):
        return 0.0
    capacity = consumer_threads / seconds
    return max(0.0, rate / capacity - 1) * (warmup_s + 0.95 * window_s) * 1000


def capacity_rows(cells: Sequence[CellResult], profile: Profile) -> list[Capacity]:
    """One row per (variant, SMTP latency) that has cells, in the profile's order."""
    rows = []
    for latency in profile.latencies_ms:
        for variant in profile.variants:
            series = sorted((c for c in cells if c.variant == variant
                             and c.smtp_latency_ms == latency and c.rate),
                            key=lambda c: c.rate or 0.0)
            if series:
                rows.append(_row(variant, latency, series, cells, profile))
    return rows


def _row(variant: str, latency: int, series: list[CellResult], cells: Sequence[CellResult],
         profile: Profile) -> Capacity:
    held, broke, ended = None, None, None
    for cell in series:
        ended = breach(cell, profile)
        if ended is None:
            held = cell
            continue
        broke = cell
        break
    ran = {c.rate for c in series}
    skipped = [r for r in profile.rates if broke is not None and broke.rate is not None
               and r > broke.rate and r not in ran]
    predicted, how = predicted_rps(variant, latency, profile)
    resources = held.resources if held else None
    email_threads, predicted_threads = None, None
    if variant_info(variant).in_threads and held is not None and held.rate:
        predicted_threads = round(held.rate * latency / 1000, 1)
        floor = next((c for c in cells if not variant_info(c.variant).sends_email
                      and c.smtp_latency_ms == latency and c.rate == held.rate), None)
        if floor and floor.resources.peak_threads and held.resources.peak_threads:
            email_threads = float(held.resources.peak_threads - floor.resources.peak_threads)
    return Capacity(variant=variant, smtp_latency_ms=latency, slo=slo_text(profile),
                    knee_rps=held.rate if held else None,
                    broke_at_rps=broke.rate if broke else None,
                    broke_because=ended[1] if ended else None,
                    ended_by=ended[0] if ended else None,
                    skipped_rates=skipped, predicted_rps=predicted, prediction=how,
                    peak_threads=resources.peak_threads if resources else None,
                    predicted_email_threads=predicted_threads, email_threads=email_threads,
                    peak_queue_depth=resources.peak_queue_depth if resources else None,
                    app_cpu_percent=resources.app_cpu_percent if resources else None,
                    inbox_p99_ms=held.time_to_inbox.p99_ms if held else None)
