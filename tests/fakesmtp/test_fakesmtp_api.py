"""The HTTP control API: messages, long-poll, config, reset, stats, metrics, inbox page."""

from __future__ import annotations

import smtplib
import threading
import time

import pytest

MSG = b"Subject: t\r\n\r\nbody https://app.test/verify/abc\r\n"


def _send(server, to: str, body: bytes = MSG) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.sendmail("a@x.test", [to], body)


def test_list_get_raw_delete(server, api) -> None:
    assert api.get("/api/messages") == []
    _send(server, "bob@x.test")
    _send(server, "eve@x.test")
    listed = api.get("/api/messages")
    assert [m["rcpt_tos"] for m in listed] == [["eve@x.test"], ["bob@x.test"]]  # newest first
    (bob,) = api.get("/api/messages?to=BOB@x.test")
    assert bob["links"] == ["https://app.test/verify/abc"]
    assert bob["subject"] == "t" and isinstance(bob["received_at"], float)
    assert api.get(f"/api/messages/{bob['id']}") == bob
    assert "verify/abc" in api.get(f"/api/messages/{bob['id']}/raw")
    assert api.get("/api/messages?limit=1")[0]["rcpt_tos"] == ["eve@x.test"]
    assert api.get(f"/api/messages?since={bob['received_at']}")[0]["rcpt_tos"] == ["eve@x.test"]
    status, body = api.request("GET", "/api/messages/m999")
    assert status == 404 and body["field"] == "id"
    assert api.request("DELETE", "/api/messages") == (200, {"deleted": 2})
    assert api.get("/api/messages") == []


def test_recipients_counts_every_kept_message_with_no_page_limit(make_server,
                                                                 api_for) -> None:
    """What a bench needs after a cell, however many emails it had: per address, how many
    came and when the first did; a server that evicted some says it kept fewer than it got."""
    server = make_server(max_messages=3)
    api = api_for(server)
    assert api.get("/api/recipients") == {"recipients": {}, "kept": 0}
    _send(server, "Bob@x.test")
    _send(server, "bob@x.test")
    _send(server, "eve@x.test")
    found = api.get("/api/recipients")
    assert {a: r["count"] for a, r in found["recipients"].items()} == {"bob@x.test": 2,
                                                                       "eve@x.test": 1}
    first = api.get("/api/messages?to=bob@x.test")[-1]["received_at"]
    assert found["recipients"]["bob@x.test"]["first_at"] == first and found["kept"] == 3
    _send(server, "zed@x.test")  # the oldest (Bob's first) is evicted
    found = api.get("/api/recipients")
    assert found["kept"] == 3 and found["recipients"]["bob@x.test"]["count"] == 1
    assert server.stats()["received"] == 4  # more received than kept: the bench sees it


def test_long_poll_returns_when_the_message_lands(server, api, until) -> None:
    result: list[tuple[float, list]] = []

    def poll() -> None:
        found = api.get("/api/messages?to=late@x.test&wait=30")
        result.append((time.monotonic(), found))

    poller = threading.Thread(target=poll)
    poller.start()
    assert until(lambda: server.stats()["long_polls_waiting"] == 1)
    assert not result  # still waiting: nothing for late@ yet
    _send(server, "other@x.test")  # someone else's mail does not wake it
    sent_at = time.monotonic()
    _send(server, "late@x.test")
    poller.join(30)
    returned, found = result[0]
    # Woken by the message, not by the 30 s deadline: a poll that times out returns [].
    assert [m["rcpt_tos"] for m in found] == [["late@x.test"]]
    assert returned >= sent_at  # not before the message
    assert server.stats()["long_polls_waiting"] == 0


def test_long_poll_ignores_other_recipients_and_times_out_empty(server, api) -> None:
    sender = threading.Timer(0.1, _send, (server, "other@x.test"))
    sender.start()
    started = time.monotonic()
    assert api.get("/api/messages?to=nobody@x.test&wait=0.6") == []
    sender.join()
    assert time.monotonic() - started >= 0.55


def test_long_poll_without_to_waits_for_any_and_since_filters_old(server, api) -> None:
    _send(server, "old@x.test")
    old = api.get("/api/messages")[0]
    threading.Timer(0.2, _send, (server, "new@x.test")).start()
    found = api.get(f"/api/messages?since={old['received_at']}&wait=10")
    assert [m["rcpt_tos"] for m in found] == [["new@x.test"]]


def test_without_wait_returns_at_once(api) -> None:
    # The socket timeout is a sanity ceiling, not a speed claim: a query takes milliseconds,
    # and a request that long-polled by mistake would never be answered (nothing arrives).
    assert api.get("/api/messages?to=x@x.test", timeout=10.0) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("wait=soon", "wait"), ("wait=-1", "wait"), ("wait=nan", "wait"), ("since=x", "since"),
     ("limit=0", "limit")],
)
def test_bad_query_is_400_naming_the_field(api, query, field) -> None:
    status, body = api.request("GET", f"/api/messages?{query}")
    assert status == 400 and body["field"] == field and body["error"]


