"""A plain aiosmtpd sink for tests: captures mail, can delay, can answer with scripted replies."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any

from aiosmtpd.controller import Controller

LINK = re.compile(r"https?://[^\s\"'<>]+")


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    text: str
    headers: dict[str, str]
    received_at: float

    @property
    def links(self) -> list[str]:
        return LINK.findall(self.text)


@dataclass
class SinkHandler:
    """DATA is answered with the next scripted reply if any, else ``always`` if set, else 250.

    ``hang`` holds every DATA for an hour; ``hold`` holds it until that event is set (from
    the test's thread), for a state that must last exactly as long as the test needs it.
    """

    delay: float = 0.0
    replies: deque[str] = field(default_factory=deque)
    always: str | None = None
    hang: bool = False
    hold: threading.Event | None = None
    messages: list[Captured] = field(default_factory=list)
    data_attempts: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_attempts += 1
        if self.hang:
            await asyncio.sleep(3600)
        # Polled: the event is set from another thread, and a poll stays cancellable at stop.
        while self.hold is not None and not self.hold.is_set():
            await asyncio.sleep(0.01)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.replies:
            return self.replies.popleft()
        if self.always:
            return self.always
        msg = message_from_bytes(envelope.content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        captured = Captured(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            subject=str(msg["Subject"]),
            text=body.get_content() if body is not None else "",
            headers={k: str(v) for k, v in msg.items()},
            received_at=time.time(),
        )
        with self.cond:
            self.messages.append(captured)
            self.cond.notify_all()
        return "250 OK"

    def wait_for(self, to: str, timeout: float = 10.0, count: int = 1) -> list[Captured]:
        """The messages for ``to`` once ``count`` have arrived; fails the test at the deadline."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.messages if to in m.rcpt_tos]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no email for {to} within {timeout} s "
                                         f"({len(self.messages)} captured for others)")
                self.cond.wait(left)

    def for_address(self, to: str) -> list[Captured]:
        with self.cond:
            return [m for m in self.messages if to in m.rcpt_tos]


class Sink:
    def __init__(self, handler: SinkHandler, port: int) -> None:
        self.handler = handler
        self.port = port
        self.controller = Controller(handler, hostname="127.0.0.1", port=port,
                                     server_hostname="sink.maillab.test")

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
