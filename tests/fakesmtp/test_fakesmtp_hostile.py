"""Hostile input against every face of fakesmtp, over real connections. Each case ends in the
exact HTTP status or SMTP reply given, changes no config, leaves the server answering normal
requests, and puts no traceback (nor any ERROR record) in the log. One property test sends
PATCH bodies from Hypothesis: bytes, and JSON shaped like a config, NaN and all.
"""

from __future__ import annotations

import gzip
import http.client
import itertools
import json
import logging
import smtplib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOST = "127.0.0.1"
NORMAL = b"Subject: normal\r\n\r\nVerify: https://app.test/verify/ok\r\n"
_AFTER = itertools.count()


def _http(
    server: Any, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request on a new connection: (status, decoded JSON or raw bytes)."""
    conn = http.client.HTTPConnection(HOST, server.api_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, json.loads(data) if "json" in ctype else data
    finally:
        conn.close()


def _still_serving(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A normal message still goes in and comes out, stats answer, and the log holds no
    traceback from aiohttp, aiosmtpd or asyncio."""
    to = f"after{next(_AFTER)}@x.test"
    with smtplib.SMTP(HOST, server.smtp_port, timeout=10) as client:
        assert client.sendmail("a@x.test", [to], NORMAL) == {}
    status, found = _http(server, "GET", f"/api/messages?to={to}")
    assert status == 200 and [m["subject"] for m in found] == ["normal"], found
    assert found[0]["links"] == ["https://app.test/verify/ok"]
    assert _http(server, "GET", "/api/stats")[0] == 200
    assert "Traceback" not in caplog.text
    assert [r.getMessage() for r in caplog.records
            if r.exc_info or r.levelno >= logging.ERROR] == []


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # so a demoted record would still be seen


JSON = {"Content-Type": "application/json"}


def _json_in(charset: str) -> dict[str, str]:
    return {"Content-Type": f"application/json; charset={charset}"}


def _rule(**rule: Any) -> bytes:
    return json.dumps({"faults": [rule]}).encode()


# (method, path, body, headers, status, the "field" of the JSON error or None)
HTTP_CASES = [
    # GET /api/messages: numbers in the query, and odd strings
    pytest.param("GET", "/api/messages?wait=-1", None, {}, 400, "wait", id="wait-negative"),
    pytest.param("GET", "/api/messages?wait=nan", None, {}, 400, "wait", id="wait-nan"),
    pytest.param("GET", "/api/messages?wait=1e999", None, {}, 400, "wait", id="wait-1e999"),
    pytest.param("GET", "/api/messages?wait=-Infinity", None, {}, 400, "wait", id="wait-minf"),
    pytest.param("GET", "/api/messages?wait=%ff%fe", None, {}, 400, "wait", id="wait-not-utf8"),
    pytest.param("GET", "/api/messages?wait=0x10", None, {}, 400, "wait", id="wait-hex"),
    pytest.param("GET", "/api/messages?limit=-5", None, {}, 400, "limit", id="limit-negative"),
    pytest.param("GET", "/api/messages?limit=0.5", None, {}, 400, "limit", id="limit-below-1"),
    pytest.param("GET", "/api/messages?limit=NaN", None, {}, 400, "limit", id="limit-nan"),
    pytest.param("GET", "/api/messages?limit=1e999", None, {}, 400, "limit", id="limit-inf"),
    pytest.param("GET", "/api/messages?limit=99999999999999999999", None, {}, 200, None,
                 id="limit-huge-is-capped"),
    pytest.param("GET", "/api/messages?since=inf", None, {}, 400, "since", id="since-inf"),
    pytest.param("GET", "/api/messages?since=-1", None, {}, 400, "since", id="since-negative"),
    pytest.param("GET", "/api/messages?to=%ff%fe%00", None, {}, 200, None, id="to-not-utf8"),
    pytest.param("GET", "/api/messages?to=" + "a" * 8000, None, {}, 200, None, id="to-8KB"),
    # aiohttp refuses a request line over 8190 bytes itself (and must not log a traceback)
    pytest.param("GET", "/api/messages?to=" + "a" * 100_000, None, {}, 400, None,
                 id="to-100KB"),
    pytest.param("GET", "/api/messages/%ff%fe", None, {}, 404, "id", id="id-not-utf8"),
    pytest.param("GET", "/api/messages/" + "m" * 5000 + "/raw", None, {}, 404, "id",
                 id="raw-long-id"),
    # PATCH /api/config: charset and bytes
    pytest.param("PATCH", "/api/config", b'{"seed": 1}', _json_in("nosuchcharset"), 415,
                 "charset", id="charset-unknown"),
    pytest.param("PATCH", "/api/config", b'{"seed": 1}', _json_in("rot13"), 415, "charset",
                 id="charset-not-text"),
    pytest.param("PATCH", "/api/config", b'{"seed": 1}', _json_in("punycode"), 415,
                 "charset", id="charset-quadratic"),
    pytest.param("PATCH", "/api/config", b'{"seed": 1}', _json_in("latin-1"), 415, "charset",
                 id="charset-not-json"),
    # aiohttp refuses a NUL in a header itself
    pytest.param("PATCH", "/api/config", b'{"seed": 1}', _json_in("utf-8\x00"), 400, None,
                 id="charset-nul"),
    pytest.param("PATCH", "/api/config", b'{"seed": 1, "x": "\xff"}', _json_in("utf-8"), 400,
                 "body", id="bytes-not-utf8"),
    pytest.param("PATCH", "/api/config", b'{"seed": 1}', _json_in("utf-16"), 400, "body",
                 id="bytes-not-utf16"),
    # PATCH /api/config: JSON shape
    pytest.param("PATCH", "/api/config", b"", JSON, 400, "body", id="empty"),
    pytest.param("PATCH", "/api/config", b"null", JSON, 400, "body", id="null"),
    pytest.param("PATCH", "/api/config", b"[" * 100_000 + b"]" * 100_000, JSON, 400, "body",
                 id="array-100000-deep"),
    pytest.param("PATCH", "/api/config", b'{"a":' * 5000 + b"1" + b"}" * 5000, JSON, 400,
                 "body", id="object-5000-deep"),
    pytest.param("PATCH", "/api/config", b'{"faults": ' + b"[" * 40 + b"]" * 40 + b"}", JSON,
                 400, "body", id="array-40-deep"),
    pytest.param("PATCH", "/api/config", b'{"seed": 1, "x": "' + b"y" * 300_000 + b'"}', JSON,
                 413, "body", id="over-256KB"),
    pytest.param("PATCH", "/api/config", gzip.compress(b" " * 30_000_000),
                 {**JSON, "Content-Encoding": "gzip"}, 413, "body", id="gzip-bomb"),
    pytest.param("PATCH", "/api/config", b'{"seed": NaN}', JSON, 400, "seed", id="seed-nan"),
    pytest.param("PATCH", "/api/config", b"Infinity", JSON, 400, "body", id="bare-infinity"),
    # PATCH /api/config: values that would reach SMTP replies, labels or the matcher
    pytest.param("PATCH", "/api/config", _rule(phase="rcpt", reply=550, text="no\r\n250 fake"),
                 JSON, 400, "faults[0].text", id="reply-text-crlf"),
    pytest.param("PATCH", "/api/config", _rule(phase="rcpt", reply=550, text="x" * 401), JSON,
                 400, "faults[0].text", id="reply-text-long"),
    pytest.param("PATCH", "/api/config", _rule(phase="rcpt", reply="5_50"), JSON, 400,
                 "faults[0].reply", id="reply-underscore"),
    pytest.param("PATCH", "/api/config", _rule(id="x" * 65, phase="rcpt"), JSON, 400,
                 "faults[0].id", id="rule-id-long"),
    pytest.param("PATCH", "/api/config", _rule(id="é", phase="rcpt"), JSON, 400,
                 "faults[0].id", id="rule-id-non-ascii"),
    # fnmatch takes quadratic time on "[" runs: this one took 30 s on the event loop
    pytest.param("PATCH", "/api/config", _rule(phase="rcpt", to="[a-" * 20_000), JSON, 400,
                 "faults[0].to", id="glob-quadratic"),
    pytest.param("PATCH", "/api/config", _rule(phase="rcpt", to="|".join(["a"] * 101)), JSON,
                 400, "faults[0].to", id="globs-too-many"),
    pytest.param("PATCH", "/api/config", _rule(phase="rcpt", to=["a@x.test"]), JSON, 400,
                 "faults[0].to", id="glob-not-a-string"),
    pytest.param("PATCH", "/api/config", _rule(phase="eom", prob=True), JSON, 400,
                 "faults[0].prob", id="prob-bool"),
    pytest.param("PATCH", "/api/config",
                 json.dumps({"latency": {"eom": " " * 50_000 + "1" + " " * 50_000 + "x"}}).encode(),
                 JSON, 400, "latency.eom", id="latency-spaces-backtracking"),
    pytest.param("PATCH", "/api/config",
                 b'{"latency": {"eom": "lognormal:p50=0.0000001ms,p99=1s"}}', JSON, 400,
                 "latency.eom", id="latency-below-resolution"),
    pytest.param("PATCH", "/api/messages", b"{}", JSON, 405, None, id="patch-messages"),
    # bodies where none is read
    pytest.param("POST", "/api/reset", b"[" * 100_000, JSON, 200, None, id="reset-ignores-body"),
    pytest.param("GET", "/api/stats", b"\xff" * 1000, {}, 200, None, id="stats-with-body"),
    pytest.param("GET", "/metrics?x=%ff", None, {}, 200, None, id="metrics-odd-query"),
    pytest.param("DELETE", "/api/config", None, {}, 405, None, id="delete-config"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "field"), HTTP_CASES)
def test_hostile_http(server, caplog, method, path, body, headers, status, field) -> None:
    before = _http(server, "GET", "/api/config")
    got, data = _http(server, method, path, body, headers)
    assert got == status, data
    if field is not None:
        assert isinstance(data, dict) and data["field"] == field and data["error"], data
    assert _http(server, "GET", "/api/config") == before  # nothing half-applied
    _still_serving(server, caplog)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(_rule(phase="eom", prob="nan"), "faults[0].prob", id="prob=nan"),
        pytest.param(_rule(phase="eom", prob="inf"), "faults[0].prob", id="prob=inf"),
        pytest.param(b'{"faults": ["phase=eom,every=1e999"]}', "faults[0].every",
                     id="every=1e999"),
        pytest.param(b'{"faults": ["phase=mail,rate=Infinity"]}', "faults[0].rate",
                     id="rate=Infinity"),
        pytest.param(_rule(phase="eom", first="-inf"), "faults[0].first", id="first=-inf"),
        pytest.param(b'{"faults": [{"phase": "eom", "every": 1' + b"0" * 400 + b"}]}",
                     "faults[0].every", id="every=10**400"),
        pytest.param(b'{"faults": [{"phase": "eom", "every": 1e999}]}', "faults[0].every",
                     id="every-json-1e999"),
        pytest.param(b'{"faults": [{"phase": "eom", "prob": NaN}]}', "faults[0].prob",
                     id="prob-literal-NaN"),
        pytest.param(b'{"faults": [{"phase": "connect", "conns": Infinity}]}',
                     "faults[0].conns", id="conns-literal-Infinity"),
        pytest.param(b'{"latency": {"eom": -Infinity}}', "latency.eom",
                     id="latency-literal-minus-Infinity"),
        pytest.param(b'{"latency": {"eom": "normal:nan,1ms"}}', "latency.eom",
                     id="normal:nan,1ms"),
        pytest.param(b'{"latency": {"eom": "uniform:0ms..infms"}}', "latency.eom",
                     id="uniform:0ms..infms"),
        pytest.param(b'{"latency": {"rcpt": "exp:Infinitys"}}', "latency.rcpt",
                     id="exp:Infinitys"),
    ],
)
def test_non_finite_numbers_are_400_naming_the_field(server, caplog, body, field) -> None:
    before = _http(server, "GET", "/api/config")
    status, error = _http(server, "PATCH", "/api/config", body, JSON)
    assert status == 400 and error["field"] == field, error
    assert "finite" in error["error"], error
    assert _http(server, "GET", "/api/config") == before
    _still_serving(server, caplog)


