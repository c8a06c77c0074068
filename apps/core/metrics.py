"""``/metrics`` in Prometheus text format, read from a ``stats()`` at scrape time.

The source is the app's Mailer, or the queue consumer's counters in ``maillab worker``. Each
app gets its own registry, made once (tests create many apps in one process), and values are
read on demand rather than mirrored, so the numbers are the source's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class StatsSource(Protocol):
    """What ``/metrics`` reads: ``name``, the ``variant`` label, and ``stats()``, keyed like
    :data:`METRICS`, cheap and thread-safe. Every Mailer is one; so is the consumer's
    ``WorkerStats``, which is no Mailer (it dispatches nothing)."""

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


def registry_for(mailer: StatsSource) -> CollectorRegistry:
    """A registry that reads ``mailer.stats()`` at every scrape; made once per app (or once
    per ``maillab worker``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailerCollector(mailer))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
