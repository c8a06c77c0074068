"""Real servers for tests: a PostgreSQL database made per test, a redis-server per test.

Each skips with the reason when the server or its binary is not on this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from maillab.ports import free_port

POSTGRES_ENV = "MAILLAB_TEST_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def postgres_admin() -> tuple[str, Any]:
    """The server at $MAILLAB_TEST_POSTGRES_URL: its URL and an autocommit connection to it
    (the caller closes it); skips the test, saying why, when there is none."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin_url = make_url(os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT))
    dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {admin_url.render_as_string()} (set {POSTGRES_ENV}): "
                    f"{str(exc).strip().splitlines()[0]}")
    return admin_url.render_as_string(hide_password=False), admin


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server at $MAILLAB_TEST_POSTGRES_URL."""
    from sqlalchemy.engine import make_url

    url, admin = postgres_admin()
    admin_url = make_url(url)
    name = f"maillab_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port, stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
