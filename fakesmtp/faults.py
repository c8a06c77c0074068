"""Fault rules: what goes wrong, in which phase, and when.

A rule is written as comma-separated ``key=value`` pairs (``--fault``), or as a JSON object with
the same keys (``PATCH /api/config`` ``{"faults": [...]}``)::

    id=r1,phase=rcpt,reply=550,prob=0.1,to=*@fail.test
    {"id": "r1", "phase": "rcpt", "reply": 550, "prob": 0.1, "to": "*@fail.test"}

Keys:

    id      name shown in the reply text ``[fakesmtp rule=ID]`` and in the stats
            (default r1, r2, ... by position)
    phase   connect | ehlo | mail | rcpt | data | eom | quit   (required)
    action  reply (default) | disconnect (close, no reply) | hang (never answer; the session
            ends when the client gives up) | drop (phase=data only: send 354, read part of the
            message, then close without a reply)
    reply   4xx/5xx code for action=reply (default 451; 421 for rate and conns).
            A 421 closes the connection after the reply, as RFC 5321 says.
    text    reply text (default: the code's standard text); no commas in the string form
    to      recipient glob(s), ``|``-separated, case-insensitive: ``*@fail.test|bob@*``;
            only for phases rcpt (the address), data and eom (any recipient of the message)
    trigger, at most one (none = every matching event):
    prob=P    with probability P (0..1), from the seeded RNG
    every=N   the Nth, 2Nth, ... matching event
    first=N   the first N matching events, then succeed
    rate=N    more than N events per second in this phase: the rest get the reply
              (phase=mail rate=50 -> 421 for messages above 50/s)
    conns=N   while more than N connections are open (phase=connect -> 421 at the banner)

Rules are checked in order and the first that fires wins; a later rule does not see (count) an
event an earlier one took. Replacing the rule list resets the counters.
"""

from __future__ import annotations

import fnmatch
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fakesmtp import replies
from fakesmtp.latency import PHASES
from fakesmtp.replies import Reply

ACTIONS: Final = ("reply", "disconnect", "hang", "drop")
TRIGGERS: Final = ("prob", "every", "first", "rate", "conns")
RECIPIENT_PHASES: Final = ("rcpt", "data", "eom")
KEYS: Final = ("id", "phase", "action", "reply", "text", "to", *TRIGGERS)


