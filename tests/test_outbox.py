"""The transactional outbox: the email is written with the account and delivered at least once,
whatever dies in between (the app right after its commit, the relay mid-send)."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from apps.core.delivery import message_id
from apps.outbox.models import OutboxRow
from apps.outbox.relay import Relay
from maillab.ports import free_port
from maillab.processes import ManagedProcess
from tests.conftest import FAST_HASH, wait_until
from tests.flow_helpers import PASSWORD, path_of, register_json
from tests.services import postgres_database
from tests.smtp_sink import Sink

TEMPFAIL = "451 4.3.0 try again later"
REFUSED = "550 5.1.1 no such mailbox"


def rows(app: Flask) -> list[OutboxRow]:
    with app.extensions["maillab.db"].sessions() as session:
        return list(session.scalars(select(OutboxRow).order_by(OutboxRow.created_at)))


def test_the_email_is_a_row_committed_with_the_account(make_app: Callable[..., Flask],
                                                       sink: Sink,
                                                       run_consumer: Callable[..., Any]) -> None:
    """Without a relay nothing is sent, yet the email is safe: it was committed with the
    account. A relay started later delivers it, with a Message-ID made from its id."""
    app = make_app("outbox")
    assert register_json(app.test_client(), "o1@maillab.test").status_code == 202
    [row] = rows(app)
    assert (row.to, row.sent_at, row.attempts) == ("o1@maillab.test", None, 0)
    assert sink.handler.for_address("o1@maillab.test") == []
    assert app.extensions["mailer"].stats()["queue_depth"] == 1
    relay = run_consumer(app)
    [message] = sink.handler.wait_for("o1@maillab.test", timeout=15)
    assert message.headers["Message-ID"] == message_id(row.email())
    assert message.headers["X-Maillab-Id"] == row.id
    wait_until(lambda: rows(app)[0].sent_at is not None, what="the row marked sent")
    assert relay.stats()["emails_delivered_total"] == 1 and relay.stats()["queue_depth"] == 0
    assert app.test_client().get(path_of(message.links[0])).status_code == 200


def test_over_the_quota_no_row_is_written(make_app: Callable[..., Flask]) -> None:
    app = make_app("outbox", EMAILS_PER_ADDRESS=2)
    for _ in range(3):
        assert register_json(app.test_client(), "o2@maillab.test").status_code == 202
    assert len(rows(app)) == 2


def test_transient_failures_are_retried_and_permanent_ones_recorded(
        make_app: Callable[..., Flask], sink_factory: Callable[..., Sink],
        run_consumer: Callable[..., Any]) -> None:
    server = sink_factory(replies=deque([TEMPFAIL, TEMPFAIL]))
    app = make_app("outbox", SMTP_PORT=server.port, QUEUE_RETRIES=3, QUEUE_RETRY_DELAY=0.1)
    relay = run_consumer(app)
    register_json(app.test_client(), "o3@maillab.test")
    server.handler.wait_for("o3@maillab.test", timeout=20)
    wait_until(lambda: relay.stats()["emails_delivered_total"] == 1, what="delivered")
    assert server.handler.data_attempts == 3 and relay.stats()["emails_retried_total"] == 2
    assert rows(app)[0].attempts == 2

    server.handler.always = REFUSED
    register_json(app.test_client(), "o4@maillab.test")
    wait_until(lambda: relay.stats()["emails_failed_total"] == 1, what="failed")
    refused = next(r for r in rows(app) if r.to == "o4@maillab.test")
    assert refused.failed_at is not None and "550" in (refused.last_error or "")
    assert server.handler.data_attempts == 4  # a 5xx is not tried again


def test_a_lease_that_ran_out_is_claimed_again(make_app: Callable[..., Flask]) -> None:
    """A relay that died holding rows: once their lease is over, another relay takes them;
    until then nobody does."""
    app = make_app("outbox")
    for i in range(3):
        register_json(app.test_client(), f"o5-{i}@maillab.test")
    first, second = Relay(app, threads=4), Relay(app, threads=4)
    second.owner = "another relay"
    assert len(first.claim(10)) == 3
    assert second.claim(10) == []
    with app.extensions["maillab.db"].sessions() as session:
        session.execute(update(OutboxRow).values(lease_until=0.0))  # the lease ran out
        session.commit()
    assert sorted(r["to"] for r in second.claim(10)) == [f"o5-{i}@maillab.test" for i in range(3)]
    assert {r.claimed_by for r in rows(app)} == {"another relay"}


def test_a_relay_started_again_under_its_name_takes_its_rows_back_at_once(
        make_app: Callable[..., Flask]) -> None:
    app = make_app("outbox")
    for i in range(2):
        register_json(app.test_client(), f"o9-{i}@maillab.test")
    crashed = Relay(app, name="relay-a")
    assert len(crashed.claim(10)) == 2
    other = Relay(app, name="relay-b")
    assert other.take_back() == 0 and other.claim(10) == []  # not its rows; leases hold
    again = Relay(app, name="relay-a")
    assert again.take_back() == 2
    assert len(again.claim(10)) == 2


@pytest.mark.parametrize("store", [
    "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_relays_share_the_work_and_send_each_row_once(
        store: str, make_app: Callable[..., Flask], sink_factory: Callable[..., Sink]) -> None:
    """Claims never overlap (FOR UPDATE SKIP LOCKED on PostgreSQL, one UPDATE on SQLite): with
    nothing failing, every email arrives exactly once, and both relays did some of it."""
    server = sink_factory(delay=0.02)
    with _database(store) as url:
        config = {"DATABASE_URL": url} if url else {}
        app = make_app("outbox", SMTP_PORT=server.port, **config)
        client = app.test_client()
        for i in range(60):
            assert register_json(client, f"o6-{i}@maillab.test").status_code == 202
        relays = [Relay(app, threads=4), Relay(app, threads=4)]
        threads = [threading.Thread(target=r.run) for r in relays]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: sum(r.stats()["emails_delivered_total"] for r in relays) == 60,
                       timeout=60, what="60 emails delivered")
        finally:
            for relay in relays:
                relay.stop()
            for thread in threads:
                thread.join(30)
        ids = Counter(m.headers["X-Maillab-Id"] for m in server.handler.messages)
        assert len(ids) == 60 and set(ids.values()) == {1}
        assert all(r.stats()["emails_delivered_total"] > 0 for r in relays)
        app.extensions["maillab.db"].engine.dispose()


@pytest.mark.postgres
def test_on_postgresql_an_idle_relay_wakes_on_the_commit(
        make_app: Callable[..., Flask], sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """LISTEN/NOTIFY: with the fallback poll at 60 s, the email still goes out at once."""
    monkeypatch.setattr("apps.outbox.relay.LISTEN_POLL_S", 60.0)
    with postgres_database() as url:
        app = make_app("outbox", DATABASE_URL=url)
        relay = Relay(app, threads=2)
        thread = threading.Thread(target=relay.run)
        thread.start()
        try:
            wait_until(lambda: relay.idle_waits >= 1, what="the relay idle")
            assert register_json(app.test_client(), "o10@maillab.test").status_code == 202
            sink.handler.wait_for("o10@maillab.test", timeout=15)
            assert relay.idle_waits <= 3  # woken by the commit, not by the 60 s poll
        finally:
            relay.stop()
            thread.join(70)
        app.extensions["maillab.db"].engine.dispose()


def _database(store: str) -> Any:
    if store == "postgresql":
        return postgres_database()
    from contextlib import nullcontext

    return nullcontext(None)


# --- real processes -------------------------------------------------------------------------

def _env(tmp_path: Path, sink: Sink, **more: str) -> dict[str, str]:
    return {**os.environ, "MAILLAB_INSTANCE_DIR": str(tmp_path / "instance"),
            "MAILLAB_SMTP_PORT": str(sink.port), "MAILLAB_PASSWORD_HASH": FAST_HASH, **more}


@pytest.mark.slow
def test_an_app_killed_right_after_the_commit_still_sends(
        tmp_path: Path, sink: Sink, spawn: Callable[..., ManagedProcess]) -> None:
    env = _env(tmp_path, sink)
    port = free_port()
    app = spawn(["serve", "outbox", "--port", str(port), "--workers", "1"], env, "listening on")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/register", method="POST",
        data=json.dumps({"email": "o7@maillab.test", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
    app.stop(timeout=0, sig=signal.SIGKILL)  # no relay ran while the app lived
    assert sink.handler.for_address("o7@maillab.test") == []
    relay = spawn(["relay"], env, "consuming")
    sink.handler.wait_for("o7@maillab.test", timeout=20)
    assert relay.stop(sig=signal.SIGTERM) == 0
    assert "1 delivered, 0 failed" in relay.log_path.read_text()


@pytest.mark.slow
def test_a_relay_killed_mid_send_delivers_after_a_restart(
        tmp_path: Path, make_app: Callable[..., Flask], sink_factory: Callable[..., Sink],
        spawn: Callable[..., ManagedProcess]) -> None:
    """While the SMTP server holds the message the live relay's heartbeat renews its lease;
    SIGKILL stops the heartbeat, so the row stays leased to the dead relay only until the
    lease runs out, and the next relay takes it then. At least once: never zero."""
    hold = threading.Event()
    sink = sink_factory(hold=hold)
    lease = 1.0
    env = _env(tmp_path, sink, MAILLAB_SMTP_TIMEOUT="10", MAILLAB_OUTBOX_LEASE=f"{lease:g}")
    app = make_app("outbox", INSTANCE_DIR=env["MAILLAB_INSTANCE_DIR"], SMTP_PORT=sink.port)
    assert register_json(app.test_client(), "o8@maillab.test").status_code == 202
    first = spawn(["relay"], env, "consuming")
    wait_until(lambda: sink.handler.data_attempts == 1, what="the relay mid-send")
    claimed = rows(app)[0].lease_until or 0
    wait_until(lambda: (rows(app)[0].lease_until or 0) > claimed + lease,
               what="the live relay renewing its lease past the first one")
    first.stop(timeout=0, sig=signal.SIGKILL)
    hold.set()
    [held] = rows(app)
    assert held.sent_at is None and held.lease_until is not None
    spawn(["relay"], env, "consuming")
    sink.handler.wait_for("o8@maillab.test", timeout=20)
    wait_until(lambda: rows(app)[0].sent_at is not None, what="the row marked sent")
    [sent] = rows(app)
    assert sent.claimed_by != held.claimed_by
    assert (sent.sent_at or 0) > held.lease_until  # not before the dead relay's lease ran out
    assert len(sink.handler.for_address("o8@maillab.test")) >= 1

