"""Parsing captured mail is bounded and never fails the capture API: a message past a limit
is listed with what was read and a ``parse_error``, once, and later queries are unaffected."""

from __future__ import annotations

import logging
import random
import smtplib
import threading
import time

import pytest

from fakesmtp import parse, store
from fakesmtp.parse import extract_links, parse_content

HOST = "127.0.0.1"
AFTER = b"Subject: after\r\n\r\nVerify: https://app.test/verify/after\r\n"


def deep_multipart(levels: int) -> bytes:
    head = b"Subject: deep\r\nMIME-Version: 1.0\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nhttps://app.test/deep\r\n" + closing


def deep_rfc822(levels: int) -> bytes:
    chain = b"".join(
        b"Subject: %s\r\nContent-Type: message/rfc822\r\n\r\n" % (b"deep" if i == 0 else b"in")
        for i in range(levels)
    )
    return chain + b"Subject: innermost\r\n\r\nhttps://app.test/deep\r\n"


def multipart(parts: list[bytes], head: bytes = b"Subject: deep\r\n") -> bytes:
    body = b"".join(b"--b\r\n" + part for part in parts)
    return head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body + b"--b--\r\n"


def _send(server, to: str, raw: bytes) -> None:
    with smtplib.SMTP(HOST, server.smtp_port, timeout=30) as client:
        assert client.sendmail("a@x.test", [to], raw) == {}


@pytest.mark.parametrize(
    "raw",
    [pytest.param(deep_multipart(2000), id="multipart-2000-deep"),
     pytest.param(deep_rfc822(2000), id="rfc822-chain-2000-deep")],
)
def test_a_too_deep_message_is_listed_and_breaks_no_later_query(server, api, caplog, raw) -> None:
    caplog.set_level(logging.INFO)
    _send(server, "deep@x.test", raw)
    _send(server, "after@x.test", AFTER)
    for _ in range(2):  # and again: the outcome is kept, not recomputed (nor re-failed)
        status, listed = api.request("GET", "/api/messages")
        assert status == 200, listed
        deep, after = (next(m for m in listed if m["rcpt_tos"] == [to])
                       for to in ("deep@x.test", "after@x.test"))
        assert deep["parse_error"] == "MIME nesting deeper than 50 levels"
        assert deep["subject"] == "deep" and deep["size"] == len(raw)
        assert after["parse_error"] is None
        assert after["links"] == ["https://app.test/verify/after"]
    assert api.request("GET", "/api/messages?to=after@x.test")[0] == 200
    assert api.request("GET", f"/api/messages/{deep['id']}")[0] == 200
    assert api.request("GET", f"/api/messages/{deep['id']}/raw")[0] == 200
    assert api.request("GET", "/api/stats")[1]["received"] == 2
    assert api.request("GET", "/")[0] == 200
    # Parsed once: every later read is the very same result.
    (msg,) = server.messages(to="deep@x.test")
    assert msg.content is msg.content is server.messages(to="deep@x.test")[0].content
    assert "Traceback" not in caplog.text


def test_what_precedes_the_cut_is_kept(server, api) -> None:
    raw = multipart([b"Content-Type: text/plain\r\n\r\nfirst https://app.test/first\r\n",
                     deep_multipart(300).split(b"\r\n", 2)[2]])
    _send(server, "cut@x.test", raw)
    (msg,) = api.get("/api/messages?to=cut@x.test")
    assert msg["parse_error"] == "MIME nesting deeper than 50 levels"
    assert msg["text"] == "first https://app.test/first"  # the CRLF before --b is the boundary's
    assert msg["links"] == ["https://app.test/first"]




def folded(name: bytes, value: bytes) -> bytes:
    """A header field folded into lines of 900 (SMTP refuses lines over 1,000 bytes)."""
    lines = [value[i:i + 900] for i in range(0, len(value), 900)]
    return name + b": " + b"\r\n ".join(lines) + b"\r\n"


PARTS = multipart([b"Content-Type: text/plain\r\n\r\nhttps://app.test/p\r\n"] * 300)
BIG = b"Subject: deep\r\n\r\nhttps://app.test/big\r\n" + (b"z" * 998 + b"\r\n") * 1100

LIMITS = [
    pytest.param(PARTS, "more than 200 MIME parts", id="parts"),
    pytest.param(b"Subject: deep\r\n" + b"X-A: b\r\n" * 1100 + b"\r\nhttps://app.test/h\r\n",
                 "more than 1000 header fields", id="header-count"),
    pytest.param(b"Subject: deep\r\n" + folded(b"X-Long", b"y" * 5000) + b"\r\nbody\r\n",
                 "a header field longer than 4096 characters", id="header-length"),
    pytest.param(b"Subject: deep\r\n" + folded(b"X-Pad", b"p" * 3900) * 9 + b"\r\nbody\r\n",
                 "header fields longer than 32768 characters in all", id="header-total"),
    pytest.param(b"Subject: deep\r\n" + folded(b"Content-Type", b"text/plain " + b"(" * 1900
                                                  + b")" * 1900) + b"\r\nbody\r\n",
                 "the Content-Type header field is nested too deeply", id="nested-comments"),
    pytest.param(BIG, f"message is {len(BIG)} bytes; only the first {parse.MAX_PARSE_BYTES} "
                 "were read", id="size"),
]


@pytest.mark.parametrize(("raw", "error"), LIMITS)
def test_each_limit_says_why_parsing_stopped(server, api, caplog, raw, error) -> None:
    caplog.set_level(logging.INFO)
    _send(server, "limit@x.test", raw)
    _send(server, "after@x.test", AFTER)
    (msg,) = api.get("/api/messages?to=limit@x.test")
    assert msg["parse_error"] == error
    assert msg["subject"] == "deep"
    assert api.get("/api/messages?to=after@x.test")[0]["parse_error"] is None
    assert api.request("GET", "/api/stats")[0] == 200
    assert "Traceback" not in caplog.text


