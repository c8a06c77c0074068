"""Real SMTP clients against a running server: capture, latency per phase, concurrency."""

from __future__ import annotations

import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fakesmtp.latency import PHASES

MSG = b"Subject: t\r\n\r\nbody https://app.test/verify/abc\r\n"


def test_capture_with_several_recipients(server, smtp_client, message) -> None:
    before = time.time()
    client = smtp_client(server)
    refused = client.sendmail(
        "app@example.test", ["a@x.test", "B@x.test", "c@y.test"],
        message("a@x.test", "Welcome", "Click https://app.test/verify/t0k?x=1 now.\r\n"),
    )
    after = time.time()
    assert refused == {}
    msg = server.wait_for_message("b@x.test", timeout=5)
    assert msg is not None
    assert msg.rcpt_tos == ("a@x.test", "B@x.test", "c@y.test")
    assert msg.mail_from == "app@example.test"
    assert msg.subject == "Welcome" and msg.header("To") == "a@x.test"
    assert msg.links == ("https://app.test/verify/t0k?x=1",)
    assert before <= msg.received_at <= after
    assert msg.size == len(msg.raw) > 0
    assert [m.id for m in server.messages(to="c@y.test")] == [msg.id]
    assert server.stats()["received"] == 1


def test_banner_names_the_configured_host(make_server, raw_session) -> None:
    server = make_server(server_hostname="mx.lab.test")
    session = raw_session(server)
    assert session.reply()[0].startswith(b"220 mx.lab.test ")
    assert session.command(b"EHLO me")[0] == b"250-mx.lab.test"
    assert session.command(b"HELO me") == [b"250 mx.lab.test"]


def _timed_session(server, raw_session) -> dict[str, float]:
    """Run one full transaction on a raw socket; seconds each phase took, client-side."""
    times: dict[str, float] = {}

    def step(phase: str, send: bytes, expect: bytes) -> None:
        started = time.perf_counter()
        reply = session.command(send)
        times[phase] = time.perf_counter() - started
        assert reply and reply[-1].startswith(expect), (phase, reply)

    started = time.perf_counter()
    session = raw_session(server)
    assert session.reply()[0].startswith(b"220")
    times["connect"] = time.perf_counter() - started
    step("ehlo", b"EHLO client.test", b"250")
    step("mail", b"MAIL FROM:<a@x.test>", b"250")
    step("rcpt", b"RCPT TO:<b@x.test>", b"250")
    step("data", b"DATA", b"354")
    step("eom", MSG + b".", b"250")
    step("quit", b"QUIT", b"221")
    return times


@pytest.mark.parametrize("phase", PHASES)
def test_latency_lands_in_its_phase(phase, make_server, raw_session) -> None:
    server = make_server(latency={phase: "150ms"})
    times = _timed_session(server, raw_session)
    assert 0.14 <= times[phase] < 1.5, times
    assert max(times, key=times.__getitem__) == phase, times  # that phase, and only it, is slow
    assert all(t < 0.14 for p, t in times.items() if p != phase), times
    lat = server.stats()["latency"][phase]
    assert lat["count"] == 1 and lat["injected_p50_ms"] == 150.0
    assert lat["observed_p50_ms"] >= 149.0


def test_latency_distribution_is_seeded(make_server, raw_session) -> None:
    def draws(seed: int) -> list[float | None]:
        server = make_server(latency={"rcpt": "uniform:1ms..30ms"}, seed=seed)
        for _ in range(3):
            _timed_session(server, raw_session)
        lat = server.stats()["latency"]["rcpt"]
        return [lat["injected_p50_ms"], lat["injected_p99_ms"]]

    assert draws(11) == draws(11)
    assert draws(11) != draws(12)


def test_one_slow_session_never_delays_another(make_server, message) -> None:
    server = make_server(latency={"eom": "300ms"})

    def send(i: int) -> float:
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.sendmail("a@x.test", [f"user{i}@x.test"], message(f"user{i}@x.test"))
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        durations = list(pool.map(send, range(20)))
    wall = time.perf_counter() - started
    assert min(durations) >= 0.29
    assert wall < 3.0  # 20 x 300 ms one after another would be 6 s
    assert server.stats()["received"] == 20


def test_hanging_session_does_not_block_others(make_server, raw_session, smtp_client) -> None:
    server = make_server(faults=["id=h,phase=eom,action=hang,to=*@slow.test"])
    hung = raw_session(server, timeout=0.5)
    hung.reply()
    for line in (b"HELO me", b"MAIL FROM:<a@x.test>", b"RCPT TO:<z@slow.test>", b"DATA"):
        hung.command(line)
    hung.send(MSG + b".\r\n")
    blocked = threading.Event()

    def read_reply() -> None:
        try:
            hung.reply()
        except TimeoutError:
            blocked.set()

    reader = threading.Thread(target=read_reply)
    reader.start()
    client = smtp_client(server)
    assert client.sendmail("a@x.test", ["fast@x.test"], MSG) == {}
    reader.join()
    assert blocked.is_set()  # the hung one still has no answer
    assert server.stats()["actions"] == {"hang": 1}
    assert [m.rcpt_tos for m in server.messages()] == [("fast@x.test",)]
