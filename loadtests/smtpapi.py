"""fakesmtp's HTTP API as the lab's runners use it: one call, and the capture of a window.

``maillab bench`` reads a cell's capture here when the cell ends, and the Lab tab of locust's
web UI (loadtests/lab.py) reads the same capture every few seconds while a test runs, so both
count an email as delivered, refused or missing from one reading of fakesmtp.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from loadtests.results import PhaseLatency, SmtpFaults
from loadtests.summary import Capture


class SmtpApi:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer; an ``OSError`` naming the call when fakesmtp does not answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise OSError(f"fakesmtp's API at {self.url} answered {method} {path} with "
                          f"{exc.code}: {detail}") from None
        except urllib.error.URLError as exc:  # an OSError: callers that can go on catch it
            raise OSError(f"fakesmtp's API at {self.url} did not answer {method} {path}: "
                          f"{exc.reason}") from None

    def capture(self, drain: str | None = None) -> Capture:
        """fakesmtp's capture per address (how many, and when the first arrived), what each
        address met, and the fault counters since its last reset."""
        stats = self.call("GET", "/api/stats")
        faulted = self.call("GET", "/api/faults")
        # Counted per recipient by fakesmtp itself: every kept message, with no page limit.
        kept = self.call("GET", "/api/recipients")
        counts = Counter({address: r["count"] for address, r in kept["recipients"].items()})
        first_at = {address: r["first_at"] for address, r in kept["recipients"].items()}
        by_rule = stats["rejected"]["by_rule"]
        injected = sum(by_rule.values())
        attempts = stats["connections"]["total"]
        latency = {phase: PhaseLatency(
            count=late["count"], injected_p99_ms=late["injected_p99_ms"],
            lateness_p50_ms=late["lateness_p50_ms"], lateness_p99_ms=late["lateness_p99_ms"],
            bound_ms=late["lateness_bound_ms"]) for phase, late in stats["latency"].items()
            if late["count"]}
        smtp = SmtpFaults(attempts=attempts, received=stats["received"], injected=injected,
                          injected_share=round(injected / attempts, 4) if attempts else None,
                          by_rule=by_rule, latency=latency)
        return Capture(counts, truncated=stats["received"] > kept["kept"]
                       or faulted["truncated"], drain=drain, first_at=first_at,
                       faulted=faulted["recipients"], smtp=smtp,
                       open_connections=stats["connections"]["open"])
