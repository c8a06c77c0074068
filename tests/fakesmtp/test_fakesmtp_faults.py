"""Fault rules seen by real clients: replies, actions, triggers, recipient matching."""

from __future__ import annotations

import smtplib
import socket

import pytest

MSG = b"Subject: t\r\n\r\nbody\r\n"

# (phase, the command that enters it); connect is the banner itself.
STEPS = [
    ("ehlo", b"EHLO me"),
    ("mail", b"MAIL FROM:<a@x.test>"),
    ("rcpt", b"RCPT TO:<b@x.test>"),
    ("data", b"DATA"),
    ("eom", MSG + b"."),
    ("quit", b"QUIT"),
]


def _walk_to(session, phase: str) -> list[bytes]:
    """Drive a raw session up to ``phase`` and return the reply that phase produced."""
    banner = session.reply()
    if phase == "connect":
        return banner
    for name, line in STEPS:
        reply = session.command(line)
        if name == phase:
            return reply
    raise AssertionError(phase)


@pytest.mark.parametrize("phase", ["connect", "ehlo", "mail", "rcpt", "data", "eom", "quit"])
def test_reply_fault_in_each_phase_names_its_rule(phase, make_server, raw_session) -> None:
    server = make_server(faults=[f"id=bad-{phase},phase={phase},reply=554"])
    session = raw_session(server)
    reply = _walk_to(session, phase)
    assert reply[-1] == f"554 Transaction failed [fakesmtp rule=bad-{phase}]".encode()
    stats = server.stats()
    assert stats["rejected"]["by_rule"] == {f"bad-{phase}": 1}
    assert stats["rejected"]["by_code"] == {"554": 1}
    assert stats["received"] == (1 if phase == "quit" else 0)  # QUIT comes after the 250


def test_421_closes_the_connection(make_server, raw_session) -> None:
    server = make_server(faults=["id=busy,phase=mail,reply=421"])
    session = raw_session(server)
    assert _walk_to(session, "mail")[0].startswith(b"421 ")
    assert session.reply() == []  # EOF: the server hung up


def test_disconnect_closes_without_reply(make_server, raw_session, smtp_client) -> None:
    server = make_server(faults=["id=cut,phase=rcpt,action=disconnect"])
    session = raw_session(server)
    assert _walk_to(session, "rcpt") == []
    assert server.stats()["actions"] == {"disconnect": 1}
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp_client(server).sendmail("a@x.test", ["b@x.test"], MSG)


def test_drop_cuts_the_message_mid_data(make_server, smtp_client, until) -> None:
    server = make_server(faults=["id=drop,phase=data,action=drop,first=1"])
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        smtp_client(server).sendmail("a@x.test", ["b@x.test"], MSG * 50)
    assert until(lambda: server.stats()["connections"]["open"] == 0)
    stats = server.stats()
    assert stats["actions"] == {"drop": 1} and stats["received"] == 0
    assert stats["aborted_sessions"] == 0  # our own cut is not the client vanishing
    assert smtp_client(server).sendmail("a@x.test", ["b@x.test"], MSG) == {}


def test_drop_at_eom_stores_the_message_and_cuts_the_reply(make_server, smtp_client,
                                                           until) -> None:
    """The sender cannot know the message arrived: a retry would deliver it twice."""
    server = make_server(faults=["id=cut,phase=eom,action=drop,first=1"])
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        smtp_client(server).sendmail("a@x.test", ["b@x.test"], MSG)
    assert until(lambda: server.stats()["connections"]["open"] == 0)
    stats = server.stats()
    assert stats["actions"] == {"drop": 1} and stats["received"] == 1
    assert smtp_client(server).sendmail("a@x.test", ["b@x.test"], MSG) == {}  # the retry
    assert server.stats()["received"] == 2


def test_hang_never_answers(make_server, raw_session, until) -> None:
    server = make_server(faults=["id=h,phase=ehlo,action=hang"])
    session = raw_session(server)
    session.reply()
    session.sock.settimeout(0.3)  # short only for the reply that must never come
    with pytest.raises(TimeoutError):
        session.command(b"EHLO me")
    session.close()  # the client gives up; the server lets the session go
    assert until(lambda: server.stats()["connections"]["open"] == 0)


def test_first_n_then_succeed(make_server, smtp_client) -> None:
    server = make_server(faults=["id=f,phase=eom,reply=451,first=2"])
    client = smtp_client(server)
    codes = []
    for _ in range(4):
        try:
            client.sendmail("a@x.test", ["b@x.test"], MSG)
            codes.append(250)
        except smtplib.SMTPDataError as err:
            codes.append(err.smtp_code)
            assert b"[fakesmtp rule=f]" in err.smtp_error
    assert codes == [451, 451, 250, 250]
    assert len(server.messages()) == 2


def test_every_nth(make_server, smtp_client) -> None:
    server = make_server(faults=["id=e,phase=rcpt,reply=452,every=3"])
    client = smtp_client(server)
    refused = client.sendmail("a@x.test", [f"u{i}@x.test" for i in range(7)], MSG)
    assert sorted(refused) == ["u2@x.test", "u5@x.test"]
    assert refused["u2@x.test"][0] == 452


