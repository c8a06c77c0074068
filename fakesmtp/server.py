"""Run fakesmtp from Python: SMTP and the HTTP API on one asyncio loop in a background thread.

    from fakesmtp.server import FakeSMTP
    from fakesmtp.config import Config

    with FakeSMTP(config=Config.build(latency={"eom": "200ms"},
                                       faults=["id=r1,phase=rcpt,reply=550,to=*@fail.test"]),
                  seed=1) as smtp:
        ...  # send mail to 127.0.0.1:smtp.smtp_port; HTTP API at smtp.api_url
        smtp.patch_config({"latency": {"eom": "500ms"}})
        msg = smtp.wait_for_message("alice@example.test", timeout=5)
        print(msg.received_at, msg.links)

``FakeSMTP(host="127.0.0.1", smtp_port=0, api_port=0, config=None, seed=None,
max_messages=100_000, data_size_limit=10 MiB, server_hostname="fakesmtp.localhost",
session_timeout=300.0, tls=None, credentials=None)``: port 0 picks a free port; after
``start()`` the bound ports are ``smtp_port`` and ``api_port``. ``seed=None`` uses
``config.seed``, and if that is None too, a random seed (shown in ``config.seed`` so the run
can be repeated). ``api_port=None`` runs no
HTTP API. ``start()`` raises :class:`StartError` (nothing left running) if a port is taken.
``stop()`` closes every connection and frees both ports; it is idempotent, and a stopped
server stays stopped (make a new one to restart). ``tls`` (an ``ssl.SSLContext``, see
:func:`fakesmtp.tls.server_context`) makes STARTTLS required before mail, and ``credentials``
(which need ``tls``) AUTH too.

Thread-safe methods (each runs on the server's loop and waits for the answer):

    config                          the active Config (immutable)
    patch_config(dict) -> Config    same semantics as PATCH /api/config; ConfigError if bad
    reset()                         same as POST /api/reset
    messages(to=None, since=None, limit=100) -> list[Message]     newest first
    wait_for_message(to=None, timeout=10.0, since=None) -> Message | None
    clear_messages() -> int         same as DELETE /api/messages
    stats() -> dict                 same as GET /api/stats
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import socket
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

try:  # libuv's event loop: see new_loop()
    import uvloop
except ImportError:  # a platform uvloop does not build on (Windows): asyncio's own loop
    uvloop = None  # type: ignore[assignment]

from fakesmtp.api import SERVER_LOG, make_app
from fakesmtp.config import Config
from fakesmtp.engine import Engine
from fakesmtp.smtp import DEFAULT_DATA_SIZE_LIMIT, DEFAULT_SERVER_HOSTNAME, protocol_factory
from fakesmtp.store import DEFAULT_CAPACITY, Message, MessageStore
from fakesmtp.tls import Credentials

T = TypeVar("T")
_BACKLOG = 1024  # bursts of thousands of connects must queue, not be refused


class StartError(RuntimeError):
    """The server could not start (typically: a port already in use)."""


class FakeSMTP:
    def __init__(
        self,
        host: str = "127.0.0.1",
        smtp_port: int = 0,
        api_port: int | None = 0,
        config: Config | None = None,
        *,
        seed: int | None = None,
        max_messages: int = DEFAULT_CAPACITY,
        data_size_limit: int = DEFAULT_DATA_SIZE_LIMIT,
        server_hostname: str = DEFAULT_SERVER_HOSTNAME,
        session_timeout: float = 300.0,
        tls: ssl.SSLContext | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        if credentials is not None and tls is None:
            raise ValueError("AUTH needs TLS: credentials are only taken over STARTTLS")
        if seed is None:
            seed = config.seed if config is not None else None
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        self.host = host
        self.smtp_port = smtp_port
        self.api_port = api_port
        self.initial_config = Config.build(
            config.latency if config else None, config.faults if config else (), seed
        )
        self._store = MessageStore(max_messages)
        self._data_size_limit = data_size_limit
        self._server_hostname = server_hostname
        self._session_timeout = session_timeout
        self.tls = tls
        self.credentials = credentials
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: Engine | None = None
        self._smtp_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeSMTP:
        if self._thread is not None or self._stopped:
            raise RuntimeError("start() runs once per FakeSMTP; make a new one to restart")
        loop = new_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(target=self._run, args=(loop, started), name="fakesmtp",
                                  daemon=True)
        thread.start()
        try:
            started.result()
        except BaseException:
            thread.join()
            raise
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._loop = self._thread = None
        self._stopped = True

    def __enter__(self) -> FakeSMTP:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.api_port}"

    # -- thread-safe access -------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._running().config  # immutable: reading the reference is safe

    def patch_config(self, patch: dict[str, Any]) -> Config:
        """Same semantics as ``PATCH /api/config``; raises ConfigError on bad input."""
        return self._call(self._async(lambda: self._running().patch(patch)))

    def reset(self) -> None:
        self._call(self._async(lambda: self._running().reset()))

    def messages(
        self, to: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[Message]:
        return self._call(self._async(lambda: self._store.query(to, since, limit)))

    def wait_for_message(
        self, to: str | None = None, timeout: float = 10.0, since: float | None = None
    ) -> Message | None:
        """The newest message for ``to`` received after ``since``, waiting up to ``timeout``."""
        found = self._call(self._store.wait(to, since, timeout, 1), timeout + 10.0)
        return found[0] if found else None

    def clear_messages(self) -> int:
        return self._call(self._async(self._store.clear))

    def stats(self) -> dict[str, Any]:
        return self._call(self._async(lambda: self._running().snapshot()))

    # -- internals ----------------------------------------------------------------------------

    def _running(self) -> Engine:
        if self._engine is None or self._loop is None:
            raise RuntimeError("FakeSMTP is not running; call start() first")
        return self._engine

    @staticmethod
    async def _async(fn: Any) -> Any:
        return fn()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("FakeSMTP is not running; call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _run(
        self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[None]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._startup(loop))
            except BaseException as err:
                loop.run_until_complete(self._shutdown())
                started.set_exception(err)
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine = Engine(self.initial_config, self._store)
        factory = protocol_factory(
            engine,
            server_hostname=self._server_hostname,
            data_size_limit=self._data_size_limit,
            timeout=self._session_timeout,
            loop=loop,
            tls=self.tls,
            credentials=self.credentials,
        )
        try:
            self._smtp_server = await loop.create_server(
                factory, self.host, self.smtp_port, backlog=_BACKLOG
            )
        except OSError as err:
            raise StartError(_bind_error("SMTP", self.host, self.smtp_port, err)) from err
        self.smtp_port = self._smtp_server.sockets[0].getsockname()[1]
        if self.api_port is None:
            return
        try:
            sock = socket.create_server(
                (self.host, self.api_port),
                family=socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                backlog=_BACKLOG,
            )
        except OSError as err:
            raise StartError(_bind_error("HTTP API", self.host, self.api_port, err)) from err
        self.api_port = sock.getsockname()[1]
        # Client disconnects cancel their handler, so an abandoned long-poll leaves no waiter.
        self._runner = web.AppRunner(
            make_app(engine), access_log=None, handle_signals=False, shutdown_timeout=1.0,
            handler_cancellation=True, logger=SERVER_LOG,
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock, backlog=_BACKLOG).start()

    async def _shutdown(self) -> None:
        if self._smtp_server is not None:
            self._smtp_server.close()
        if self._engine is not None:
            # abort, not close: a STARTTLS session's close() starts a TLS goodbye that would
            # outlive the loop, leaving the socket's own transport open when the loop closes.
            for session in list(self._engine.sessions):
                for transport in (session.transport,
                                  getattr(session, "_original_transport", None)):
                    abort = getattr(transport, "abort", None)  # uvloop's are no asyncio ABC
                    if abort is not None:
                        abort()
            self._store.wake_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._smtp_server is not None:
            await self._smtp_server.wait_closed()
            self._smtp_server = None
        # Let the sessions see their connection_lost, then cancel whatever is still running.
        await asyncio.sleep(0)
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def new_loop() -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop where it is installed. At 1000 concurrent sessions
    and 200 ms after the final dot (the address fast path in both), timers fired 34-59 ms
    late at p99 on asyncio's own loop, against 3-22 ms on uvloop (one 2-core machine; the
    asyncio figure from two runs of a one-off script, the uvloop one from the 1000-session
    step of benchmarks/test_fakesmtp_ingest.py, which measures uvloop only)."""
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _bind_error(what: str, host: str, port: int, err: OSError) -> str:
    reason = os.strerror(err.errno) if err.errno else str(err)
    return f"cannot listen for {what} on {_url_host(host)}:{port}: {reason}"
