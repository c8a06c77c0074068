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


# A plain session has no STARTTLS or AUTH: test_fakesmtp_tls.py delays those.
@pytest.mark.parametrize("phase", [p for p in PHASES if p not in ("starttls", "auth")])
def test_latency_lands_in_its_phase(phase, make_server, raw_session) -> None:
    server = make_server(latency={phase: "150ms"})
    times = _timed_session(server, raw_session)
    # Which phases were delayed is read from the server's record, not from a stopwatch: on a
    # busy machine an undelayed phase can take longer than 150 ms. Only floors are timed, as
    # a phase cannot take less than the latency injected into it.
    assert times[phase] >= 0.14, times
    latency = server.stats()["latency"]
    assert {p for p, lat in latency.items() if lat["count"]} == {phase}, latency
    lat = latency[phase]
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


def test_concurrent_sessions_each_wait_their_own_latency(make_server, message) -> None:
    server = make_server(latency={"eom": "300ms"})

    def send(i: int) -> float:
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
            client.sendmail("a@x.test", [f"user{i}@x.test"], message(f"user{i}@x.test"))
        return time.perf_counter() - started

    with ThreadPoolExecutor(20) as pool:
        durations = list(pool.map(send, range(20)))
    assert min(durations) >= 0.29  # a floor: no session skipped its latency
    stats = server.stats()
    assert stats["received"] == 20
    assert stats["latency"]["eom"]["count"] == 20
    assert stats["latency"]["eom"]["injected_p99_ms"] == 300.0


def test_one_slow_session_never_delays_another(make_server, raw_session) -> None:
    # Shown by order, not by a stopwatch: a session asleep in an eom latency far longer than
    # the test stays unanswered while a second session gets every reply it asks for.
    server = make_server(latency={"eom": "60s"})
    slow = raw_session(server)
    assert slow.reply()[0].startswith(b"220")
    for line, code in ((b"EHLO slow.test", b"250"), (b"MAIL FROM:<a@x.test>", b"250"),
                       (b"RCPT TO:<slow@x.test>", b"250"), (b"DATA", b"354")):
        assert slow.command(line)[-1].startswith(code), line
    slow.send(MSG + b".\r\n")  # the final dot: this session now sleeps for a minute
    fast = raw_session(server)
    assert fast.reply()[0].startswith(b"220")
    # Up to 354: the body's final dot would put this session to sleep in eom as well.
    for line, code in ((b"EHLO fast.test", b"250"), (b"MAIL FROM:<a@x.test>", b"250"),
                       (b"RCPT TO:<fast@x.test>", b"250"), (b"DATA", b"354")):
        assert fast.command(line)[-1].startswith(code), line
    assert server.messages() == []  # the slow message is still waiting for its reply
    slow.sock.settimeout(0.2)  # waiting for an absence: any wait would do, this one is short
    with pytest.raises(TimeoutError):
        slow.reply()


def test_hanging_session_does_not_block_others(make_server, raw_session, smtp_client) -> None:
    server = make_server(faults=["id=h,phase=eom,action=hang,to=*@slow.test"])
    hung = raw_session(server)
    hung.reply()
    for line in (b"HELO me", b"MAIL FROM:<a@x.test>", b"RCPT TO:<z@slow.test>", b"DATA"):
        hung.command(line)
    hung.send(MSG + b".\r\n")
    # Only the read expected to go unanswered gets a short timeout; the replies above get
    # the default, so a slow machine cannot fail them.
    hung.sock.settimeout(0.5)
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
