"""The relay's heartbeat: a live relay's row is never claimed by another, however long the SMTP
server holds its send; a row another relay did take is renewed no more, and its failure is
left to that relay."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from apps.outbox.models import OutboxRow
from apps.outbox.relay import Relay
from tests.conftest import wait_until
from tests.flow_helpers import register_json
from tests.smtp_sink import Sink
from tests.test_outbox import _database, rows

LEASE = 1.0


@pytest.mark.parametrize("store", [
    "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_send_held_past_the_lease_keeps_its_row_and_is_delivered_once(
        store: str, make_app: Callable[..., Flask], sink_factory: Callable[..., Sink]) -> None:
    """The SMTP server holds the final dot for three leases while a second relay polls the
    same outbox every 5 ms: the sending relay's heartbeat keeps the row, so it is sent once.
    The SMTP timeout is far above the lease, which the relay once refused."""
    hold = threading.Event()
    server = sink_factory(hold=hold)
    with _database(store) as url:
        config = {"DATABASE_URL": url} if url else {}
        app = make_app("outbox", SMTP_PORT=server.port, OUTBOX_LEASE=LEASE, SMTP_TIMEOUT=10.0,
                       **config)
        assert register_json(app.test_client(), "l1@maillab.test").status_code == 202
        relays = [Relay(app, threads=2, name="relay-a"), Relay(app, threads=2, name="relay-b")]
        threads = [threading.Thread(target=r.run) for r in relays]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: server.handler.data_attempts == 1, what="a relay mid-send")
            [claimed] = rows(app)
            assert claimed.lease_until is not None
            claimed_at = claimed.lease_until - LEASE
            # A renewal made three leases after the claim: the send has been held that long,
            # and without the heartbeat the other relay would have taken the row within
            # milliseconds of its first lease running out.
            wait_until(lambda: (rows(app)[0].lease_until or 0) > claimed_at + 4 * LEASE,
                       timeout=15, what="the lease renewed three leases after the claim")
            assert rows(app)[0].claimed_by == claimed.claimed_by
            assert server.handler.data_attempts == 1
            hold.set()
            server.handler.wait_for("l1@maillab.test", timeout=10)
            wait_until(lambda: rows(app)[0].sent_at is not None, what="the row marked sent")
        finally:
            hold.set()
            for relay in relays:
                relay.stop()
            for thread in threads:
                thread.join(30)
        assert len(server.handler.messages) == 1 and server.handler.data_attempts == 1
        assert sorted(r.stats()["emails_delivered_total"] for r in relays) == [0, 1]
        assert rows(app)[0].lease_until is None
        assert all(r.leases.held() == [] for r in relays)  # renewing nothing once sent
        app.extensions["maillab.db"].engine.dispose()


def test_a_row_another_relay_took_is_renewed_no_more_and_keeps_its_new_lease(
        make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture) -> None:
    """A relay whose renewals came too late (its store was away longer than the lease) finds
    the row taken: it says so, stops renewing it, and its failure does not release or
    reschedule the row under the relay now sending it; its delivery is still recorded."""
    app = make_app("outbox", OUTBOX_LEASE=LEASE)
    register_json(app.test_client(), "l2@maillab.test")
    first, second = Relay(app, name="relay-a"), Relay(app, name="relay-b")
    [row] = first.claim(1)
    lease = first.leases.hold(row["id"], first.owner, row["lease_until"])
    assert first.leases.renew() == 1
    assert rows(app)[0].lease_until == lease.until >= row["lease_until"]

    _expire(app)
    [taken] = second.claim(1)
    with caplog.at_level(logging.WARNING, logger="apps.outbox.lease"):
        assert first.leases.renew() == 0
    assert "taken while it was still sending" in caplog.text
    assert "now leased to relay-b" in caplog.text
    assert lease.ended and first.leases.renew() == 0

    assert not first.leases.settle(lease, {"attempts": 1, "due_at": 0.0, "last_error": "451"})
    [now] = rows(app)
    assert (now.claimed_by, now.lease_until, now.attempts) == (
        "relay-b", taken["lease_until"], 0)

    assert not first.leases.settle(lease, {"sent_at": 1.0}, whoever_holds_it=True)
    assert rows(app)[0].sent_at == 1.0


def test_a_store_that_is_away_is_logged_once_and_renewing_resumes(
        make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app("outbox", OUTBOX_LEASE=LEASE)
    register_json(app.test_client(), "l3@maillab.test")
    relay = Relay(app, name="relay-a")
    [row] = relay.claim(1)
    relay.leases.hold(row["id"], relay.owner, row["lease_until"])

    def away() -> Any:
        raise OperationalError("UPDATE outbox", {}, Exception("the store is away"))

    with caplog.at_level(logging.WARNING, logger="apps.outbox.lease"):
        with monkeypatch.context() as patch:
            patch.setattr(relay.leases, "sessions", away)
            assert relay.leases.renew() == 0 and relay.leases.renew() == 0
        assert relay.leases.renew() == 1  # the row was still its own: renewed late
    assert caplog.text.count("cannot renew the outbox leases") == 1
    assert "renewing the outbox leases again" in caplog.text


def _expire(app: Flask) -> None:
    with app.extensions["maillab.db"].sessions() as session:
        session.execute(update(OutboxRow).values(lease_until=0.0))
        session.commit()
