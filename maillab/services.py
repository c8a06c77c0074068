"""The servers a bench profile asks for: PostgreSQL for the app's users and outbox, Redis for
queued's Huey and for Celery, RabbitMQ for Celery. SQLite needs none (a file per cell in the
cell's folder).

- **Redis** and **RabbitMQ**: private servers on free loopback ports for the run
  (:mod:`maillab.brokers`), started when a variant of the profile needs one and stopped by the
  run like every other child; for queued's Huey, also the Redis at ``--queue-url``. Each cell
  starts with empty queues, so no email from one cell is delivered in the next.
- **PostgreSQL**: the server at ``--database-url`` or ``$MAILLAB_POSTGRES_URL`` (default the
  local server, ``postgres`` on 127.0.0.1:5432, as Debian's package runs it); the run makes a
  fresh database on it for each cell and drops it afterwards. ``make services`` starts the
  local cluster where it is installed but stopped.

What is missing is said in one line naming the setting, before any cell runs.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.profiles import Profile
from loadtests.target import variant_info
from maillab.brokers import (
    Broker,
    BrokerUnavailable,
    celery_url,
    clear,
    clear_url,
    kind_of,
    start_broker,
)
from maillab.processes import ProcessError, Supervisor

POSTGRES_ENV = "MAILLAB_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class CellServices:
    database_url: str | None
    queue_url: str | None
    redis_url: str | None = None  # the private redis-server (Celery's database on it)
    rabbitmq_url: str | None = None  # the private RabbitMQ


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
    broker_url: str | None = None  # Celery's broker given on the command line
    brokers: dict[str, Broker] = field(default_factory=dict)  # the private ones, by kind
    _database: str | None = None  # the current cell's database
    described: dict[str, str] = field(default_factory=dict)  # what each is, for the record

    @property
    def postgres(self) -> bool:
        return self.profile.database == "postgresql" or bool(self.database_url)

    @property
    def redis_queue(self) -> bool:
        return self.profile.queue == "redis" or bool(self.queue_url)

    def wanted_brokers(self) -> list[str]:
        """The private servers the profile's variants need: Redis for a redis queue given no
        --queue-url, and each variant's own broker."""
        wanted = {k for k in self._variant_kinds()
                  if k in ("redis", "rabbitmq")} - {self._given_kind}
        if self.redis_queue and self.queue_url is None:
            wanted.add("redis")
        return sorted(wanted)

    @property
    def _given_kind(self) -> str | None:
        return kind_of(self.broker_url) if self.broker_url else None

    def start(self) -> None:
        if self.postgres:
            admin = self._admin_url()
            with self._connect(admin) as connection:
                version = connection.execute("SHOW server_version").fetchone()[0]
            self.described["database"] = f"PostgreSQL {version} at {_shown(admin)}"
        else:
            self.described["database"] = "SQLite, a file per cell"
        for kind in self.wanted_brokers():
            self.brokers[kind] = _private(kind, self.supervisor, self.run_dir / kind,
                                          "the profile's variants")
        if "rabbitmq" in self.brokers:
            self.described["rabbitmq"] = (f"a private RabbitMQ {_rabbitmq_version()} at "
                                          f"{_shown(self.brokers['rabbitmq'].url)}")
        if "redis" in self.brokers:
            self.described["redis"] = (f"a private redis-server "
                                       f"{self._redis_version(self.brokers['redis'].url)} at "
                                       f"{_shown(self.brokers['redis'].url)}")
        if self.broker_url:
            self.described["celery broker"] = f"given, at {_shown(self.broker_url)}"
        if self.redis_queue:
            private = self.queue_url is None
            if self.queue_url is None:
                self.queue_url = self.brokers["redis"].url
            version = self._redis_version(self.queue_url)
            where = "a private redis-server" if private else "Redis"
            self.described["queue"] = f"Huey on {where} {version} at {_shown(self.queue_url)}"
        else:
            self.described["queue"] = "Huey on SQLite, a file per cell"

    def for_cell(self) -> CellServices:
        """The cell's fresh database (None: the target's own default, a file in the cell's
        instance folder) and empty queues (None: the consumer's default)."""
        database = queue = None
        if self.postgres:
            self._database = f"maillab_bench_{uuid.uuid4().hex[:12]}"
            admin = self._admin_url()
            with self._connect(admin) as connection:
                connection.execute(f'CREATE DATABASE "{self._database}"')
            database = _with_database(admin, self._database)
        for broker in self.brokers.values():
            clear(broker)
        given = self._given_kind
        if self.broker_url and given and given in self._variant_kinds():
            clear_url(given, self.broker_url)
        if self.redis_queue and self.queue_url:
            from apps.queued.queue import make_huey

            make_huey(self.queue_url).flush()
            queue = self.queue_url
        urls = {kind: celery_url(broker) for kind, broker in self.brokers.items()}
        if self.broker_url and given:
            urls[given] = self.broker_url
        return CellServices(database, queue, urls.get("redis"), urls.get("rabbitmq"))

    def _variant_kinds(self) -> set[str | None]:
        return {variant_info(v).broker for v in self.profile.variants}

    def broker_for(self, variant: str) -> Broker:
        """The private server ``variant``'s email waits in (broker-restart stops it)."""
        kind = variant_info(variant).broker
        if kind == "queue":
            redis = self.brokers.get("redis")
            if redis is None or self.queue_url != redis.url:
                raise ServiceError(f"{variant}'s queue is not a server this run started (queue "
                                   "= \"redis\" without --queue-url gives it one): there is "
                                   "nothing to restart")
            return redis
        if kind not in self.brokers:
            raise ServiceError(f"{variant}'s broker was given with --broker-url: the run "
                               "restarts only the servers it started")
        return self.brokers[kind]

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


def private_services(variant: str, kind: str | None, supervisor: Supervisor,
                     folder: Path) -> CellServices:
    """For one variant outside a bench run (``maillab target check``): the private broker
    ``kind`` it needs, if any, started under ``supervisor`` (which stops it); databases and
    Huey's queue stay the variant's defaults (files in its folder)."""
    if kind not in ("redis", "rabbitmq"):
        return CellServices(None, None)
    broker = _private(kind, supervisor, folder / kind, variant)
    if kind == "redis":
        return CellServices(None, None, redis_url=celery_url(broker))
    return CellServices(None, None, rabbitmq_url=broker.url)


def _private(kind: str, supervisor: Supervisor, folder: Path, who: str) -> Broker:
    """A private broker started for ``who``, or a ServiceError saying why not."""
    try:
        return start_broker(kind, supervisor, folder)
    except BrokerUnavailable as exc:
        raise ServiceError(f"{exc} (needed by {who})") from None
    except ProcessError as exc:
        raise ServiceError(f"the private {kind} for {who} did not start: {exc}") from None


def _rabbitmq_version() -> str:
    """The installed RabbitMQ's version, from Debian's package (the node says it only in
    its log)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "(version unknown)"
    return out.stdout.split("-")[0] if out.returncode == 0 and out.stdout else "(version unknown)"


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
