"""The servers a bench profile asks for: PostgreSQL for the app's users and outbox, Redis for
queued's Huey. SQLite needs none (a file per cell in the cell's folder).

- **Redis**: a private ``redis-server`` on a free loopback port for the run (nothing on disk),
  started and stopped by the run like every other child; or the server at ``--queue-url``.
  Each cell starts with an empty queue (Huey's own ``flush`` of its queue), so no email from
  one cell is delivered in the next.
- **PostgreSQL**: the server at ``--database-url`` or ``$MAILLAB_POSTGRES_URL`` (default the
  local server, ``postgres`` on 127.0.0.1:5432, as Debian's package runs it); the run makes a
  fresh database on it for each cell and drops it afterwards. ``make services`` starts the
  local cluster where it is installed but stopped.

What is missing is said in one line naming the setting, before any cell runs.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.profiles import Profile
from maillab.ports import free_port
from maillab.processes import ManagedProcess, Supervisor

POSTGRES_ENV = "MAILLAB_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class CellServices:
    database_url: str | None
    queue_url: str | None


class ServiceError(RuntimeError):
    """A server the profile needs is not there; the message says which and how to get it."""


@dataclass
class Services:
    """Started with :meth:`start` before the cells; :meth:`for_cell` gives each cell's
    settings and :meth:`end_cell` clears up after it."""

    profile: Profile
    run_dir: Path
    supervisor: Supervisor
    database_url: str | None = None  # a PostgreSQL server given on the command line
    queue_url: str | None = None  # a Redis server given on the command line
    redis: ManagedProcess | None = None
    _database: str | None = None  # the current cell's database
    described: dict[str, str] = field(default_factory=dict)  # what each is, for the record

    @property
    def postgres(self) -> bool:
        return self.profile.database == "postgresql" or bool(self.database_url)

    @property
    def redis_queue(self) -> bool:
        return self.profile.queue == "redis" or bool(self.queue_url)

    def start(self) -> None:
        if self.postgres:
            admin = self._admin_url()
            with self._connect(admin) as connection:
                version = connection.execute("SHOW server_version").fetchone()[0]
            self.described["database"] = f"PostgreSQL {version} at {_shown(admin)}"
        else:
            self.described["database"] = "SQLite, a file per cell"
        if self.redis_queue:
            private = self.queue_url is None
            if self.queue_url is None:
                self.queue_url = self._start_redis()
            version = self._redis_version(self.queue_url)
            where = "a private redis-server" if private else "Redis"
            self.described["queue"] = f"Huey on {where} {version} at {_shown(self.queue_url)}"
        else:
            self.described["queue"] = "Huey on SQLite, a file per cell"

    def for_cell(self) -> CellServices:
        """The cell's fresh database (None: the target's own default, a file in the cell's
        instance folder) and empty queue (None: the consumer's default)."""
        database = queue = None
        if self.postgres:
            self._database = f"maillab_bench_{uuid.uuid4().hex[:12]}"
            admin = self._admin_url()
            with self._connect(admin) as connection:
                connection.execute(f'CREATE DATABASE "{self._database}"')
            database = _with_database(admin, self._database)
        if self.redis_queue and self.queue_url:
            from apps.queued.queue import make_huey

            make_huey(self.queue_url).flush()
            queue = self.queue_url
        return CellServices(database, queue)

    def end_cell(self) -> None:
        """Drop the cell's database (its app and consumers have stopped)."""
        if self._database is None:
            return
        name, self._database = self._database, None
        with self._connect(self._admin_url()) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- PostgreSQL ----------------------------------------------------------------------------

    def _admin_url(self) -> str:
        return self.database_url or os.environ.get(POSTGRES_ENV) or POSTGRES_DEFAULT

    def _connect(self, url: str) -> Any:
        try:
            import psycopg
        except ImportError:
            raise ServiceError("database = \"postgresql\" needs psycopg: pip install "
                               "'maillab[postgres]'") from None
        try:
            return psycopg.connect(_libpq(url), autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServiceError(
                f"database = \"postgresql\": no PostgreSQL at {_shown(url)} ({first}); start "
                f"it (make services), or give one with --database-url or {POSTGRES_ENV}"
            ) from None

    # -- Redis ---------------------------------------------------------------------------------

    def _start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("queue = \"redis\": redis-server is not installed (Debian "
                               "package redis-server), and no --queue-url was given")
        port = free_port()
        folder = self.run_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        self.redis = self.supervisor.spawn_program(
            "redis-server", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
            dict(os.environ), folder / "redis.log")
        self.redis.wait_for_line("Ready to accept connections", timeout=20)
        return f"redis://127.0.0.1:{port}/0"

    def _redis_version(self, url: str) -> str:
        """The server's version; it must answer within 10 s."""
        try:
            import redis
        except ImportError:
            raise ServiceError("queue = \"redis\" needs the redis package: pip install "
                               "'maillab[redis]'") from None
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    return str(client.info("server")["redis_version"])
                except redis.RedisError as exc:
                    if time.monotonic() > deadline:
                        raise ServiceError(f"queue = \"redis\": no Redis at {_shown(url)} "
                                           f"({exc}); give one with --queue-url") from None
                    time.sleep(0.2)
        finally:
            client.close()


def _libpq(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as libpq takes it."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.set(database=database).render_as_string(hide_password=False)


def _shown(url: str) -> str:
    """``url`` with any password hidden, fit for a message or results.json."""
    from apps.queued.queue import shown

    return shown(url)
