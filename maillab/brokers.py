"""The queue servers a run starts for itself: a private redis-server and a private RabbitMQ,
each on free loopback ports with its data in the run's folder, stopped with the run.

Both keep what they hold across a clean stop, as a production server does, so that the
``broker-restart`` scenario is a restart and not a wipe: Redis saves a snapshot when it shuts
down (a ``save`` rule is set; nothing is written while it runs), RabbitMQ keeps durable
queues and persistent messages, which is how Celery publishes. :meth:`Broker.stop` is that
clean stop (SIGTERM, waited for), :meth:`Broker.start` starts it again on the same port and
folder.

RabbitMQ runs its own Erlang port mapper (``epmd``) on a private port, so nothing outlives
the run (a node started without one would leave a daemon behind) and the machine's own
RabbitMQ, if any, is never touched.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from maillab.ports import free_port
from maillab.processes import ManagedProcess, Supervisor

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's, not its su wrapper
REDIS_DB = 1  # Celery's database on the private Redis; Huey's queue is on 0
READY_TIMEOUT_S = 60.0


class BrokerUnavailable(RuntimeError):
    """The server's program is not installed; the message says which package has it."""


@dataclass
class Broker:
    """One private server: how to start it, and the process while it runs."""

    kind: str  # "redis" or "rabbitmq"
    url: str
    argv: list[str]
    env: dict[str, str]
    folder: Path
    ready_line: str
    supervisor: Supervisor
    helpers: list[ManagedProcess] = field(default_factory=list)  # epmd, started once
    process: ManagedProcess | None = None
    starts: int = 0

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        self.starts += 1
        suffix = "" if self.starts == 1 else f"-{self.starts}"
        self.process = self.supervisor.spawn_program(
            self.kind, self.argv, self.env, self.folder / f"{self.kind}{suffix}.log")
        self.process.wait_for_line(self.ready_line, timeout=READY_TIMEOUT_S)

    def stop(self) -> None:
        """A clean stop (SIGTERM, waited for): the server saves what it holds."""
        if self.process is not None:
            self.supervisor.stop(self.process)
            self.process = None

    def close(self) -> None:
        self.stop()
        self.supervisor.stop(*self.helpers)
        self.helpers = []


def redis_broker(supervisor: Supervisor, folder: Path) -> Broker:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BrokerUnavailable("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    # save: a snapshot on shutdown (and at most hourly while running), so a restart keeps the
    # queue; no append-only file, so nothing is written per command.
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "3600 1",
            "--appendonly", "no", "--dir", str(folder)]
    broker = Broker("redis", f"redis://127.0.0.1:{port}/0", argv, dict(os.environ), folder,
                    "Ready to accept connections", supervisor)
    broker.start()
    return broker


def rabbitmq_broker(supervisor: Supervisor, folder: Path) -> Broker:
    if not (os.access(RABBITMQ_SERVER, os.X_OK) and shutil.which("epmd")):
        raise BrokerUnavailable("rabbitmq-server is not installed (Debian package "
                                "rabbitmq-server)")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    (folder / "enabled_plugins").write_text("[].\n", encoding="utf-8")
    env = {
        **os.environ,
        "HOME": str(folder),  # the Erlang cookie goes here, not in the user's home
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"maillab-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
    }
    for name in ("NOTIFY_SOCKET", "RABBITMQ_ALLOW_INPUT"):  # the script's other modes
        env.pop(name, None)
    epmd = supervisor.spawn_program("epmd", [str(shutil.which("epmd")), "-port",
                                             str(epmd_port)], env, folder / "epmd.log")
    broker = Broker("rabbitmq", f"amqp://guest:guest@127.0.0.1:{port}//", [RABBITMQ_SERVER],
                    env, folder, "Server startup complete", supervisor, helpers=[epmd])
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


def start_broker(kind: str, supervisor: Supervisor, folder: Path) -> Broker:
    return (redis_broker if kind == "redis" else rabbitmq_broker)(supervisor, folder)


def celery_url(broker: Broker) -> str:
    """The URL the celery variant is given: on Redis, a database of its own."""
    return broker.url[: -len("/0")] + f"/{REDIS_DB}" if broker.kind == "redis" else broker.url


def clear(broker: Broker) -> None:
    """Empty a private server before a cell: no task from one cell is delivered in the next."""
    clear_url(broker.kind, broker.url, everything=True)


def clear_url(kind: str, url: str, everything: bool = False) -> None:
    """Empty Celery's queue at ``url`` (``everything``: the whole Redis, which only a private
    server may be; a server someone gave loses only the keys of the lab's own queue)."""
    from apps.celery.mailer import QUEUE_NAME

    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        try:
            if everything:
                client.flushall()
            else:  # the queue, and kombu's record of what was given out unacknowledged
                client.delete(QUEUE_NAME, "unacked", "unacked_index", "unacked_mutex")
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        try:
            channel.queue_delete(QUEUE_NAME)
        finally:
            channel.close()


def kind_of(url: str) -> str | None:
    """"rabbitmq" or "redis" for a broker URL Celery takes, else None."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return {"amqp": "rabbitmq", "pyamqp": "rabbitmq", "redis": "redis",
            "rediss": "redis"}.get(scheme)
