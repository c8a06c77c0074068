"""Counters and latency samples, as JSON (``/api/stats``) and Prometheus text (``/metrics``).

Latency per phase is kept twice: ``injected`` is the delay drawn from the spec, ``observed`` is
how long the server actually waited (``asyncio.sleep`` plus event-loop lag). Their difference
per event is the phase's *lateness*: a server busy with its sessions' own work fires its timers
late, and then delivers more latency than it says it injects. :func:`lateness_bound` is how much
lateness still counts as delivering the spec (the bench judges each cell by it).
Percentiles come from the last ``SAMPLES`` events of each phase (exact over that window).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Final

from fakesmtp.latency import PHASES

SAMPLES: Final = 10_000
# Recipients whose faults are remembered one by one (``/api/faults``); past this many in one
# reset period the record says it was truncated rather than growing without bound.
FAULTED_RECIPIENTS: Final = 100_000
# A phase delivers its latency when its lateness p99 is within 5% of the injected p99, or
# within 10 ms, whichever is more: a loaded 2-core machine schedules a sleeping session a few
# milliseconds late whatever the delay, and 5% of a 5 s delay is noise to a 5 s wait.
LATENESS_SHARE: Final = 0.05
LATENESS_FLOOR_S: Final = 0.010
# Below this many delays a p99 is the single worst one, not a tail: the bench then judges the
# p50 against the bound and only warns about the p99.
LATENESS_TAIL_DELAYS: Final = 100


def lateness_bound(injected_p99_s: float) -> float:
    """The most lateness (seconds, p99) that still counts as delivering ``injected_p99_s``."""
    return max(LATENESS_FLOOR_S, LATENESS_SHARE * injected_p99_s)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Stats:
    """Mutated from the event loop thread only; ``connections_open`` is a live gauge that
    :meth:`reset` leaves alone."""

    def __init__(self) -> None:
        self.connections_open = 0
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.connections_total = 0
        self.rejected_by_code: Counter[str] = Counter()
        self.fault_hits: Counter[str] = Counter()  # by rule id, whatever the action
        self.actions: Counter[str] = Counter()  # disconnect / hang / drop performed
        self.aborted_sessions = 0  # the client vanished mid-DATA
        # What each recipient met: reply codes ("451", "550") and actions ("hang", "drop"),
        # counted, so a client can tell a permanent refusal from a loss per address.
        self.faulted: dict[str, Counter[str]] = {}
        self.faulted_truncated = False
        self.injected = {p: deque[float](maxlen=SAMPLES) for p in PHASES}
        self.observed = {p: deque[float](maxlen=SAMPLES) for p in PHASES}
        self.lateness = {p: deque[float](maxlen=SAMPLES) for p in PHASES}

    def record_latency(self, phase: str, injected: float, observed: float) -> None:
        self.injected[phase].append(injected)
        self.observed[phase].append(observed)
        self.lateness[phase].append(observed - injected)

    def record_fault(self, recipients: Sequence[str], outcome: str) -> None:
        for address in recipients:
            key = address.lower()
            met = self.faulted.get(key)
            if met is None:
                if len(self.faulted) >= FAULTED_RECIPIENTS:
                    self.faulted_truncated = True
                    continue
                met = self.faulted[key] = Counter()
            met[outcome] += 1

    def faults_by_recipient(self) -> dict[str, Any]:
        return {"recipients": {a: dict(c) for a, c in self.faulted.items()},
                "truncated": self.faulted_truncated}

    def record_reply(self, code: int) -> None:
        if code >= 400:
            self.rejected_by_code[str(code)] += 1

    def latency_summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for phase in PHASES:
            inj, obs = sorted(self.injected[phase]), sorted(self.observed[phase])
            late = sorted(self.lateness[phase])
            injected_p99, late_p99 = percentile(inj, 99), percentile(late, 99)
            bound = lateness_bound(injected_p99) if injected_p99 is not None else None
            out[phase] = {
                "count": len(inj),
                "injected_p50_ms": _ms(percentile(inj, 50)),
                "injected_p99_ms": _ms(injected_p99),
                "observed_p50_ms": _ms(percentile(obs, 50)),
                "observed_p99_ms": _ms(percentile(obs, 99)),
                "lateness_p50_ms": _ms(percentile(late, 50)),
                "lateness_p99_ms": _ms(late_p99),
                "lateness_max_ms": _ms(late[-1] if late else None),
                "lateness_bound_ms": _ms(bound),
                "within_bound": None if bound is None or late_p99 is None else late_p99 <= bound,
            }
        return out

    def snapshot(self, stored: int, evicted: int, waiting: int = 0) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": stored,
            "evicted": evicted,
            "rejected": {
                "total": sum(self.rejected_by_code.values()),
                "by_code": dict(sorted(self.rejected_by_code.items())),
                "by_rule": dict(sorted(self.fault_hits.items())),
            },
            "actions": dict(sorted(self.actions.items())),
            "aborted_sessions": self.aborted_sessions,
            "connections": {"open": self.connections_open, "total": self.connections_total},
            "long_polls_waiting": waiting,
            "latency": self.latency_summary(),
        }

    def prometheus(self, stored: int, evicted: int) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP fakesmtp_{name} {help_}")
            lines.append(f"# TYPE fakesmtp_{name} {kind}")
            lines.extend(f"fakesmtp_{name}{labels} {_num(v)}" for labels, v in samples)

        metric("messages_received_total", "counter", "Messages accepted.", [("", self.received)])
        metric("messages_stored", "gauge", "Messages held in memory.", [("", stored)])
        metric("messages_evicted_total", "counter", "Oldest messages dropped.", [("", evicted)])
        metric(
            "replies_rejected_total", "counter", "4xx/5xx replies sent, by code.",
            [(_labels(code=c), n) for c, n in sorted(self.rejected_by_code.items())],
        )
        metric(
            "fault_hits_total", "counter", "Fault rules fired, by rule id.",
            [(_labels(rule=r), n) for r, n in sorted(self.fault_hits.items())],
        )
        metric(
            "fault_actions_total", "counter", "Disconnects, hangs and drops performed.",
            [(_labels(action=a), n) for a, n in sorted(self.actions.items())],
        )
        metric("sessions_aborted_total", "counter", "Clients gone mid-DATA.",
               [("", self.aborted_sessions)])
        metric("connections_open", "gauge", "Open SMTP connections.",
               [("", self.connections_open)])
        metric("connections_total", "counter", "SMTP connections accepted.",
               [("", self.connections_total)])
        for kind, source in (("injected", self.injected), ("observed", self.observed),
                             ("lateness", self.lateness)):
            samples: list[tuple[str, float]] = []
            for phase in PHASES:
                values = sorted(source[phase])
                for q in (0.5, 0.99):
                    value = percentile(values, q * 100)
                    if value is not None:
                        samples.append((_labels(phase=phase, quantile=str(q)), value))
            metric(f"latency_{kind}_seconds", "gauge", _LATENCY_HELP[kind], samples)
        return "\n".join(lines) + "\n"


_LATENCY_HELP: Final = {
    "injected": "Latency drawn from the spec per phase (recent window quantiles).",
    "observed": "Latency the server actually waited per phase (recent window quantiles).",
    "lateness": "Observed minus injected latency per event, per phase (recent window "
                "quantiles): how late the server's timers fired.",
}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"