class FaultError(ValueError):
    """A rule that cannot be used. ``field`` names the offending key (``phase``, ``reply``...)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FaultRule:
    """One validated rule; build it with :func:`parse_fault` or :meth:`from_mapping`."""

    id: str
    phase: str
    action: str = "reply"
    reply: Reply | None = None
    trigger: str | None = None
    value: float = 0.0
    to: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], default_id: str = "r1") -> FaultRule:
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise FaultError(f"unknown key {unknown[0]!r}; keys: {', '.join(KEYS)}", unknown[0])
        rule_id = str(data.get("id") or default_id)
        if not rule_id.replace("-", "").replace("_", "").isalnum():
            raise FaultError(f"id {rule_id!r} must be letters, digits, - or _", "id")
        phase = str(data.get("phase", ""))
        if phase not in PHASES:
            raise FaultError(f"phase {phase!r} must be one of {', '.join(PHASES)}", "phase")
        action = str(data.get("action", "reply"))
        if action not in ACTIONS:
            raise FaultError(f"action {action!r} must be one of {', '.join(ACTIONS)}", "action")
        if action == "drop" and phase != "data":
            raise FaultError("action=drop needs phase=data (it cuts the message body)", "action")

        triggers = [t for t in TRIGGERS if data.get(t) is not None]
        if len(triggers) > 1:
            raise FaultError(f"at most one trigger, got {', '.join(triggers)}", triggers[1])
        trigger = triggers[0] if triggers else None
        value = _trigger_value(trigger, data[trigger]) if trigger else 0.0

        reply = None
        if action == "reply":
            reply = _reply(data.get("reply"), data.get("text"), trigger)
        elif data.get("reply") is not None or data.get("text") is not None:
            raise FaultError(f"reply/text only go with action=reply, not {action}", "reply")

        to: tuple[str, ...] = ()
        if data.get("to"):
            if phase not in RECIPIENT_PHASES:
                raise FaultError(f"to= needs phase {', '.join(RECIPIENT_PHASES)}", "to")
            to = tuple(p.strip().lower() for p in str(data["to"]).split("|") if p.strip())
        return cls(rule_id, phase, action, reply, trigger, value, to)

    def matches(self, recipients: Iterable[str]) -> bool:
        """True if the rule has no ``to`` or any recipient matches one of its globs."""
        if not self.to:
            return True
        return any(fnmatch.fnmatchcase(r.lower(), p) for r in recipients for p in self.to)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "phase": self.phase, "action": self.action}
        if self.reply is not None:
            out["reply"], out["text"] = self.reply.code, self.reply.text
        if self.trigger:
            out[self.trigger] = _number(self.value)
        if self.to:
            out["to"] = "|".join(self.to)
        return out

    def __str__(self) -> str:
        """The rule string form, defaults left out; it parses back to an equal rule (if the
        text has no comma)."""
        data = self.to_json()
        if data["action"] == "reply":
            del data["action"]
        if self.reply is not None and self.reply == replies.for_code(self.reply.code):
            del data["text"]
        return ",".join(f"{k}={v}" for k, v in data.items())


def parse_fault(text: str, default_id: str = "r1") -> FaultRule:
    """Parse ``key=value,key=value`` (see the module docstring) into a :class:`FaultRule`."""
    data: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise FaultError(f"expected key=value, got {part.strip()!r} in {text!r}", key)
        if key in data:
            raise FaultError(f"key {key!r} given twice", key)
        data[key] = value.strip()
    return FaultRule.from_mapping(data, default_id)


def rules_from_json(items: Any) -> tuple[FaultRule, ...]:
    """Validate a JSON list of rule objects; errors name the field as ``faults[i].key``."""
    if not isinstance(items, list):
        raise FaultError("faults must be a list of rule objects", "faults")
    rules = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, str):
                rules.append(parse_fault(item, f"r{i + 1}"))
            elif isinstance(item, Mapping):
                rules.append(FaultRule.from_mapping(item, f"r{i + 1}"))
            else:
                raise FaultError("a rule is an object or a rule string", "")
        except FaultError as err:
            name = f"faults[{i}].{err.field}" if err.field else f"faults[{i}]"
            raise FaultError(str(err), name) from None
    check_unique(rules)
    return tuple(rules)


def check_unique(rules: Sequence[FaultRule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise FaultError(f"rule id {rule.id!r} used twice", "id")
        seen.add(rule.id)


def _trigger_value(trigger: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise FaultError(f"{trigger}={raw!r} is not a number", trigger) from None
    if trigger == "prob":
        if not 0.0 <= value <= 1.0:
            raise FaultError(f"prob={raw} must be between 0 and 1", trigger)
    elif value != int(value) or value < (0 if trigger in ("rate", "conns") else 1):
        raise FaultError(f"{trigger}={raw} must be a whole number >= 1", trigger)
    return value


def _reply(code: Any, text: Any, trigger: str | None) -> Reply:
    if code is None:
        if text:
            raise FaultError("text= needs reply=CODE", "reply")
        return {
            "rate": replies.S421_RATE_LIMIT,
            "conns": replies.S421_TOO_MANY_CONNECTIONS,
        }.get(trigger or "", replies.S451_LOCAL_ERROR)
    try:
        number = int(str(code))
        return replies.for_code(number, str(text) if text else None)
    except ValueError:
        raise FaultError(f"reply={code!r} must be a 4xx or 5xx code", "reply") from None


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value


@dataclass
class _Counter:
    seen: int = 0
    window: deque[float] = field(default_factory=deque)


class FaultSet:
    """The rules plus their counters. Used from the server's event loop thread only."""

    def __init__(self, rules: Sequence[FaultRule] = ()) -> None:
        self.rules = tuple(rules)
        self._by_phase: dict[str, list[tuple[FaultRule, _Counter]]] = {}
        for rule in self.rules:
            self._by_phase.setdefault(rule.phase, []).append((rule, _Counter()))

    def check(
        self,
        phase: str,
        recipients: Sequence[str],
        rng: random.Random,
        open_connections: int,
    ) -> FaultRule | None:
        """The first rule that fires for this event, or None; counts the event."""
        candidates = self._by_phase.get(phase)
        if not candidates:
            return None
        for rule, counter in candidates:
            if rule.to and not rule.matches(recipients):
                continue
            if _fires(rule, counter, rng, open_connections):
                return rule
        return None


def _fires(rule: FaultRule, counter: _Counter, rng: random.Random, open_connections: int) -> bool:
    trigger, n = rule.trigger, rule.value
    if trigger is None:
        return True
    if trigger == "prob":
        return rng.random() < n
    if trigger == "conns":
        return open_connections > n
    if trigger == "rate":
        # Sliding one-second window of the events let through: above N/s the rest are refused,
        # so the accepted rate stays at N/s however hard the client pushes.
        now = time.monotonic()
        window = counter.window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= n:
            return True
        window.append(now)
        return False
    counter.seen += 1
    if trigger == "every":
        return counter.seen % n == 0
    return counter.seen <= n  # first