def test_utf16_and_utf8_with_bom_are_json_too(server, caplog) -> None:
    status, config = _http(server, "PATCH", "/api/config", '{"seed": 11}'.encode("utf-16"),
                           _json_in("utf-16"))
    assert status == 200 and config["seed"] == 11
    status, config = _http(server, "PATCH", "/api/config", '{"seed": 12}'.encode("utf-8-sig"),
                           _json_in("utf-8-sig"))
    assert status == 200 and config["seed"] == 12
    _still_serving(server, caplog)


def test_huge_wait_is_capped_and_a_match_answers_at_once(server, caplog) -> None:
    with smtplib.SMTP(HOST, server.smtp_port, timeout=10) as client:
        client.sendmail("a@x.test", ["there@x.test"], NORMAL)
    status, found = _http(server, "GET", "/api/messages?to=there@x.test&wait=1e300")
    assert status == 200 and len(found) == 1
    _still_serving(server, caplog)


# Each step: (line sent, the reply's last line expected: exact, or just the code if 3 bytes)
EHLO = (b"EHLO me", b"250 HELP")
MAIL = (b"MAIL FROM:<a@x.test>", b"250 OK")
RCPT = (b"RCPT TO:<b@x.test>", b"250 OK")
DATA = (b"DATA", b"354 End data with <CR><LF>.<CR><LF>")
NEEDS_SMTPUTF8 = b"553 5.6.7 Non-ASCII address needs MAIL FROM SMTPUTF8"
CONTROL = b"553 5.1.3 Control character in address"
MALFORMED = b"553 5.1.3 Error: malformed address"
MAIL_SYNTAX = b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"