def _prob_pattern(make_server, seed: int) -> list[bool]:
    server = make_server(faults=["id=p,phase=mail,reply=451,prob=0.5"], seed=seed)
    pattern = []
    for _ in range(12):  # one session each: draws come from the per-session seeded RNG
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=5) as client:
            client.ehlo()
            pattern.append(client.mail("a@x.test")[0] == 451)
    return pattern


def test_probability_is_seeded(make_server) -> None:
    first = _prob_pattern(make_server, 5)
    assert first == _prob_pattern(make_server, 5)
    assert any(first) and not all(first)


def test_rate_limit(make_server, smtp_client) -> None:
    server = make_server(faults=["id=rl,phase=mail,rate=3,reply=451"])
    client = smtp_client(server)
    client.ehlo()
    codes = []
    for _ in range(6):
        codes.append(client.mail("a@x.test")[0])
        client.rset()
    assert codes == [250, 250, 250, 451, 451, 451]
    assert server.stats()["rejected"]["by_rule"] == {"rl": 3}


def test_rate_limit_default_is_421(make_server, raw_session) -> None:
    server = make_server(faults=["id=rl,phase=mail,rate=0"])
    reply = _walk_to(raw_session(server), "mail")
    assert reply == [b"421 Rate limit exceeded; try again later [fakesmtp rule=rl]"]


def test_too_many_connections(make_server, raw_session, until) -> None:
    server = make_server(faults=["id=cc,phase=connect,conns=2"])
    first, second = raw_session(server), raw_session(server)
    assert first.reply()[0].startswith(b"220") and second.reply()[0].startswith(b"220")
    third = raw_session(server)
    assert third.reply() == [b"421 Too many connections; try again later [fakesmtp rule=cc]"]
    assert third.reply() == []  # and closed
    assert first.command(b"QUIT")[0].startswith(b"221")
    # A slot is free again once the server has seen the first one go.
    assert until(lambda: server.stats()["connections"]["open"] == 1)
    assert raw_session(server).reply()[0].startswith(b"220")


def test_recipient_pattern_only_hits_matching_recipients(make_server, smtp_client) -> None:
    server = make_server(faults=["id=nx,phase=rcpt,reply=550,to=*@fail.test"])
    refused = smtp_client(server).sendmail(
        "a@x.test", ["ok@pass.test", "bad@fail.test", "BAD2@FAIL.TEST"], MSG
    )
    assert {k: v[0] for k, v in refused.items()} == {"bad@fail.test": 550, "BAD2@FAIL.TEST": 550}
    assert b"rule=nx" in refused["bad@fail.test"][1]
    (msg,) = server.messages()
    assert msg.rcpt_tos == ("ok@pass.test",)


def test_recipient_pattern_at_eom(make_server, smtp_client) -> None:
    server = make_server(faults=["id=q,phase=eom,reply=552,to=*@full.test"])
    client = smtp_client(server)
    assert client.sendmail("a@x.test", ["ok@x.test"], MSG) == {}
    with pytest.raises(smtplib.SMTPDataError) as info:
        client.sendmail("a@x.test", ["ok@x.test", "u@full.test"], MSG)
    assert info.value.smtp_code == 552
    assert len(server.messages()) == 1


def test_socket_level_refusal_is_counted(make_server) -> None:
    server = make_server(faults=["id=c,phase=connect,reply=554"])
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=5) as sock:
        assert sock.makefile("rb").readline().startswith(b"554 ")
    assert server.stats()["rejected"]["by_code"] == {"554": 1}


def test_api_faults_names_what_each_recipient_met(make_server, smtp_client, api_for) -> None:
    """Per address, so a client can tell a permanent refusal of one sign-up's email from a
    transient one or a loss; reset forgets it with the rest of the stats."""
    server = make_server(faults=["id=gone,phase=rcpt,reply=550,to=gone@x.test",
                                 "id=later,phase=rcpt,reply=451,to=Later@x.test,first=1",
                                 "id=cut,phase=eom,action=drop,to=cut@x.test"])
    api = api_for(server)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp_client(server).sendmail("a@x.test", ["gone@x.test"], MSG)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp_client(server).sendmail("a@x.test", ["later@x.test"], MSG)
    assert smtp_client(server).sendmail("a@x.test", ["later@x.test"], MSG) == {}
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        smtp_client(server).sendmail("a@x.test", ["cut@x.test"], MSG)
    assert smtp_client(server).sendmail("a@x.test", ["fine@x.test"], MSG) == {}
    assert api.get("/api/faults") == {
        "recipients": {"gone@x.test": {"550": 1}, "later@x.test": {"451": 1},
                       "cut@x.test": {"drop": 1}},
        "truncated": False}
    assert api.request("POST", "/api/reset")[0] == 200
    assert api.get("/api/faults") == {"recipients": {}, "truncated": False}
