"""The flow on the at-scale backends: PostgreSQL for users, Redis for the queue."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.conftest import wait_until
from tests.flow_helpers import path_of, register_json
from tests.services import postgres_database, redis_server
from tests.smtp_sink import Sink


@pytest.fixture
def postgres_url() -> Iterator[str]:
    # A fixture requested first, so the database is dropped after the consumer has stopped
    # and make_app has closed the app's pool.
    with postgres_database() as url:
        yield url


@pytest.mark.postgres
@pytest.mark.parametrize("variant_name", ["sync", "queued", "outbox"])
def test_flow_on_postgresql(postgres_url: str, variant_name: str,
                            make_app: Callable[..., Flask], sink: Sink,
                            run_consumer: Callable[..., Any]) -> None:
    app = make_app(variant_name, DATABASE_URL=postgres_url)
    if variant_name != "sync":
        run_consumer(app)
    client = app.test_client()
    assert app.extensions["maillab.db"].engine.dialect.name == "postgresql"
    first = register_json(client, "pg@maillab.test")
    again = register_json(client, "pg@maillab.test")
    assert first.status_code == again.status_code == 202
    messages = sink.handler.wait_for("pg@maillab.test", count=2)
    path = path_of(messages[0].links[0])
    assert client.get(path).status_code == 200
    assert client.get(path).status_code == 409


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    # A fixture, so it is torn down after the consumer that uses it (requested later).
    with redis_server(tmp_path) as url:
        yield url


@pytest.mark.redis
def test_queued_on_redis(redis_url: str, make_app: Callable[..., Flask], sink: Sink,
                         run_consumer: Callable[..., Any]) -> None:
    app = make_app("queued", QUEUE_URL=redis_url)
    from huey import RedisHuey

    assert isinstance(app.extensions["mailer"].huey, RedisHuey)
    stats = run_consumer(app)
    client = app.test_client()
    assert register_json(client, "redis@maillab.test").status_code == 202
    [message] = sink.handler.wait_for("redis@maillab.test", timeout=15)
    assert client.get(path_of(message.links[0])).status_code == 200
    wait_until(lambda: stats.stats()["emails_delivered_total"] == 1, what="delivered count")
    assert app.extensions["mailer"].queue_depth() == 0


def test_queued_on_unreachable_redis_is_a_503(make_app: Callable[..., Flask]) -> None:
    pytest.importorskip("redis")  # the client only: nothing listens on the port, no server needed
    from maillab.ports import free_port

    app = make_app("queued", QUEUE_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = register_json(app.test_client(), "down@maillab.test")
    assert response.status_code == 503
    stats = app.extensions["mailer"].stats()
    assert (stats["emails_dispatched_total"], stats["emails_failed_total"]) == (1, 1)
    assert "queue_depth" not in stats  # unknown, so left out rather than reported as 0
    metrics = app.test_client().get("/metrics")
    assert metrics.status_code == 200
    assert not re.search(r"^maillab_queue_depth\{", metrics.get_data(as_text=True), re.M)


def test_huey_on_redis_waits_in_a_blocking_pop_and_on_sqlite_polls(tmp_path: Path) -> None:
    """On Redis the consumer's pick-up is a BRPOP that returns when a task is pushed (no
    poll interval in time to inbox); SQLite has no such wait, so its consumer polls."""
    pytest.importorskip("redis")
    from apps.queued.queue import make_huey

    assert make_huey("redis://127.0.0.1:6379/0").storage.blocking is True
    assert make_huey(f"sqlite:///{tmp_path / 'q.db'}").storage.blocking is False