SMTP_CASES = [
    pytest.param([(b"EHLO " + b"x" * 5000, b"500 Command line too long")], id="long-command"),
    pytest.param([(b"NOOP " + b"x" * 1_000_000, b"500 Command line too long")],
                 id="1MB-command"),
    pytest.param([(b"\xff\xfe\x00binary", b"500 Error: bad syntax")], id="binary-command"),
    pytest.param([EHLO, (b"NO\x00OP", b'500 Error: command "NO\x00OP" not recognized')],
                 id="nul-in-command"),
    pytest.param([EHLO, (b"MAIL FROM:<a\x00b@x.test>", CONTROL)],
                 id="nul-in-mail"),
    pytest.param([EHLO, MAIL, (b"RCPT TO:<b\x01@x.test>", CONTROL)],
                 id="control-in-rcpt"),
    pytest.param([EHLO, (b"MAIL FROM:<\xc3\xa9@x.test>", NEEDS_SMTPUTF8)],
                 id="8bit-mail-without-smtputf8"),
    pytest.param([EHLO, MAIL, (b"RCPT TO:<\xc3\xbc@x.test>", NEEDS_SMTPUTF8)],
                 id="non-ascii-rcpt-without-smtputf8"),
    pytest.param([EHLO, (b"MAIL FROM:<\xc3\xa9@x.test> SMTPUTF8", b"250 OK"),
                  (b"RCPT TO:<\xc3\xbc@x.test>", b"250 OK")], id="non-ascii-with-smtputf8"),
    pytest.param([EHLO, (b"MAIL FROM:<a@x.test> SMTPUTF8", b"250 OK"),
                  (b"RCPT TO:<\xff\xfe@x.test>", b"553 5.1.3 Address is not valid UTF-8")],
                 id="rcpt-not-utf8"),
    pytest.param([EHLO, ("MAIL FROM:<a@x.test> SIZE=²".encode(), MAIL_SYNTAX), MAIL],
                 id="size-superscript"),
    pytest.param([EHLO, ("MAIL FROM:<a@x.test> ſize=①".encode(), MAIL_SYNTAX)],
                 id="size-long-s-circled"),
    pytest.param([EHLO, (b"MAIL FROM:<a@x.test> SIZE=" + b"9" * 40, b"552")],
                 id="size-huge"),
    pytest.param([EHLO, (b"MAIL FROM:<", MALFORMED), MAIL, (b"RCPT TO:<", MALFORMED),
                  (b"RCPT TO:a@[", MALFORMED)],
                 id="address-cut-short"),
    pytest.param([EHLO, (b"MAIL FROM:<a@x.test> BODY=junk",
                         b"501 Error: BODY can only be one of 7BIT, 8BITMIME")], id="body-junk"),
    pytest.param([EHLO, (b"MAIL FROM:<" + b"a" * 600 + b"@x.test>", b"500 Command line too long")],
                 id="address-over-line-limit"),
    pytest.param([EHLO, MAIL, (b"RCPT TO:" + b"(" * 200 + b")" * 200 + b"b@x.test", b"250 OK")],
                 id="nested-comments-in-rcpt"),
    pytest.param([EHLO, MAIL, RCPT, DATA,
                  (b"Subject: x\r\n\r\n" + b"y" * 1_000_000 + b"\r\n.",
                   b"500 Line too long (see RFC5321 4.5.3.1.6)"), (b"NOOP", b"250 OK")],
                 id="data-1MB-line"),
    pytest.param([EHLO, MAIL, RCPT, DATA,
                  (b"Subject: \xff\xfe\r\n\r\n8-bit \xe9\x00 body\r\n.", b"250")],
                 id="data-8bit-and-nul"),
    pytest.param([EHLO, (b"AUTH PLAIN AGEAYg==",
                         b"538 5.7.11 Encryption required for requested authentication mechanism"),
                  (b"STARTTLS", b"454 TLS not available"),
                  (b"BDAT 10 LAST", b'500 Error: command "BDAT" not recognized')],
                 id="unsupported-commands"),
]