# -- the parser alone -------------------------------------------------------------------------


def test_limits_keep_the_links_read_before_them() -> None:
    assert parse_content(BIG).links == ("https://app.test/big",)
    assert parse_content(PARTS).text == "https://app.test/p"


def test_fifty_levels_are_read_in_full() -> None:
    content = parse_content(deep_multipart(parse.MAX_DEPTH - 1))
    assert content.parse_error is None and content.links == ("https://app.test/deep",)


@pytest.mark.parametrize(
    "html",
    [
        pytest.param("<!--" * 250_000, id="unclosed-comments"),
        pytest.param("<a" * 500_000, id="unclosed-tags"),
        pytest.param("</" * 500_000, id="end-tag-starts"),
        pytest.param("<a" + " href='" * 170_000, id="unclosed-attributes"),
        pytest.param("<a href='https://x.test/'>x</a>" * 30_000, id="many-links"),
    ],
)
def test_link_extraction_is_linear(html: str) -> None:
    # html.parser took 29 s on 320 KB of "<!--"; the deadline only catches that kind of thing.
    started = time.perf_counter()
    extract_links(None, html)
    assert time.perf_counter() - started < 5.0


def test_html_links_as_a_browser_reads_them() -> None:
    html = (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "http://www.w3.org/TR/xhtml1.dtd">'
        "<!-- https://hidden.test/comment --><p>see https://text.test/a&amp;b</p>"
        "<A HREF=https://upper.test/x>x</A><img src='https://img.test/i.png'/>"
        '<a title="t" href = " https://space.test/ ">s</a><a href="mailto:x@y.test">m</a>'
        '<a href="https://q.test/?a=1&amp;b=2">q</a><a href="https://q.test/?a=1&amp;b=2">again</a>'
    )
    assert extract_links(None, html) == (
        "https://text.test/a&b", "https://upper.test/x", "https://img.test/i.png",
        "https://space.test/", "https://q.test/?a=1&b=2",
    )


def test_a_quadratic_charset_is_not_used() -> None:
    raw = b"Content-Type: text/plain; charset=punycode\r\n\r\n-" + b"99" * 100_000
    started = time.perf_counter()
    content = parse_content(raw)
    assert time.perf_counter() - started < 5.0  # punycode itself: ~100 s
    assert content.text is not None and content.text.startswith("-9999")


def test_random_mime_shaped_bytes_never_raise() -> None:
    # A seeded loop over MIME-ish fragments: random bytes would rarely get past the headers.
    fragments = [
        b"Subject: s\r\n", b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\r\n", b"Content-Type: text/html; charset=klingon\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"To: a@b (c (d\r\n", b"\r\n", b"--b\r\n", b"--b--\r\n", b"=?utf-8?q?=FF?=", b"\xff\xfe",
        b"\x00", b"<a href='https://x.test/'>", b"<!--", b"=\r\n", b"QUFB", b" \t", b":",
    ]
    rng = random.Random(1)
    for _ in range(500):
        raw = b"".join(rng.choice(fragments) for _ in range(rng.randrange(1, 60)))
        content = parse_content(raw)
        assert isinstance(content.headers, tuple)
        for name, value in content.headers:  # nothing a JSON or HTML encoder would refuse
            (name + value).encode("utf-8")


@pytest.mark.parametrize("charset", ["unicode-escape", "raw-unicode-escape", "utf-7"])
def test_a_charset_that_makes_lone_surrogates_breaks_no_page(server, api, caplog, charset) -> None:
    caplog.set_level(logging.INFO)
    link = b"https://x.test/+2D8-" if charset == "utf-7" else b"https://x.test/\\ud800"
    _send(server, "odd@x.test", b"Subject: s\r\nContent-Type: text/plain; charset=" +
          charset.encode() + b"\r\n\r\n" + link + b"\r\n")
    (msg,) = api.get("/api/messages?to=odd@x.test")
    assert msg["text"] == "https://x.test/?\r\n"  # "?" for the lone surrogate
    assert msg["links"] == ["https://x.test/"]  # (a trailing "?" reads as punctuation)
    assert api.request("GET", "/")[0] == 200
    assert "Traceback" not in caplog.text


def test_big_or_many_messages_are_parsed_off_the_event_loop(server, api, monkeypatch) -> None:
    parsed_on: dict[str, str] = {}

    def recording(raw: bytes):
        content = parse_content(raw)
        parsed_on[content.subject] = threading.current_thread().name
        return content

    monkeypatch.setattr(store, "parse_content", recording)
    _send(server, "big@x.test", b"Subject: big\r\n\r\n" + (b"b" * 900 + b"\r\n") * 10)
    for i in range(5):
        _send(server, "many@x.test", b"Subject: many%d\r\n\r\n" % i + b"m" * 900)
    _send(server, "one@x.test", b"Subject: one\r\n\r\nsmall\r\n")
    assert api.get("/api/messages?to=big@x.test")[0]["subject"] == "big"
    assert len(api.get("/api/messages?to=many@x.test")) == 5  # 4.5 KB in all
    assert api.get("/api/messages?to=one@x.test")[0]["subject"] == "one"
    loop_thread = "fakesmtp"  # FakeSMTP's thread; the API handlers run on its loop
    assert parsed_on.pop("one") == loop_thread  # a small one: inline beats a thread hop
    assert len(parsed_on) == 6 and loop_thread not in parsed_on.values(), parsed_on
