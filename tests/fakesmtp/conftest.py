"""Fixtures for the fakesmtp tests: servers on free loopback ports, and small clients."""

from __future__ import annotations

import http.client
import json
import smtplib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from fakesmtp.config import Config
from fakesmtp.server import FakeSMTP

HOST = "127.0.0.1"


def make_message(to: str, subject: str = "Hello", body: str = "Hi there.\r\n") -> bytes:
    return (
        f"From: app@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()


class Api:
    """A tiny JSON client for one server's HTTP API (a new connection per call, closed after)."""

    def __init__(self, server: FakeSMTP) -> None:
        self.server = server

    def request(
        self, method: str, path: str, body: Any = None, *, raw_body: bytes | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(HOST, self.server.api_port, timeout=timeout)
        try:
            payload = raw_body if raw_body is not None else (
                None if body is None else json.dumps(body).encode()
            )
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            ctype = resp.getheader("Content-Type", "")
            return resp.status, json.loads(data) if "json" in ctype else data.decode()
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Any:
        status, data = self.request("GET", path, **kw)
        assert status == 200, (path, status, data)
        return data

    def patch(self, body: Any) -> tuple[int, Any]:
        return self.request("PATCH", "/api/config", body)


@pytest.fixture
def make_server() -> Iterator[Callable[..., FakeSMTP]]:
    """Factory: ``make_server(latency=..., faults=..., **FakeSMTP kwargs)`` -> a running server
    on free ports; every server is stopped after the test."""
    servers: list[FakeSMTP] = []

    def factory(
        latency: dict[str, str] | None = None, faults: Sequence[Any] = (), seed: int = 7,
        **kw: Any,
    ) -> FakeSMTP:
        server = FakeSMTP(HOST, 0, 0, Config.build(latency, faults), seed=seed, **kw)
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., FakeSMTP]) -> FakeSMTP:
    return make_server()


@pytest.fixture
def api(server: FakeSMTP) -> Api:
    return Api(server)


@pytest.fixture
def smtp_client() -> Iterator[Callable[[FakeSMTP], smtplib.SMTP]]:
    """Factory for smtplib clients connected to a server; all closed after the test."""
    clients: list[smtplib.SMTP] = []

    def connect(server: FakeSMTP, timeout: float = 10.0) -> smtplib.SMTP:
        client = smtplib.SMTP(HOST, server.smtp_port, timeout=timeout)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


class RawSession:
    """A line-level SMTP client on a plain socket, for what smtplib will not send."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[bytes]:
        """All lines of one (possibly multi-line) reply; [] if the server closed."""
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            if not line:
                return lines
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return lines

    def command(self, line: bytes) -> list[bytes]:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw_session() -> Iterator[Callable[..., RawSession]]:
    sessions: list[RawSession] = []

    def connect(server: FakeSMTP, timeout: float = 5.0) -> RawSession:
        session = RawSession(server.smtp_port, timeout)
        sessions.append(session)
        return session

    yield connect
    for session in sessions:
        session.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it is true or the deadline passes (for server-side counters
    that have no event to wait on from outside). The deadline only bounds a failing test, so
    it is generous: a passing one returns as soon as the state is reached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def until() -> Callable[..., bool]:
    return wait_until


@pytest.fixture
def message() -> Callable[..., bytes]:
    return make_message


@pytest.fixture
def api_for() -> Callable[[FakeSMTP], Api]:
    return Api
