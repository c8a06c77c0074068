"""Bad clients: the server answers per RFC or drops that one connection, and keeps serving."""

from __future__ import annotations

import smtplib
import socket
import struct

import pytest

MSG = b"Subject: t\r\n\r\nbody\r\n"


def _still_serving(server) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=5) as client:
        assert client.sendmail("a@x.test", ["after@x.test"], MSG) == {}
    assert server.wait_for_message("after@x.test", timeout=5) is not None


def test_garbage_commands(server, raw_session) -> None:
    session = raw_session(server)
    session.reply()
    assert session.command(b"FROBNICATE now")[0].startswith(b"500 ")
    assert session.command(b"\xff\xfe\x00binary")[0].startswith(b"500 ")
    assert session.command(b"")[0].startswith(b"500 ")
    assert session.command(b"MAIL FROM:<a@x.test>")[0].startswith(b"503 ")  # no HELO yet
    assert session.command(b"RCPT TO:<b@x.test>")[0].startswith(b"503 ")
    assert session.command(b"EHLO me")[-1].startswith(b"250 ")
    assert session.command(b"MAIL FROM:garbage<<")[0][:1] == b"5"
    assert session.command(b"DATA")[0].startswith(b"503 ")
    assert session.command(b"NOOP") == [b"250 OK"]
    assert session.command(b"HELP") == [
        b"250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"]
    assert session.command(b"HELP EHLO") == [b"250 Syntax: EHLO hostname"]
    assert server.stats()["rejected"]["by_code"]["500"] == 3
    _still_serving(server)


def test_over_long_command_line(server, raw_session) -> None:
    session = raw_session(server)
    session.reply()
    assert session.command(b"EHLO " + b"x" * 5000)[0] == b"500 Command line too long"
    assert session.command(b"NOOP") == [b"250 OK"]
    _still_serving(server)


def test_over_long_body_line(server, raw_session) -> None:
    session = raw_session(server)
    session.reply()
    for line in (b"HELO me", b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@x.test>", b"DATA"):
        session.command(line)
    reply = session.command(b"Subject: x\r\n\r\n" + b"y" * 3000 + b"\r\n.")
    assert reply[0].startswith(b"500 Line too long")
    assert server.messages() == []
    _still_serving(server)


def test_oversize_message(make_server, smtp_client, raw_session) -> None:
    server = make_server(data_size_limit=2000)
    client = smtp_client(server)
    client.ehlo()
    assert client.has_extn("size") and client.esmtp_features["size"] == "2000"
    big = b"Subject: big\r\n\r\n" + (b"z" * 70 + b"\r\n") * 60
    # Declared (smtplib sends SIZE=): refused at MAIL FROM.
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        client.sendmail("a@x.test", ["b@x.test"], big)
    assert info.value.smtp_code == 552
    # Undeclared: the body is read to the end, then refused; the session goes on.
    session = raw_session(server)
    session.reply()
    for line in (b"EHLO me", b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@x.test>", b"DATA"):
        session.command(line)
    assert session.command(big + b".")[0].startswith(b"552 ")
    for line in (b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@x.test>", b"DATA"):
        session.command(line)
    assert session.command(MSG + b".")[0].startswith(b"250 ")
    assert [m.subject for m in server.messages()] == ["t"]
    assert server.stats()["rejected"]["by_code"] == {"552": 2}


def test_client_vanishes_mid_data(server, raw_session, until) -> None:
    session = raw_session(server)
    session.reply()
    for line in (b"HELO me", b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@x.test>"):
        session.command(line)
    assert session.command(b"DATA")[0].startswith(b"354")
    session.send(b"Subject: half\r\n\r\nthe first half of")
    session.close()
    assert until(lambda: server.stats()["aborted_sessions"] == 1)
    assert until(lambda: server.stats()["connections"]["open"] == 0)
    assert server.messages() == []
    _still_serving(server)


def test_client_resets_mid_data(server, raw_session, until) -> None:
    session = raw_session(server)
    session.reply()
    for line in (b"HELO me", b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@x.test>", b"DATA"):
        session.command(line)
    session.send(b"Subject: half\r\n\r\npartial")
    # SO_LINGER 0: close with RST instead of FIN, like a crashed client.
    session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    session.close()
    assert until(lambda: server.stats()["connections"]["open"] == 0)
    _still_serving(server)


@pytest.mark.parametrize("latency", [None, {"connect": "50ms"}])
def test_hundreds_of_connections_opened_and_dropped(make_server, until, latency) -> None:
    # With a banner delay, every one of them leaves while the server is still sleeping.
    server = make_server(latency=latency)
    n = 300
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", server.smtp_port), timeout=5)
        if i % 3 == 1 and latency is None:
            sock.recv(100)  # read the banner first
        elif i % 3 == 2:
            sock.sendall(b"EHLO half-a-comm")  # leave mid-command
        sock.close()
    assert until(lambda: server.stats()["connections"]["total"] == n, timeout=20)
    assert until(lambda: server.stats()["connections"]["open"] == 0, timeout=20)
    _still_serving(server)
