"""Can response time tell whether an account exists? Measured, per endpoint.

The flow answers a known and an unknown address with the same body, but a body is only half
of it: if a known address makes the server do more work (hash, write, send), an attacker
times the answers instead. This probe signs up a set of addresses, then sends /register and
/resend for known and unknown addresses in a seeded random order, one at a time over one
kept-alive connection, and compares the two samples with a two-sided Mann-Whitney U test.

Every address is used once per endpoint, so the per-address email cap (which would make a
repeated address cheaper once it is spent) never applies, and neither does /resend's cooldown:
the known ones have had three emails each (of five), the unknown ones are new each time.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadtests.results import EnumerationCheck
from loadtests.stats import median

PASSWORD = "maillab timing probe"
ALPHA = 0.01


class ProbeError(RuntimeError):
    """The app did not answer as the contract says; the message says what it answered."""


@dataclass
class _Client:
    connection: http.client.HTTPConnection
    prefix: str  # the app's path under the URL's host, "" at the root

    @classmethod
    def to(cls, url: str) -> _Client:
        parts = urlsplit(url)
        return cls(http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                              timeout=60), parts.path.rstrip("/"))

    def post(self, path: str, body: dict[str, str]) -> tuple[int, float]:
        """The status and the milliseconds from sending the request to reading the body."""
        payload = json.dumps(body).encode()
        started = time.perf_counter()
        self.connection.request("POST", self.prefix + path, body=payload, headers={
            "Content-Type": "application/json", "Accept": "application/json"})
        response = self.connection.getresponse()
        response.read()
        return response.status, (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.connection.close()


def _address(tag: str) -> str:
    return f"probe-{tag}-{uuid.uuid4().hex[:16]}@maillab.test"


def probe(url: str, variant: str, samples: int = 200, seed: int = 1,
          on_progress: Callable[[str], None] | None = None) -> list[EnumerationCheck]:
    """Measure /register and /resend at ``url``: ``samples`` known and ``samples`` unknown
    addresses each. Raises :class:`ProbeError` if an answer is not the contract's 202."""
    say = on_progress or (lambda _text: None)
    client = _Client.to(url)
    rng = random.Random(seed)
    try:
        checks = []
        # One set of accounts serves both endpoints: each address then gets three emails
        # (sign-up, /register again, /resend), inside the per-address cap, and /resend's
        # cooldown has not started for any of them.
        known = [_address("known") for _ in range(samples)]
        say(f"{variant}: signing up {samples} addresses")
        for address in known:
            _expect(client.post("/register", {"email": address, "password": PASSWORD}),
                    "/register")
        for endpoint in ("/register", "/resend"):
            unknown = [_address("unknown") for _ in range(samples)]
            order = [(True, a) for a in known] + [(False, a) for a in unknown]
            rng.shuffle(order)
            times: dict[bool, list[float]] = {True: [], False: []}
            say(f"{variant}: timing {endpoint}, {samples} known and {samples} unknown")
            for is_known, address in order:
                status, ms = client.post(endpoint, {"email": address, "password": PASSWORD})
                _expect((status, ms), endpoint)
                times[is_known].append(ms)
            checks.append(_compare(variant, endpoint, times[True], times[False]))
        return checks
    finally:
        client.close()


def _expect(answer: tuple[int, float], endpoint: str) -> None:
    if answer[0] != 202:
        raise ProbeError(f"{endpoint} answered {answer[0]}, not 202; the probe needs the "
                         "contract's answer for every address")


def _compare(variant: str, endpoint: str, known: list[float],
             unknown: list[float]) -> EnumerationCheck:
    from scipy.stats import mannwhitneyu

    p_value = float(mannwhitneyu(known, unknown, alternative="two-sided").pvalue)
    known_p50, unknown_p50 = median(known) or 0.0, median(unknown) or 0.0
    return EnumerationCheck(
        variant=variant, endpoint=endpoint, samples=[len(known), len(unknown)],
        known_p50_ms=round(known_p50, 3), unknown_p50_ms=round(unknown_p50, 3),
        gap_ms=round(known_p50 - unknown_p50, 3), p_value=p_value,
        distinguishable=p_value < ALPHA)
