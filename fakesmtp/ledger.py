"""Every SMTP transaction fakesmtp saw, for a test to read (``GET /api/attempts``).

A transaction starts at MAIL FROM and ends when its message is stored, refused, or the
connection goes. Each keeps when each phase was entered, the fault it met (the rule's id, the
phase and what it did), how it ended and the stored message's Message-ID, so a retry of the
same email shows as a second transaction with the same Message-ID.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

KEPT = 10_000  # transactions kept; the oldest go first
HEAD_BYTES = 16_384  # where a Message-ID is looked for: the start of the header


def message_id(raw: bytes) -> str | None:
    """The Message-ID header of a raw message, read from its first bytes only: the full
    parse is kept off the event loop (fakesmtp/store.py), and this runs on it for every
    stored message. A folded header's continuation lines are joined."""
    head = raw[:HEAD_BYTES].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    for index, line in enumerate(lines):
        if line[:11].lower() == b"message-id:":
            value = line[11:]
            for more in lines[index + 1:]:
                if not more[:1].isspace() or not more:
                    break
                value += b" " + more.strip()
            text = value.decode("utf-8", "replace").strip()
            return text or None
    return None


@dataclass
class Attempt:
    session: int
    started_at: float
    mail_from: str = ""
    rcpt_tos: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # address -> the reply it got
    phases: dict[str, float] = field(default_factory=dict)  # phase -> s after the start
    fault: str | None = None  # "id at phase: reply 451" / "id at eom: hang"
    outcome: str | None = None  # stored, stored then cut, refused, cut, abandoned
    message_id: str | None = None
    ended_at: float | None = None

    def enter(self, phase: str) -> None:
        self.phases.setdefault(phase, round(time.time() - self.started_at, 4))

    def end(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.ended_at = time.time()

    def concerns(self, address: str) -> bool:
        folded = address.lower()
        return any(a.lower() == folded for a in (*self.rcpt_tos, *self.refused))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    def __init__(self) -> None:
        self.attempts: deque[Attempt] = deque(maxlen=KEPT)

    def start(self, session: int) -> Attempt:
        attempt = Attempt(session, time.time())
        self.attempts.append(attempt)
        return attempt

    def query(self, to: str | None = None) -> list[dict[str, Any]]:
        return [a.to_json() for a in self.attempts if to is None or a.concerns(to)]

    def clear(self) -> None:
        self.attempts.clear()
