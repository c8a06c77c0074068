"""Fault rules: what goes wrong, in which phase, and when.

A rule is written as comma-separated ``key=value`` pairs (``--fault``), or as a JSON object with
the same keys (``PATCH /api/config`` ``{"faults": [...]}``)::

    id=r1,phase=rcpt,reply=550,prob=0.1,to=*@fail.test
    {"id": "r1", "phase": "rcpt", "reply": 550, "prob": 0.1, "to": "*@fail.test"}

Keys:

    id      name shown in the reply text ``[fakesmtp rule=ID]`` and in the stats
            (default r1, r2, ... by position): up to 64 ASCII letters, digits, - and _
    phase   connect | ehlo | starttls | auth | mail | rcpt | data | eom | quit   (required;
            starttls and auth only happen with --tls and --auth: phase=auth,reply=535,prob=0.1
            refuses a tenth of the logins)
    action  reply (default) | disconnect (close, no reply) | hang (never answer; the session
            ends when the client gives up) | drop (phase=data: send 354, read part of the
            message, then close without a reply; phase=eom: store the whole message, then close
            before the reply, so the sender cannot know it was delivered and may send it again)
    reply   4xx/5xx code for action=reply (default 451; 421 for rate and conns).
            A 421 closes the connection after the reply, as RFC 5321 says.
    text    reply text (default: the code's standard text): printable ASCII, up to 400
            characters; no commas in the string form
    to      recipient glob(s), ``|``-separated, case-insensitive: ``*@fail.test|bob@*``;
            only for phases rcpt (the address), data and eom (any recipient of the message);
            at most 100 globs of at most 320 characters (the longest address)
    trigger, at most one (none = every matching event); every number must be finite:
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
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fakesmtp import replies
from fakesmtp.latency import PHASES
from fakesmtp.numbers import NumberError, finite, shown
from fakesmtp.replies import Reply

ACTIONS: Final = ("reply", "disconnect", "hang", "drop")
TRIGGERS: Final = ("prob", "every", "first", "rate", "conns")
RECIPIENT_PHASES: Final = ("rcpt", "data", "eom")
KEYS: Final = ("id", "phase", "action", "reply", "text", "to", *TRIGGERS)

# Whatever a rule holds ends up in SMTP replies, Prometheus labels and the per-RCPT match, so
# each part is bounded: a reply line stays one short line, and matching stays cheap.
_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CODE: Final = re.compile(r"[45][0-9][0-9]")
_TEXT: Final = re.compile(r"[\x20-\x7e]{1,400}")  # no CR/LF: one reply line, nothing injected
MAX_GLOBS: Final = 100
MAX_GLOB_CHARS: Final = 320  # local part 64 + @ + domain 255


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
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False,
                                                   compare=False)

    def __post_init__(self) -> None:
        # Compiled once here, not per RCPT: a glob's translation is not cheap (quadratic in
        # the number of "[" in it), and the event loop must not pay for it on every message.
        patterns = tuple(re.compile(fnmatch.translate(p)) for p in self.to)
        object.__setattr__(self, "_patterns", patterns)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], default_id: str = "r1") -> FaultRule:
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise FaultError(f"unknown key {shown(unknown[0])}; keys: {', '.join(KEYS)}",
                             unknown[0])
        rule_id = data.get("id") or default_id
        if not isinstance(rule_id, str) or not _ID.fullmatch(rule_id):
            raise FaultError(f"id {shown(rule_id)} must be 1 to 64 ASCII letters, digits, - or _",
                             "id")
        phase = data.get("phase", "")
        if phase not in PHASES:
            raise FaultError(f"phase {shown(phase)} must be one of {', '.join(PHASES)}", "phase")
        action = data.get("action", "reply")
        if action not in ACTIONS:
            raise FaultError(f"action {shown(action)} must be one of {', '.join(ACTIONS)}",
                             "action")
        if action == "drop" and phase not in ("data", "eom"):
            raise FaultError("action=drop needs phase=data (it cuts the message body) or "
                             "phase=eom (it cuts the reply to a stored message)", "action")

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
            to = _globs(data["to"])
        return cls(rule_id, phase, action, reply, trigger, value, to)

    def matches(self, recipients: Iterable[str]) -> bool:
        """True if the rule has no ``to`` or any recipient matches one of its globs."""
        if not self.to:
            return True
        return any(p.match(r.lower()) for r in recipients for p in self._patterns)

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
        value = finite(raw, trigger)
    except NumberError as err:
        raise FaultError(str(err), trigger) from None
    least = 0 if trigger in ("rate", "conns") else 1
    if trigger == "prob":
        if not 0.0 <= value <= 1.0:
            raise FaultError(f"prob={shown(raw)} must be between 0 and 1", trigger)
    elif value != int(value) or value < least:
        raise FaultError(f"{trigger}={shown(raw)} must be a whole number >= {least}", trigger)
    return value


def _reply(code: Any, text: Any, trigger: str | None) -> Reply:
    if text is not None and text != "" and not (isinstance(text, str) and _TEXT.fullmatch(text)):
        raise FaultError(f"text={shown(text)} must be 1 to 400 printable ASCII characters "
                         "(one reply line)", "text")
    if code is None:
        if text:
            raise FaultError("text= needs reply=CODE", "reply")
        return {
            "rate": replies.S421_RATE_LIMIT,
            "conns": replies.S421_TOO_MANY_CONNECTIONS,
        }.get(trigger or "", replies.S451_LOCAL_ERROR)
    # An int, or the three ASCII digits of one: int() alone would take "5_50" or " 550 ".
    if isinstance(code, bool) or not isinstance(code, (int, str)) or (
        isinstance(code, str) and not _CODE.fullmatch(code)
    ) or (isinstance(code, int) and not 400 <= code <= 599):
        raise FaultError(f"reply={shown(code)} must be a 4xx or 5xx code", "reply")
    return replies.for_code(int(code), text or None)


def _globs(raw: Any) -> tuple[str, ...]:
    """The ``to`` globs, lower-cased; each must translate to a regular expression."""
    if not isinstance(raw, str):
        raise FaultError(f"to={shown(raw)} must be a string of |-separated globs", "to")
    globs = tuple(p.strip().lower() for p in raw.split("|") if p.strip())
    if len(globs) > MAX_GLOBS:
        raise FaultError(f"to= has {len(globs)} globs; at most {MAX_GLOBS}", "to")
    for glob in globs:
        if len(glob) > MAX_GLOB_CHARS:
            raise FaultError(f"to= glob {shown(glob)} is longer than {MAX_GLOB_CHARS} "
                             "characters", "to")
        try:
            re.compile(fnmatch.translate(glob))
        except re.error as err:
            raise FaultError(f"to= glob {shown(glob)} is not usable: {err}", "to") from None
    return globs


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
