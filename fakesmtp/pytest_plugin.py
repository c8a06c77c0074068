"""fakesmtp in a test suite: a pytest plugin (``pytest11`` entry point ``fakesmtp``).

Fixtures are built only when a test asks for one, so installing maillab changes nothing else
in a run:

- ``fakesmtp_server`` (session): one fakesmtp per test session and per xdist worker (each
  worker is its own process), on free loopback ports, stopped at the end;
- ``fakesmtp`` (per test): the server reset for this test, with ``host``, ``port``,
  ``messages(to=...)``, ``wait_for(to=..., subject=..., timeout=...)``, faults and latency
  scoped to the test, and settings for Flask-Mail, Flask-Mailman and Django;
- ``fakesmtp_address`` (per test): a unique address for this test.

``@pytest.mark.fakesmtp(latency="200ms", faults=["id=f,phase=rcpt,reply=451,first=2"])``
sets a test's latency and faults; ``--fakesmtp-latency`` (ini ``fakesmtp_latency``) sets the
default latency. When a test that used ``fakesmtp`` fails, the messages it received are
attached to its report.

Every SMTP transaction is in an attempt ledger (``fakesmtp.attempts(to)``: its phases'
timings, the fault it met, how it ended, the Message-ID that links a retry to its first try),
and the assertion helpers ``assert_delivered_once``, ``assert_no_email`` and
``assert_attempts`` list what did arrive and what was tried when they fail.

``--fakesmtp-tls`` (ini ``fakesmtp_tls``) makes the server a provider's submission port, as
``maillab smtp --tls`` does: STARTTLS before mail, with a self-signed certificate
(``fakesmtp.ca_file``); ``--fakesmtp-auth USER:PASSWORD`` (ini ``fakesmtp_auth``) adds AUTH.
The settings helpers then carry both.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Message:
    """One captured email, as fakesmtp parsed it."""

    id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    text: str
    html: str
    links: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    received_at: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(str(data["id"]), data.get("mail_from") or "", tuple(data["rcpt_tos"]),
                   data.get("subject") or "", data.get("text") or "", data.get("html") or "",
                   tuple(data.get("links") or ()),
                   tuple((str(k), str(v)) for k, v in data.get("headers") or ()),
                   float(data.get("received_at") or 0))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def link(self, prefix: str = "") -> str:
        """The first link starting with ``prefix``; AssertionError listing them if none."""
        for link in self.links:
            if link.startswith(prefix):
                return link
        raise AssertionError(f"no link starting with {prefix!r} in {self.subject!r}; its "
                             f"links: {list(self.links) or 'none'}")


@dataclass
class Server:
    host: str
    port: int
    api: str
    process: subprocess.Popen[bytes]
    tls: bool = False
    ca_file: str | None = None  # the self-signed certificate, for clients that verify
    username: str | None = None
    password: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"fakesmtp refused {method} {path}: "
                                 f"{exc.read().decode('utf-8', 'replace')}") from None


@dataclass
class FakeSmtp:
    """This test's view of the session's fakesmtp."""

    server: Server
    rules: list[str] = field(default_factory=list)
    _counter: int = 0

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def tls(self) -> bool:
        return self.server.tls

    @property
    def ca_file(self) -> str | None:
        return self.server.ca_file

    @property
    def username(self) -> str | None:
        return self.server.username

    @property
    def password(self) -> str | None:
        return self.server.password

    # -- what arrived ---------------------------------------------------------------------

    def messages(self, to: str | None = None) -> list[Message]:
        query = "?limit=10000" + (f"&to={urllib.parse.quote(to)}" if to else "")
        return [Message.from_json(m) for m in self.server.call("GET", "/api/messages" + query)]

    def wait_for(self, to: str, subject: str | None = None, timeout: float = 10.0) -> Message:
        """The first message to ``to`` (whose subject contains ``subject``), waiting up to
        ``timeout``; AssertionError listing what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(to) if subject is None or subject in m.subject]
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                arrived = [(m.rcpt_tos, m.subject) for m in self.messages()]
                raise AssertionError(f"no email to {to}" + (f" with {subject!r} in its "
                                     f"subject" if subject else "") + f" within {timeout:g} s; "
                                     f"arrived: {arrived or 'nothing'}")
            time.sleep(0.05)

    def address(self, name: str = "user") -> str:
        """A unique address for this test."""
        self._counter += 1
        return f"{name}-{uuid.uuid4().hex[:10]}-{self._counter}@fakesmtp.test"

    # -- the attempt ledger and what a test asserts with it --------------------------------

    def attempts(self, to: str | None = None) -> list[dict[str, Any]]:
        """Every SMTP transaction (to ``to``) since the test began, oldest first."""
        query = f"?to={urllib.parse.quote(to)}" if to else ""
        return list(self.server.call("GET", "/api/attempts" + query))

    def _story(self, to: str) -> str:
        messages = [f"{m.subject!r} (Message-ID {m.header('Message-ID')})"
                    for m in self.messages(to)]
        tries = [f"{a['outcome'] or 'under way'}" + (f", met {a['fault']}" if a["fault"]
                 else "") + (f", Message-ID {a['message_id']}" if a["message_id"] else "")
                 for a in self.attempts(to)]
        return (f"arrived for {to}: {messages or 'nothing'}; its SMTP transactions: "
                f"{tries or 'none'}")

    def assert_delivered_once(self, to: str, timeout: float = 10.0) -> Message:
        """Exactly one email reached ``to`` (waiting up to ``timeout`` for the first, then a
        moment for a duplicate); AssertionError telling what arrived and what was tried."""
        try:
            first = self.wait_for(to=to, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"expected one email to {to}, got none; "
                                 f"{self._story(to)}") from None
        time.sleep(0.2)
        arrived = self.messages(to)
        if len(arrived) != 1:
            raise AssertionError(f"expected one email to {to}, got {len(arrived)}; "
                                 f"{self._story(to)}")
        return first

    def assert_no_email(self, to: str, within: float = 1.0) -> None:
        """No email reaches ``to`` within ``within`` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.messages(to):
                raise AssertionError(f"expected no email to {to} within {within:g} s; "
                                     f"{self._story(to)}")
            time.sleep(0.05)

    def assert_attempts(self, to: str, count: int) -> list[dict[str, Any]]:
        """Exactly ``count`` SMTP transactions were made for ``to``."""
        found = self.attempts(to)
        if len(found) != count:
            raise AssertionError(f"expected {count} SMTP transactions for {to}, saw "
                                 f"{len(found)}; {self._story(to)}")
        return found

    # -- faults, scoped to this test ----------------------------------------------------------

    def fault(self, rule: str) -> None:
        """Add a fakesmtp fault rule (its string form) for the rest of this test."""
        self.rules.append(rule)
        self.server.call("PATCH", "/api/config", {"faults": self.rules})

    def reject(self, to: str, code: int = 451, times: int | None = None) -> None:
        """Answer ``code`` to RCPT for ``to`` (``times`` times, then accept; None: always)."""
        trigger = f",first={times}" if times is not None else ""
        self.fault(f"id=r{len(self.rules) + 1},phase=rcpt,reply={code},to={to}{trigger}")

    def hang(self, to: str, phase: str = "eom", times: int | None = 1) -> None:
        """Never answer ``phase`` for messages to ``to`` (``times`` times)."""
        trigger = f",first={times}" if times is not None else ""
        self.fault(f"id=h{len(self.rules) + 1},phase={phase},action=hang,to={to}{trigger}")

    def drop_after_store(self, to: str, times: int | None = 1) -> None:
        """Store the message, then cut the connection before the reply (``times`` times)."""
        trigger = f",first={times}" if times is not None else ""
        self.fault(f"id=d{len(self.rules) + 1},phase=eom,action=drop,to={to}{trigger}")

    @contextmanager
    def outage(self, code: int = 421) -> Iterator[None]:
        """Refuse every message (``code`` at MAIL) inside the block."""
        rule = f"id=outage{len(self.rules) + 1},phase=mail,reply={code}"
        self.fault(rule)
        try:
            yield
        finally:
            self.rules.remove(rule)
            self.server.call("PATCH", "/api/config", {"faults": self.rules})

    def latency(self, spec: str, phase: str = "eom") -> None:
        """Delay ``phase`` by ``spec`` (fakesmtp's distributions: 200ms, lognormal:...)."""
        self.server.call("PATCH", "/api/config", {"latency": {phase: spec}})

    # -- settings for the app under test ----------------------------------------------------

    def flask_mail_config(self) -> dict[str, Any]:
        return {"MAIL_SERVER": self.host, "MAIL_PORT": self.port, "MAIL_USE_TLS": self.tls,
                "MAIL_USE_SSL": False, "MAIL_USERNAME": self.username,
                "MAIL_PASSWORD": self.password, "MAIL_SUPPRESS_SEND": False, "TESTING": True}

    def flask_mailman_config(self) -> dict[str, Any]:
        return {"MAIL_SERVER": self.host, "MAIL_PORT": self.port, "MAIL_USE_TLS": self.tls,
                "MAIL_USE_SSL": False, "MAIL_USERNAME": self.username,
                "MAIL_PASSWORD": self.password, "MAIL_BACKEND": "smtp"}

    def django_settings(self) -> dict[str, Any]:
        return {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "EMAIL_HOST": self.host, "EMAIL_PORT": self.port, "EMAIL_USE_TLS": self.tls,
                "EMAIL_HOST_USER": self.username or "",
                "EMAIL_HOST_PASSWORD": self.password or ""}


def _start(tls_folder: str | None = None, auth: str | None = None) -> Server:
    """fakesmtp on free loopback ports; with STARTTLS (a self-signed certificate written to
    ``tls_folder``) and AUTH (``USER:PASSWORD``, passed in the environment) when asked."""
    smtp, api = _free_port(), _free_port()
    argv = [sys.executable, "-m", "fakesmtp", "--host", "127.0.0.1", "--port", str(smtp),
            "--api-port", str(api), "--seed", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FAKESMTP_AUTH", None)
    ca_file = username = password = None
    if tls_folder is not None:
        from pathlib import Path

        from fakesmtp.tls import self_signed

        cert, key = self_signed(Path(tls_folder))
        argv += ["--tls", "--tls-cert", str(cert), "--tls-key", str(key)]
        ca_file = str(cert)
    if auth:
        if tls_folder is None:
            raise pytest.UsageError("--fakesmtp-auth needs --fakesmtp-tls (AUTH goes after "
                                    "STARTTLS)")
        username, _, password = auth.partition(":")
        if not username or not password:
            raise pytest.UsageError(f"--fakesmtp-auth: {auth!r} is not USER:PASSWORD")
        env["FAKESMTP_AUTH"] = auth
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env)
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        seen.append(line.strip())
        if re.search("HTTP API", line):
            return Server("127.0.0.1", smtp, f"http://127.0.0.1:{api}", process,
                          tls=tls_folder is not None, ca_file=ca_file, username=username,
                          password=password)
    process.kill()
    raise RuntimeError(f"fakesmtp did not start: {' | '.join(seen[-5:]) or 'no output'}")


@pytest.fixture(scope="session")
def fakesmtp_server(pytestconfig: pytest.Config,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One fakesmtp for the session (and per xdist worker), stopped at its end; with
    STARTTLS and AUTH under --fakesmtp-tls and --fakesmtp-auth."""
    tls = pytestconfig.getoption("fakesmtp_tls") or pytestconfig.getini("fakesmtp_tls")
    auth = pytestconfig.getoption("fakesmtp_auth") or pytestconfig.getini("fakesmtp_auth")
    server = _start(str(tmp_path_factory.mktemp("fakesmtp-tls")) if tls else None,
                    auth or None)
    try:
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fakesmtp", "fakesmtp (maillab's fake SMTP server)")
    group.addoption("--fakesmtp-latency", default=None, metavar="SPEC",
                    help="fakesmtp's default delay before it accepts a message (0ms, 200ms, "
                         "lognormal:p50=200ms,p99=2s)")
    parser.addini("fakesmtp_latency", "fakesmtp's default delay before it accepts a message",
                  default="0ms")
    group.addoption("--fakesmtp-tls", action="store_true", default=False,
                    help="fakesmtp offers STARTTLS and refuses mail before it (a provider's "
                         "port 587), with a self-signed certificate")
    parser.addini("fakesmtp_tls", "fakesmtp offers STARTTLS (see --fakesmtp-tls)",
                  type="bool", default=False)
    group.addoption("--fakesmtp-auth", default=None, metavar="USER:PASSWORD",
                    help="fakesmtp refuses mail before AUTH with these credentials (needs "
                         "--fakesmtp-tls)")
    parser.addini("fakesmtp_auth", "fakesmtp's AUTH credentials, USER:PASSWORD", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fakesmtp(latency=None, faults=()): this test's "
                            "fakesmtp latency (a spec such as 200ms) and fault rules")


@pytest.fixture
def fakesmtp(fakesmtp_server: Server, request: pytest.FixtureRequest) -> FakeSmtp:
    """fakesmtp, reset for this test: no messages and no faults, the default latency (or
    the test's ``@pytest.mark.fakesmtp(latency=..., faults=[...])``)."""
    marker = request.node.get_closest_marker("fakesmtp")
    options = dict(marker.kwargs) if marker else {}
    unknown = sorted(set(options) - {"latency", "faults"})
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.fakesmtp: unknown argument {unknown[0]!r}; "
                                "known: latency, faults")
    latency = options.get("latency") or request.config.getoption("fakesmtp_latency") or \
        request.config.getini("fakesmtp_latency")
    fakesmtp_server.call("POST", "/api/reset")
    fakesmtp_server.call("PATCH", "/api/config", {"faults": [], "latency": {"eom": latency}})
    handle = FakeSmtp(fakesmtp_server)
    for rule in options.get("faults") or ():
        handle.fault(rule)
    request.node.stash[_HANDLE] = handle
    return handle


_HANDLE = pytest.StashKey[FakeSmtp]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test that used fakesmtp gets the messages it received in its report."""
    report: pytest.TestReport = yield
    handle = item.stash.get(_HANDLE, None)
    if handle is not None and report.failed and call.when == "call":
        try:
            messages = handle.messages()
        except (OSError, AssertionError) as exc:
            report.sections.append(("fakesmtp", f"the messages could not be read: {exc}"))
        else:
            lines = [f"{m.received_at:.3f} to {', '.join(m.rcpt_tos)}: {m.subject!r} "
                     f"(Message-ID {m.header('Message-ID')})" for m in messages]
            report.sections.append((f"fakesmtp: {len(messages)} messages received",
                                    "\n".join(lines) or "none"))
            tries = [f"{a['mail_from']} -> {', '.join([*a['rcpt_tos'], *a['refused']])}: "
                     f"{a['outcome'] or 'under way'}" + (f" ({a['fault']})" if a["fault"]
                                                         else "")
                     for a in handle.attempts()]
            report.sections.append((f"fakesmtp: {len(tries)} SMTP transactions",
                                    "\n".join(tries) or "none"))
    return report


@pytest.fixture
def fakesmtp_address(fakesmtp: FakeSmtp) -> str:
    """A unique recipient address for this test."""
    return fakesmtp.address()
