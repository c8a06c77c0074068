"""The state one fakesmtp server shares between its SMTP sessions and its HTTP API.

Everything here runs on the server's event loop thread; nothing locks. ``Config`` is
immutable, so swapping ``engine.config`` is the whole of a configuration change, and sessions
already inside a phase finish with the spec they started with.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from typing import Any, Protocol

from fakesmtp.config import Config
from fakesmtp.faults import FaultRule, FaultSet
from fakesmtp.latency import LatencySpec
from fakesmtp.ledger import Ledger
from fakesmtp.stats import Stats
from fakesmtp.store import MessageStore


class OpenSession(Protocol):
    """What the engine keeps of an open SMTP session: its transport, so that stopping the
    server can close it. A protocol rather than the session class, so this module does not
    import :mod:`fakesmtp.smtp`, which imports it."""

    @property
    def transport(self) -> asyncio.BaseTransport | None: ...


class Engine:
    def __init__(self, config: Config, store: MessageStore) -> None:
        self.initial = config
        self.config = config
        self.store = store
        self.stats = Stats()
        self.ledger = Ledger()  # every SMTP transaction, for tests (fakesmtp/ledger.py)
        self.faults = FaultSet(config.faults)
        self.sessions: set[OpenSession] = set()  # added and removed by the sessions themselves
        self._session_ids = itertools.count()

    # -- configuration ------------------------------------------------------------------------

    def patch(self, patch: Any) -> Config:
        """Merge a JSON patch (see :mod:`fakesmtp.config`); raises ConfigError, changing nothing."""
        new = self.config.patched(patch)
        if "faults" in patch:
            self.faults = FaultSet(new.faults)
        if new.seed != self.config.seed:
            self._session_ids = itertools.count()
        self.config = new
        return new

    def reset(self) -> None:
        """Messages, stats, counters and config back to how the server started."""
        self.store.clear()
        self.store.evicted = 0
        self.stats.reset()
        self.ledger.clear()
        self.config = self.initial
        self.faults = FaultSet(self.initial.faults)
        self._session_ids = itertools.count()

    # -- what sessions call -------------------------------------------------------------------

    def next_session_no(self) -> int:
        """Numbers SMTP sessions in the order they connect."""
        return next(self._session_ids)

    def session_rng(self, session_no: int) -> random.Random:
        """The RNG of one SMTP session, seeded from (seed, session number): a session's draws
        do not depend on how other sessions interleave with it, so a seeded run repeats."""
        return random.Random(f"{self.config.seed}/{session_no}")

    async def delay(self, phase: str, spec: LatencySpec, rng: random.Random) -> None:
        """Sleep for one draw of ``spec`` without blocking other sessions; record both the
        draw and the time actually slept. Timed with ``perf_counter``, not ``loop.time()``:
        uvloop's loop clock counts whole milliseconds."""
        target = spec.sample(rng)
        started = time.perf_counter()
        await asyncio.sleep(target)
        self.stats.record_latency(phase, target, time.perf_counter() - started)

    def fault(self, phase: str, rng: random.Random, recipients: Sequence[str]) -> FaultRule | None:
        """The rule that fires for this event (counted in the stats), or None."""
        if not self.faults.rules:
            return None
        rule = self.faults.check(phase, recipients, rng, self.stats.connections_open)
        if rule is not None:
            self.stats.fault_hits[rule.id] += 1
            if rule.action != "reply":
                self.stats.actions[rule.action] += 1
            outcome = str(rule.reply.code) if rule.reply is not None else rule.action
            self.stats.record_fault(recipients, outcome)
        return rule

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot(len(self.store), self.store.evicted, self.store.waiting)

    def prometheus(self) -> str:
        return self.stats.prometheus(len(self.store), self.store.evicted)