@pytest.mark.parametrize("steps", SMTP_CASES)
def test_hostile_smtp(server, raw_session, caplog, steps) -> None:
    session = raw_session(server)
    assert session.reply()[-1].startswith(b"220 ")
    for line, expected in steps:
        reply = session.command(line)
        assert reply, f"connection closed after {line[:60]!r}"
        last = reply[-1]
        assert (last[:3] if len(expected) == 3 else last) == expected, (line[:60], reply)
    _still_serving(server, caplog)


def test_8bit_body_is_captured_and_readable(server, raw_session, caplog) -> None:
    session = raw_session(server)
    session.reply()
    for line in (b"EHLO me", b"MAIL FROM:<a@x.test>", b"RCPT TO:<eight@x.test>", b"DATA"):
        session.command(line)
    reply = session.command(b"Subject: caf\xc3\xa9 \xff\r\n\r\n\xe9t\xe9 \x00 https://x.test/8\r\n.")
    assert reply[0].startswith(b"250 ")
    status, (msg,) = _http(server, "GET", "/api/messages?to=eight@x.test")
    assert status == 200 and msg["parse_error"] is None
    assert msg["subject"] == "café \ufffd" and msg["links"] == ["https://x.test/8"]
    assert _http(server, "GET", "/")[0] == 200
    assert _http(server, "GET", f"/api/messages/{msg['id']}/raw")[0] == 200
    _still_serving(server, caplog)


