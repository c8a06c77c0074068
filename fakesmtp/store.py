"""Captured messages: a bounded in-memory store, indexed by recipient, with long-poll waits.

The store belongs to the server's event loop: call its methods from that loop only
(``FakeSMTP`` hops threads for you). Bodies are parsed lazily, on first read, so ingest
costs no more than keeping the bytes; a parse happens once per message, whatever its outcome
(see :mod:`fakesmtp.parse`: it is bounded and never raises). On the event loop, call
:func:`parse_off_loop` before reading the parsed fields of messages, so that big messages,
or many, are parsed in a worker thread rather than holding up every session.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fakesmtp.parse import CHEAP_PARSE_BYTES, Content, parse_content

DEFAULT_CAPACITY: Final = 100_000
_ANY: Final = ""  # waiter key for "any recipient"


@dataclass(frozen=True, eq=False)
class Message:
    """One accepted message. ``received_at`` is epoch seconds when the final dot was accepted."""

    id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    received_at: float
    peer: str = ""
    _content: Content | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def content(self) -> Content:
        """The parsed message, parsed on first use and kept. Safe from any thread: two
        threads may both parse it, and both get equal results."""
        # Not a cached_property: in Python 3.11 its lock is shared by every instance, so the
        # event loop would wait for a worker thread parsing some other, big message.
        content = self._content
        if content is None:
            content = parse_content(self.raw)
            object.__setattr__(self, "_content", content)
        return content

    @property
    def parsed(self) -> bool:
        """True once :attr:`content` has been computed: reading it is then free."""
        return self._content is not None

    @property
    def subject(self) -> str:
        return self.content.subject

    @property
    def text(self) -> str | None:
        return self.content.text

    @property
    def html(self) -> str | None:
        return self.content.html

    @property
    def links(self) -> tuple[str, ...]:
        return self.content.links

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.content.headers

    def header(self, name: str) -> str | None:
        return self.content.header(name)

    @property
    def parse_error(self) -> str | None:
        return self.content.parse_error

    def to_json(self) -> dict[str, Any]:
        """The API form; ``headers`` is a list of ``[name, value]`` pairs, in message order;
        ``parse_error`` is null, or why parsing stopped early (the other parsed fields then
        hold what was read before that point)."""
        c = self.content
        return {
            "id": self.id,
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "received_at": self.received_at,
            "size": self.size,
            "subject": c.subject,
            "headers": [list(h) for h in c.headers],
            "text": c.text,
            "html": c.html,
            "links": list(c.links),
            "parse_error": c.parse_error,
            "peer": self.peer,
        }


async def parse_off_loop(messages: Iterable[Message]) -> None:
    """Call it on the event loop before reading the parsed fields of ``messages``. If those
    not parsed yet come to more than CHEAP_PARSE_BYTES, they are parsed in a worker thread
    (a crafted message costs up to ~10 ms per KB, and a listing can hold 10,000 messages);
    a few small ones are left to parse inline when read, cheaper than the thread hop."""
    unparsed = [m for m in messages if not m.parsed]
    if sum(len(m.raw) for m in unparsed) > CHEAP_PARSE_BYTES:
        await asyncio.get_running_loop().run_in_executor(None, _parse_all, unparsed)


def _parse_all(messages: Sequence[Message]) -> None:
    for msg in messages:
        msg.content  # noqa: B018 -- parses and keeps the result


class MessageStore:
    """At most ``capacity`` messages; adding one more evicts the oldest (counted in ``evicted``)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.evicted = 0
        self._ids = itertools.count(1)
        self._messages: OrderedDict[str, Message] = OrderedDict()
        self._by_rcpt: dict[str, deque[Message]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def waiting(self) -> int:
        """Long-polls waiting right now."""
        return sum(len(futs) for futs in self._waiters.values())

    def add(
        self, mail_from: str, rcpt_tos: Sequence[str], raw: bytes, received_at: float, peer: str
    ) -> Message:
        msg = Message(f"m{next(self._ids)}", mail_from, tuple(rcpt_tos), raw, received_at, peer)
        self._messages[msg.id] = msg
        keys = dict.fromkeys(r.lower() for r in msg.rcpt_tos)
        for key in keys:
            self._by_rcpt.setdefault(key, deque()).append(msg)
        if len(self._messages) > self.capacity:
            self._evict_oldest()
        for key in (*keys, _ANY):
            for fut in self._waiters.pop(key, ()):
                if not fut.done():
                    fut.set_result(None)
        return msg

    def recipients(self) -> dict[str, tuple[int, float]]:
        """Per recipient (lower-cased): how many of the kept messages were for it, and when
        the first of them arrived (epoch s)."""
        return {rcpt: (len(kept), kept[0].received_at)
                for rcpt, kept in self._by_rcpt.items() if kept}

    def get(self, message_id: str) -> Message | None:
        return self._messages.get(message_id)

    def query(
        self, to: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[Message]:
        """Newest first: messages for ``to`` (any recipient if None) received after ``since``."""
        source = self._by_rcpt.get(to.lower(), ()) if to else self._messages.values()
        out: list[Message] = []
        for msg in reversed(source):
            # Insertion order is arrival order, so everything further back is older still.
            if since is not None and msg.received_at <= since:
                break
            out.append(msg)
            if len(out) >= limit:
                break
        return out

    async def wait(
        self, to: str | None, since: float | None, timeout: float, limit: int = 100
    ) -> list[Message]:
        """Like :meth:`query`, but if nothing matches, wait up to ``timeout`` seconds for a
        match. Woken by :meth:`add` (no polling); returns [] at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self.query(to, since, limit)
            remaining = deadline - loop.time()
            if found or remaining <= 0 or self._closed:
                return found
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(to.lower() if to else _ANY, set())
            waiters.add(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                return []
            finally:
                waiters.discard(fut)

    def clear(self) -> int:
        """Forget every message (not the eviction count); returns how many there were."""
        count = len(self._messages)
        self._messages.clear()
        self._by_rcpt.clear()
        return count

    def wake_all(self) -> None:
        """Answer every waiter now and stop waiting from here on (used at shutdown, so no
        long-poll holds the server up)."""
        self._closed = True
        waiters, self._waiters = self._waiters, {}
        for futs in waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    def _evict_oldest(self) -> None:
        _, oldest = self._messages.popitem(last=False)
        self.evicted += 1
        for key in dict.fromkeys(r.lower() for r in oldest.rcpt_tos):
            bucket = self._by_rcpt.get(key)
            if bucket and bucket[0] is oldest:
                bucket.popleft()
                if not bucket:
                    del self._by_rcpt[key]
