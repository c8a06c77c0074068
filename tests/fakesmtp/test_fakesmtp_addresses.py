"""fakesmtp reads plain ``<local@domain>`` addresses with a regular expression instead of
aiosmtpd's RFC 5322 parser (fakesmtp/smtp.py, ``FaultySMTP._getaddr``): both must give the
same answer for every argument, the fast path's own and the ones it leaves to aiosmtpd."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fakesmtp.config import Config
from fakesmtp.engine import Engine
from fakesmtp.smtp import _PLAIN_ADDRESS, FakeHandler, FaultySMTP
from fakesmtp.store import MessageStore


@pytest.fixture(scope="module")
def session() -> Iterator[FaultySMTP]:
    loop = asyncio.new_event_loop()
    engine = Engine(Config.build(), MessageStore(10))
    try:
        yield FaultySMTP(FakeHandler(engine), engine, hostname="fakesmtp.localhost", loop=loop)
    finally:
        loop.close()


# Pieces that make plain addresses, and the characters that send one to aiosmtpd's parser.
_PIECES = st.sampled_from([
    "a", "Z", "0", "bob", "x-y", "o'neil", "+tag", "_", "~", "=", ".", "@", "<", ">", " ",
    '"', "(", ")", "[", "]", "\\", ",", ":", ";", "é", "\t", "SIZE=10", "BODY=8BITMIME",
    "example", "test", "-", "127.0.0.1",
])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
@example("<alice@example.test>")
@example("<alice@example.test> SIZE=1000 BODY=8BITMIME")
@example("<a.b.c@d.e.f>")
@example("<a..b@c>")
@example("<.a@b>")
@example("<a@b.>")
@example("<a@-b>")
@example("<>")
@example("alice@example.test")
@example('<"quoted local"@example.test>')
@example("<a@[127.0.0.1]>")
@example("<(comment)a@b>")
@example("<a@b>trailing")
@example("<")
@example("<a@b")
@example("a@[")
def test_the_fast_path_agrees_with_aiosmtpd(session: FaultySMTP, arg: str) -> None:
    assert session._getaddr(arg) == _aiosmtpd(session, arg)


def _aiosmtpd(session: FaultySMTP, arg: str) -> tuple[str | None, str | None]:
    """aiosmtpd's answer, with the errors its parser raises on an address cut short (``<``,
    ``a@[``) read as the malformed address fakesmtp answers instead."""
    try:
        return SMTP._getaddr(session, arg)
    except (IndexError, AttributeError):
        return None, None


def test_the_fast_path_takes_the_common_addresses() -> None:
    for arg in ("<alice@example.test>", "<user123+tag@bench.test> SIZE=10",
                "<o'neil.x-y@a-b.example>"):
        assert _PLAIN_ADDRESS.match(arg), arg


def test_a_local_part_over_the_limit_is_refused_on_the_fast_path(
        session: FaultySMTP, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosmtpd's ``local_part_limit`` (a class attribute, 0: none) holds on the fast path."""
    monkeypatch.setattr(session, "local_part_limit", 64)
    for local in ("x" * 64, "x" * 65):
        arg = f"<{local}@example.test>"
        assert session._getaddr(arg) == _aiosmtpd(session, arg)
    assert session._getaddr(f"<{'x' * 65}@example.test>") == (None, None)