# Keys and strings that reach each validator, so that generated JSON gets past the first check.
_KEYS = ["latency", "faults", "seed", "eom", "rcpt", "connect", "id", "phase", "action",
         "reply", "text", "to", "prob", "every", "first", "rate", "conns"]
_WORDS = ["eom", "rcpt", "mail", "drop", "hang", "550", "5_50", "200ms", "normal:nan,1ms",
          "uniform:0ms..infms", "lognormal:p50=0.0000001ms,p99=1s", "phase=eom,every=1e999",
          "[a-" * 50, "*@x.test", "no\r\n250 fake", "\udcff", "nan", "Infinity"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(_WORDS)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), inner, max_size=4),
    max_leaves=16,
)


@settings(max_examples=200, deadline=None, database=None,
          # One server serves every example: that it survives all of them is the point.
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=600),
        _JSON.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity as json.dumps writes
        _JSON.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "replace")),
    ),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                  "application/json; charset=utf-16", "text/plain",
                                  "application/json; charset=nosuchcharset", ""]),
)
def test_no_patch_body_gets_a_5xx(server, caplog, body: bytes, content_type: str) -> None:
    before = _http(server, "GET", "/api/config")
    headers = {"Content-Type": content_type} if content_type else {}
    status, data = _http(server, "PATCH", "/api/config", body, headers)
    assert status in (200, 400, 413, 415), (status, body[:200], data)
    if status == 200:
        assert _http(server, "POST", "/api/reset")[0] == 200  # a valid patch may add faults
    else:
        assert isinstance(data["field"], str) and data["error"], data  # field "" is a key
        assert _http(server, "GET", "/api/config") == before
    _still_serving(server, caplog)