def test_config_patch_merges(make_server, api_for) -> None:
    server = make_server(latency={"eom": "200ms", "rcpt": "10ms"}, faults=["id=a,phase=eom"])
    api = api_for(server)
    status, config = api.patch({"latency": {"eom": "500ms", "mail": "uniform:1ms..2ms"}})
    assert status == 200
    assert config["latency"]["eom"] == "500ms"
    assert config["latency"]["rcpt"] == "10ms"  # left out, so kept
    assert config["latency"]["mail"] == "uniform:1ms..2ms"
    assert [f["id"] for f in config["faults"]] == ["a"]
    assert api.get("/api/config") == config == server.config.to_json()
    status, config = api.patch({"faults": [{"id": "b", "phase": "rcpt", "reply": 550,
                                            "to": "*@fail.test"},
                                           "id=c,phase=mail,every=2"]})
    assert [f["id"] for f in config["faults"]] == ["b", "c"]
    assert config["latency"]["eom"] == "500ms"
    # From Python, the same thing:
    assert server.patch_config({"latency": {"eom": None}}).latency.get("eom") is None


def test_patch_takes_effect_on_the_next_session(server, api) -> None:
    api.patch({"faults": [{"id": "x", "phase": "rcpt", "reply": 550}]})
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(server, "bob@x.test")
    api.patch({"faults": []})
    _send(server, "bob@x.test")
    assert len(api.get("/api/messages")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"latency": {"eom": "fast"}}', "latency.eom"),
        (b'{"latency": {"bogus": "1s"}}', "latency.bogus"),
        (b'{"faults": [{"phase": "eom", "reply": 200}]}', "faults[0].reply"),
        (b'{"faults": [{"phase": "eom", "prob": 2}]}', "faults[0].prob"),
        (b'{"seed": "x"}', "seed"),
        (b'{"colour": "red"}', "colour"),
    ],
)
def test_bad_config_is_400_and_changes_nothing(server, api, body, field) -> None:
    before = api.get("/api/config")
    status, error = api.request("PATCH", "/api/config", raw_body=body)
    assert status == 400 and error["field"] == field, error
    if field == "latency.eom":
        assert "uniform:100ms..300ms" in error["error"]  # shows the accepted forms
    if field == "latency.bogus":
        assert "phases: connect, ehlo" in error["error"]
    assert api.get("/api/config") == before
    _send(server, "still@x.test")  # and the server keeps running


def test_reset_restores_startup_state(make_server, api_for) -> None:
    server = make_server(latency={"eom": "1ms"}, seed=3)
    api = api_for(server)
    start = api.get("/api/config")
    _send(server, "a@x.test")
    api.patch({"latency": {"eom": "2s"}, "faults": ["phase=mail"], "seed": 99})
    status, config = api.request("POST", "/api/reset")
    assert status == 200 and config == start
    assert api.get("/api/messages") == []
    stats = api.get("/api/stats")
    assert stats["received"] == 0 and stats["connections"]["total"] == 0


def test_stats_and_metrics(make_server, api_for) -> None:
    server = make_server(
        latency={"eom": "20ms"}, faults=["id=r9,phase=rcpt,reply=550,to=*@no.test"]
    )
    api = api_for(server)
    _send(server, "yes@x.test")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(server, "x@no.test")
    stats = api.get("/api/stats")
    assert stats["received"] == 1
    assert stats["rejected"] == {"total": 1, "by_code": {"550": 1}, "by_rule": {"r9": 1}}
    assert stats["connections"]["total"] == 2
    eom = stats["latency"]["eom"]
    assert eom["count"] == 1 and eom["injected_p50_ms"] == 20.0
    assert eom["observed_p99_ms"] >= 19.0
    # Lateness: what the server waited beyond what it drew, and the bound the bench holds to.
    assert eom["lateness_p99_ms"] == pytest.approx(
        eom["observed_p99_ms"] - eom["injected_p99_ms"], abs=0.002)
    assert eom["lateness_bound_ms"] == 10.0
    assert eom["within_bound"] is (eom["lateness_p99_ms"] <= 10.0)
    assert stats["latency"]["mail"]["lateness_p99_ms"] is None  # no latency there
    assert stats["latency"]["mail"]["within_bound"] is None
    text = api.get("/metrics")
    assert 'fakesmtp_latency_lateness_seconds{phase="eom",quantile="0.99"} ' in text
    assert "fakesmtp_messages_received_total 1" in text
    assert 'fakesmtp_fault_hits_total{rule="r9"} 1' in text
    assert 'fakesmtp_replies_rejected_total{code="550"} 1' in text
    assert 'fakesmtp_latency_injected_seconds{phase="eom",quantile="0.5"} 0.02' in text


def test_eviction_is_counted(make_server, api_for) -> None:
    server = make_server(max_messages=3)
    api = api_for(server)
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        for i in range(5):
            client.sendmail("a@x.test", [f"u{i}@x.test"], MSG)
    assert [m["rcpt_tos"][0] for m in api.get("/api/messages")] == [
        "u4@x.test", "u3@x.test", "u2@x.test"]
    assert api.get("/api/messages?to=u0@x.test") == []
    stats = api.get("/api/stats")
    assert stats["evicted"] == 2 and stats["stored"] == 3 and stats["received"] == 5


def test_inbox_page_escapes_everything(make_server, api_for) -> None:
    server = make_server(faults=["id=x,phase=eom,reply=451,text=<b>no</b>,to=*@never.test"])
    api = api_for(server)
    _send(server, "bob@x.test",
          b"Subject: <script>alert(1)</script>\r\n\r\nhttps://app.test/v?a=1&b=<x>\r\n")
    page = api.get("/")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>no</b>" not in page and "&lt;b&gt;no&lt;/b&gt;" in page
    assert "https://app.test/v?a=1&amp;b=" in page
    assert "bob@x.test" in page and "<h2>Latency</h2>" in page
