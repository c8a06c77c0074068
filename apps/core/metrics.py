"""``/metrics`` in Prometheus text format.

Two sources, one set of names (:data:`METRICS`):

- **The web app** keeps its numbers in prometheus_client metrics (:class:`AppMetrics`, one
  set per app, unregistered: tests build many apps in one process). Under a server of several
  processes, gunicorn's workers, ``$PROMETHEUS_MULTIPROC_DIR`` is set before the server starts
  (``maillab serve`` sees to it) and prometheus_client's multiprocess mode keeps every
  worker's values in files there; a scrape, whichever worker answers it, sums them
  (``MultiProcessCollector``), so it sees the whole app. Gauges a worker reads off the world
  (its live threads, the queue's depth) are set as it answers.
- **A consumer** (``maillab worker``, ``maillab relay``) is one process: its counters are read
  from ``stats()`` at scrape time, as they are.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# stats() key -> (metric name, help, is a counter); counters get "_total" from the library.
METRICS = {
    "emails_dispatched_total": ("maillab_emails_dispatched", "Emails handed to the mailer.", True),
    "emails_delivered_total": ("maillab_emails_delivered", "Emails the SMTP server accepted "
                               "(as seen by this process).", True),
    "emails_failed_total": ("maillab_emails_failed", "Emails whose delivery failed for good "
                            "(as seen by this process).", True),
    "emails_retried_total": ("maillab_emails_retried", "Deliveries scheduled for another "
                             "try after a transient failure.", True),
    "emails_in_flight": ("maillab_emails_in_flight", "Emails dispatched, not yet delivered or "
                         "failed (as seen by this process).", False),
    "live_threads": ("maillab_live_threads", "Threads alive in this process.", False),
    "queue_depth": ("maillab_queue_depth", "Tasks waiting in the queue.", False),
}
REGISTER_REQUESTS = ("maillab_register_requests", "POST /register answered, by status code "
                     "(every worker of the app).")
# How a gauge of several processes adds up: threads and emails in flight over the live
# workers; the queue is one, so the latest reading of it.
_GAUGE_MODES = {"emails_in_flight": "livesum", "live_threads": "livesum",
                "queue_depth": "livemostrecent"}


def multiprocess_dir() -> Path | None:
    """Where a multi-process server keeps its metrics, or None (one process)."""
    found = os.environ.get(MULTIPROC_ENV)
    return Path(found) if found else None


def worker_exited(pid: int) -> None:
    """gunicorn's ``child_exit``: a dead worker's live gauges stop counting."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


class AppMetrics:
    """The web app's numbers, kept as prometheus_client metrics: the one place they live."""

    def __init__(self, variant: str, delivers: bool = True) -> None:
        self.variant = variant
        self.families: dict[str, Counter | Gauge] = {}
        for key, (name, doc, counter) in METRICS.items():
            if key == "emails_retried_total" or (key == "emails_delivered_total"
                                                 and not delivers):
                continue  # counted by the consumer, in its own process
            self.families[key] = (
                Counter(name, doc, ["variant"], registry=None) if counter else
                Gauge(name, doc, ["variant"], registry=None,
                      multiprocess_mode=_GAUGE_MODES[key]))  # type: ignore[arg-type]
        self.register_requests = Counter(*REGISTER_REQUESTS, ["variant", "status"],
                                         registry=None)
        self._lock = threading.Lock()

    def inc(self, key: str, amount: float = 1) -> None:
        self.families[key].labels(self.variant).inc(amount)

    def dec(self, key: str) -> None:
        family = self.families[key]
        assert isinstance(family, Gauge)
        family.labels(self.variant).dec()

    def set(self, key: str, value: float) -> None:
        family = self.families[key]
        assert isinstance(family, Gauge)
        family.labels(self.variant).set(value)

    def forget(self, key: str) -> None:
        """Leave ``key`` out of the next scrape. (prometheus_client cannot remove a value in
        multiprocess mode: there the last one stays.)"""
        if multiprocess_dir() is None:
            self.families[key].remove(self.variant)

    def registered(self, status: int) -> None:
        self.register_requests.labels(self.variant, str(status)).inc()

    def value(self, key: str) -> float:
        """This process's value of ``key`` (a counter's total)."""
        name = METRICS[key][0] + ("_total" if METRICS[key][2] else "")
        for metric in self.families[key].collect():
            for sample in metric.samples:
                if sample.name == name and sample.labels.get("variant") == self.variant:
                    return float(sample.value)
        return 0.0

    def registry(self, refresh: Callable[[], None]) -> CollectorRegistry:
        """What a scrape reads: ``refresh`` first (the gauges read off the world), then
        every worker's values summed, or this process's alone."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Refresh(refresh))
        if multiprocess_dir() is not None:
            multiprocess.MultiProcessCollector(registry)
        else:
            for family in (*self.families.values(), self.register_requests):
                registry.register(family)
        return registry


class _Refresh(Collector):
    """Sets the gauges a process reads off the world just before a scrape; yields nothing."""

    def __init__(self, refresh: Callable[[], None]) -> None:
        self.refresh = refresh

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        return iter(())


class StatsSource(Protocol):
    """What a consumer's ``/metrics`` reads: ``name``, the ``variant`` label, and ``stats()``,
    keyed like :data:`METRICS`, cheap and thread-safe."""

    name: str

    def stats(self) -> dict[str, float]: ...


class MailerCollector(Collector):
    def __init__(self, mailer: StatsSource) -> None:
        self.mailer = mailer

    def collect(self) -> Iterator[Metric]:
        stats = self.mailer.stats()
        for key, (name, doc, counter) in METRICS.items():
            if key not in stats:  # a number this process cannot know is left out, not zeroed
                continue
            family = CounterMetricFamily if counter else GaugeMetricFamily
            metric = family(name, doc, labels=["variant"])
            metric.add_metric([self.mailer.name], float(stats.get(key, 0)))
            yield metric


def app_metrics(mailer: object) -> AppMetrics | None:
    """A web app's mailer keeps its numbers in ``mailer.counters.metrics``; a consumer's
    source does not."""
    found = getattr(getattr(mailer, "counters", None), "metrics", None)
    return found if isinstance(found, AppMetrics) else None


def registry_for(mailer: StatsSource) -> CollectorRegistry:
    """A registry for ``mailer``'s scrape. A web app's (:func:`app_metrics`) sets the gauges
    from ``stats()`` and reads every metric; anything else (a consumer's counters) is read
    from ``stats()`` as it is."""
    kept = app_metrics(mailer)
    if kept is not None:
        def refresh() -> None:
            stats = mailer.stats()
            for key in _GAUGE_MODES:
                if key in stats:
                    kept.set(key, stats[key])
                else:  # unknown now (the queue is down): left out, not zeroed. (A
                    # multi-process server's file keeps the last value it had.)
                    kept.forget(key)

        return kept.registry(refresh)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailerCollector(mailer))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
