"""The SMTP side: aiosmtpd's ``SMTP`` protocol, slowed down and broken on purpose.

Handler hooks (``handle_MAIL``, ``handle_RCPT``, ``handle_DATA``, ``handle_QUIT``) carry the
``mail``, ``rcpt``, ``eom`` and ``quit`` phases. The banner (``connect``) and the 354 (``data``)
are sent before any hook runs, so :class:`FaultySMTP` overrides ``_handle_client`` and
``smtp_DATA`` for them (and ``smtp_EHLO``/``smtp_HELO`` for ``ehlo``, see there).
Each phase does the same two things, in order: sleep for the phase's latency (only
``asyncio.sleep``: one slow session never holds up another), then ask the fault rules whether
to answer with something else.

Bad input is aiosmtpd's business and it answers per RFC 5321 (500 for garbage or an over-long
line, 552 for too much data); :meth:`FaultySMTP.push` counts every 4xx/5xx sent, whoever chose it.
Two gaps in aiosmtpd are closed here: it passes on addresses that are not valid UTF-8 (or hold
a NUL), which would then break every page that shows them (see :func:`address_refusal`), and
a ``SIZE=`` value such as ``²`` crashes its MAIL command (see :meth:`FaultySMTP.smtp_MAIL`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
import time
from collections.abc import Sequence
from typing import Any, AnyStr, NoReturn

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from fakesmtp import replies
from fakesmtp.engine import Engine
from fakesmtp.ledger import Attempt, message_id
from fakesmtp.tls import Credentials

DEFAULT_DATA_SIZE_LIMIT = 10 * 1024 * 1024
DEFAULT_SERVER_HOSTNAME = "fakesmtp.localhost"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An address in the dot-atom form nearly all mail uses, in angle brackets: it parses to itself.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"<((?:{_ATOM}\.)*{_ATOM}@(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+)>")


def address_refusal(address: str, smtputf8: bool) -> str | None:
    """The reply refusing a MAIL FROM or RCPT TO address, or None to accept it. aiosmtpd
    checks only the syntax, and decodes arguments as UTF-8 with surrogateescape, so bytes that
    are not UTF-8 arrive as lone surrogates, which no JSON or HTML encoder takes; refused too:
    control characters, and non-ASCII without SMTPUTF8 on MAIL FROM (RFC 6531 3.4)."""
    if _CONTROL.search(address):
        return replies.S553_CONTROL_CHARACTER.line()
    if address.isascii():
        return None
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return replies.S553_NOT_UTF8.line()
    return None if smtputf8 else replies.S553_NEEDS_SMTPUTF8.line()


def _int_refuses_size(word: str) -> bool:
    """True for a ``SIZE=`` parameter that aiosmtpd's ``str.isdigit()`` check passes but its
    ``int()`` raises on (superscript and other non-decimal digits), read as aiosmtpd reads it."""
    key, eq, value = word.upper().partition("=")
    return key == "SIZE" and bool(eq) and value.isdigit() and not value.isdecimal()


class FaultySMTP(SMTP):
    """One SMTP session. ``enter(phase)`` is the single place latency and faults are applied."""

    def __init__(self, handler: FakeHandler, engine: Engine, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.engine = engine
        self._session_no = engine.next_session_no()
        self._rng: random.Random | None = None
        self._close_after_reply = False
        self._reading_body = False
        self._drop_after_store = False  # an eom drop: store the message, then cut the reply
        self._fault_closed = False
        self._counted = False
        self.attempt: Attempt | None = None  # the transaction under way (fakesmtp/ledger.py)

    @property
    def rng(self) -> random.Random:
        """This session's RNG, made on first use (most sessions never draw)."""
        if self._rng is None:
            self._rng = self.engine.session_rng(self._session_no)
        return self._rng

    # -- connection bookkeeping ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._counted:
            self._counted = True
            stats = self.engine.stats
            stats.connections_open += 1
            stats.connections_total += 1
            self.engine.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        if self.attempt is not None:  # the connection went before the transaction ended
            self.attempt.end("cut")
        if self._counted:
            self._counted = False
            self.engine.stats.connections_open -= 1
            self.engine.sessions.discard(self)
        super().connection_lost(error)

    # -- phases -------------------------------------------------------------------------------

    async def enter(self, phase: str, recipients: Sequence[str] = ()) -> str | None:
        """Apply ``phase``'s latency, then its fault rules. Returns the reply line to send
        instead of the normal one, or None to carry on. Disconnect, hang and drop never
        return: the session ends when the connection goes (which cancels this task)."""
        engine = self.engine
        if phase == "eom":
            self._reading_body = False  # the final dot is in: a disconnect now is no abort
        spec = engine.config.latency.get(phase)
        if spec is not None:
            await engine.delay(phase, spec, self.rng)
        if self.attempt is not None:
            self.attempt.enter(phase)
        if not engine.faults.rules:
            return None
        rule = engine.fault(phase, self.rng, recipients)
        if rule is None:
            return None
        if self.attempt is not None and self.attempt.fault is None:
            self.attempt.fault = f"{rule.id} at {phase}: " + (
                f"reply {rule.reply.code}" if rule.reply is not None else rule.action)
        if rule.reply is not None:
            # An error instead of the banner ends the session too (we do not wait for QUIT).
            self._close_after_reply = rule.reply.closes or phase == "connect"
            return rule.reply.tagged(rule.id)
        if rule.action == "drop" and phase == "eom":
            self._drop_after_store = True  # handle_DATA stores it, then cuts
            return None
        if rule.action == "drop":
            await self.push(replies.S354_START_DATA.line())
            # Take some of the body so the cut lands mid-message, then cut.
            with contextlib.suppress(asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                await self._reader.readuntil(b"\r\n")
        if rule.action in ("disconnect", "drop"):
            self._close()
        await self._forever()

    def eof_received(self) -> bool:
        """The client is done sending: aiosmtpd cancels the session's task here but keeps
        the transport half-open (its stream reader's answer), and closes it only when the
        cancellation lands in its command loop. One that lands before (in the banner delay,
        or before the task first ran) left the connection open for good on uvloop, which
        reports no write error to a client that has gone. Nothing more is written once the
        task is cancelled, so the transport closes now."""
        super().eof_received()
        return False

    async def _answered(self, phase: str) -> bool:
        """Enter ``phase`` before aiosmtpd handles its command; True when a fault rule's
        reply was sent instead, which ends the command."""
        status = await self.enter(phase)
        if status is None:
            return False
        await self.push(status)
        return True

    async def _handle_client(self) -> None:
        try:
            status = await self.enter("connect")
        except asyncio.CancelledError:
            self._writer.close()  # the client left during the banner delay
            raise
        if status is not None:
            await self.push(status)
            return
        await super()._handle_client()

    # EHLO/HELO are overridden rather than hooked: aiosmtpd inspects a handle_EHLO hook's
    # signature on every new connection, which costs more than the whole override.
    # Overrides repeat aiosmtpd's @syntax, which is what HELP lists.
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if hostname and await self._answered("ehlo"):  # no hostname: aiosmtpd answers 501
            return
        await super().smtp_EHLO(hostname)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        if hostname and await self._answered("ehlo"):
            return
        await super().smtp_HELO(hostname)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address and the rest of a MAIL FROM or RCPT TO argument, as aiosmtpd's own
        ``_getaddr`` returns them. aiosmtpd parses every address with the email package's
        RFC 5322 header parser, which a profile at 1000 concurrent sessions put at a fifth of
        the event loop's time (and its timers late). A plain ``<local@domain>`` takes this
        regular expression instead; anything else (quoted or commented addresses, ``<>``,
        address literals, no brackets) still goes to aiosmtpd, whose parser raises on some
        addresses cut short (a traceback and "500 Error: (IndexError)"): those are answered
        as malformed. ``_getaddr`` is private to aiosmtpd, hence the upper bound on it in
        pyproject.toml; tests/fakesmtp/test_fakesmtp_addresses.py checks both agree."""
        match = _PLAIN_ADDRESS.match(arg)
        rest = arg[match.end():] if match else ""
        if rest[:1] in (" ", "\t"):
            rest = rest.lstrip()  # as the email parser takes the whitespace after the ">"
        if match is None or rest.startswith("("):  # a comment: the parser takes it too
            try:
                return super()._getaddr(arg)
            except (IndexError, AttributeError):  # the email parser on "<", "a@[": no traceback
                return None, None
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        handshake = not arg and self.tls_context and not self._tls_protocol
        if handshake and await self._answered("starttls"):
            return
        await super().smtp_STARTTLS(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self._auth_attempt(arg) and await self._answered("auth"):
            return
        await super().smtp_AUTH(arg)

    def _auth_attempt(self, arg: str | None) -> bool:
        """Whether aiosmtpd will run this AUTH's exchange (rather than refuse the command),
        so the ``auth`` phase's latency and faults meet only real login attempts."""
        mechanism = arg.split()[0].upper() if arg else ""
        session = self.session
        return bool(session is not None and session.extended_smtp and not session.authenticated
                    and mechanism in self._auth_methods
                    and (self._tls_protocol or not self._auth_require_tls))

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        if arg is not None and any(_int_refuses_size(w) for w in arg.split()):
            # Spelled so that aiosmtpd refuses it, with its own reply at its own point in the
            # checks: a 501 instead of a ValueError, a traceback and a "500 Error".
            arg = " ".join("SIZE=x" if _int_refuses_size(w) else w for w in arg.split())
        await super().smtp_MAIL(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        assert self.envelope is not None
        if self.envelope.rcpt_tos and not arg:  # otherwise aiosmtpd answers 501/503
            status = await self.enter("data", self.envelope.rcpt_tos)
            if status is not None:
                await self.push(status)
                return
            self._reading_body = True
        try:
            await super().smtp_DATA(arg)
        except asyncio.CancelledError:
            if self._reading_body and not self._fault_closed:
                self.engine.stats.aborted_sessions += 1  # the client vanished mid-message
            raise
        finally:
            self._reading_body = False

    async def push(self, status: AnyStr) -> None:
        code = replies.code_of(status)
        if code is not None and code >= 400:
            self.engine.stats.record_reply(code)
        await super().push(status)
        if self._close_after_reply:
            self._close()

    def _close(self) -> None:
        self._fault_closed = True
        self._close_after_reply = False
        if self.transport is not None:
            self.transport.close()

    @staticmethod
    async def _forever() -> NoReturn:
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: the future above is never resolved")


class FakeHandler:
    """aiosmtpd handler hooks. A hook that takes over a command must do what aiosmtpd's
    default would (set ``mail_from``, append the recipient) and return the reply."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def handle_MAIL(
        self, server: FaultySMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        refused = address_refusal(address, envelope.smtp_utf8)
        if refused is not None:  # a protocol error: answered before the phase's latency
            return refused
        if server.attempt is not None:  # a new MAIL on the same connection
            server.attempt.end("abandoned")
        server.attempt = self.engine.ledger.start(server._session_no)
        server.attempt.mail_from = address
        status = await server.enter("mail")
        if status is not None:
            server.attempt.end("refused")
            server.attempt = None
            return status
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.S250_OK.line()

    async def handle_RCPT(
        self, server: FaultySMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        refused = address_refusal(address, envelope.smtp_utf8)
        if refused is not None:
            return refused
        status = await server.enter("rcpt", (address,))
        if status is not None:
            if server.attempt is not None:
                server.attempt.refused[address] = status
            return status
        if server.attempt is not None:
            server.attempt.rcpt_tos.append(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.S250_OK.line()

    async def handle_DATA(self, server: FaultySMTP, session: Session, envelope: Envelope) -> str:
        status = await server.enter("eom", envelope.rcpt_tos)
        attempt, server.attempt = server.attempt, None
        if status is not None:
            if attempt is not None:
                attempt.end("refused")
            return status
        raw = envelope.original_content or b""
        peer = session.peer
        msg = self.engine.store.add(
            envelope.mail_from or "",
            envelope.rcpt_tos,
            bytes(raw),
            time.time(),
            f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or ""),
        )
        self.engine.stats.received += 1
        if attempt is not None:
            attempt.message_id = message_id(bytes(raw))
            attempt.end("stored, then cut" if server._drop_after_store else "stored")
        if server._drop_after_store:
            # Delivered, but the client never hears so: the connection goes before the 250.
            server._drop_after_store = False
            server._close()
            await server._forever()
        return replies.queued(msg.id)

    async def handle_QUIT(self, server: FaultySMTP, session: Session, envelope: Envelope) -> str:
        status = await server.enter("quit")
        return status if status is not None else replies.S221_BYE.line()


def protocol_factory(
    engine: Engine,
    *,
    server_hostname: str = DEFAULT_SERVER_HOSTNAME,
    data_size_limit: int = DEFAULT_DATA_SIZE_LIMIT,
    timeout: float = 300.0,
    loop: asyncio.AbstractEventLoop | None = None,
    tls: ssl.SSLContext | None = None,
    credentials: Credentials | None = None,
) -> Any:
    """A zero-argument callable for ``loop.create_server`` (like aiosmtpd's
    ``Controller.factory``). ``server_hostname`` is always passed, so aiosmtpd never calls
    ``socket.getfqdn()`` (a DNS look-up) per connection. With ``tls``, STARTTLS is offered and
    required before mail; with ``credentials`` (which need ``tls``: FakeSMTP checks), so is
    AUTH."""
    handler = FakeHandler(engine)

    def factory() -> FaultySMTP:
        return FaultySMTP(
            handler,
            engine,
            hostname=server_hostname,
            ident="fakesmtp",
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            timeout=timeout,
            loop=loop,
            tls_context=tls,
            require_starttls=tls is not None,
            authenticator=credentials.authenticator if credentials else None,
            auth_required=credentials is not None,
        )

    return factory
