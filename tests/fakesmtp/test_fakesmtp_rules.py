"""Fault rule parsing and triggers, config merging, the store and link extraction (no server)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from fakesmtp.config import Config, ConfigError
from fakesmtp.faults import FaultError, FaultRule, FaultSet, parse_fault, rules_from_json
from fakesmtp.numbers import NumberError, finite, shown
from fakesmtp.parse import extract_links, parse_content
from fakesmtp.replies import S421_RATE_LIMIT, S451_LOCAL_ERROR, Reply
from fakesmtp.store import MessageStore


def test_rule_string_and_json_agree() -> None:
    text = "id=r1,phase=rcpt,reply=550,prob=0.1,to=*@fail.test"
    rule = parse_fault(text)
    assert rule == FaultRule.from_mapping(
        {"id": "r1", "phase": "rcpt", "reply": 550, "prob": 0.1, "to": "*@fail.test"}
    )
    assert rule.reply == Reply(550, "Mailbox unavailable")
    assert str(rule) == text
    assert rules_from_json([rule.to_json()]) == (rule,)


def test_rule_defaults() -> None:
    assert parse_fault("phase=eom").reply == S451_LOCAL_ERROR
    assert parse_fault("phase=mail,rate=10").reply == S421_RATE_LIMIT
    assert parse_fault("phase=eom", default_id="r7").id == "r7"
    assert parse_fault("phase=eom,reply=554,text=No thanks").reply == Reply(554, "No thanks")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("phase=nope", "phase"),
        ("phase=eom,reply=250", "reply"),
        ("phase=eom,reply=abc", "reply"),
        ("phase=eom,prob=1.5", "prob"),
        ("phase=eom,every=0", "every"),
        ("phase=eom,first=x", "first"),
        ("phase=eom,prob=0.5,every=2", "every"),
        ("phase=mail,to=*@x.test", "to"),
        ("phase=rcpt,action=drop", "action"),
        ("phase=eom,action=explode", "action"),
        ("phase=eom,action=hang,reply=550", "reply"),
        ("phase=eom,colour=red", "colour"),
        ("id=a b,phase=eom", "id"),
        ("phase=eom,bogus", "bogus"),
        ("phase=eom,prob=nan", "prob"),
        ("phase=eom,prob=inf", "prob"),
        ("phase=eom,every=1e999", "every"),
        ("phase=mail,rate=Infinity", "rate"),
        ("phase=connect,conns=-inf", "conns"),
        ("phase=eom,first=1.5", "first"),
        ("phase=eom,reply=5_50", "reply"),
        ("phase=eom,reply= 550x", "reply"),
        ("phase=eom,reply=550,text=no\r\n250 injected", "text"),
        ("phase=eom,reply=550,text=caf\u00e9", "text"),
        ("id=" + "a" * 65 + ",phase=eom", "id"),
        ("id=\u00e9,phase=eom", "id"),
        ("phase=rcpt,to=" + "[a-" * 200, "to"),
        ("phase=rcpt,to=" + "|".join(["a"] * 101), "to"),
    ],
)
def test_bad_rule_names_the_key(text: str, field: str) -> None:
    with pytest.raises(FaultError) as info:
        parse_fault(text)
    assert info.value.field == field
    assert len(str(info.value)) < 300  # the bad value is quoted, not pasted in whole


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"phase": "eom", "prob": True}, "prob"),
        ({"phase": "eom", "every": 10**400}, "every"),
        ({"phase": "eom", "every": float("inf")}, "every"),
        ({"phase": "eom", "first": [1]}, "first"),
        ({"phase": "rcpt", "to": ["a@x.test"]}, "to"),
        ({"phase": "eom", "reply": 550.0}, "reply"),
        ({"phase": "eom", "reply": True}, "reply"),
        ({"phase": "eom", "reply": 550, "text": 5}, "text"),
        ({"phase": ["eom"]}, "phase"),
        ({"id": 7, "phase": "eom"}, "id"),
    ],
)
def test_bad_rule_object_names_the_key(data: dict, field: str) -> None:
    with pytest.raises(FaultError) as info:
        FaultRule.from_mapping(data)
    assert info.value.field == field


def test_finite_refuses_every_non_finite_spelling() -> None:
    for raw in ("nan", "NaN", "inf", "-inf", "Infinity", "1e999", float("nan"), float("inf"),
                10**400, True, None, [1], "x", ""):
        with pytest.raises(NumberError) as info:
            finite(raw, "prob")
        assert info.value.field == "prob" and str(info.value).startswith("prob=")
    assert finite("0.5", "prob") == 0.5 and finite(3, "every") == 3.0
    assert finite(" 2 ", "every") == 2.0
    assert shown("x" * 1000) == "'" + "x" * 36 + "..."


def test_globs_are_compiled_when_the_rule_is_made() -> None:
    rule = parse_fault("phase=rcpt,to=*@FAIL.test|bob@*")
    assert rule.matches(["x@fail.TEST"]) and rule.matches(["bob@y.test"])
    assert not rule.matches(["x@ok.test"])
    assert rule == parse_fault("phase=rcpt,to=*@fail.test|bob@*")  # compiled form not compared


def test_json_rule_errors_carry_the_index() -> None:
    with pytest.raises(FaultError) as info:
        rules_from_json([{"phase": "eom"}, {"phase": "eom", "reply": 99}])
    assert info.value.field == "faults[1].reply"
    with pytest.raises(FaultError, match="used twice"):
        rules_from_json([{"id": "a", "phase": "eom"}, {"id": "a", "phase": "rcpt"}])


def _fires(rules: FaultSet, n: int, phase: str = "eom", rcpts: tuple = (), conns: int = 1):
    rng = random.Random(0)
    return [rules.check(phase, rcpts, rng, conns) is not None for _ in range(n)]


def test_triggers() -> None:
    assert _fires(FaultSet([parse_fault("phase=eom,every=3")]), 7) == [
        False, False, True, False, False, True, False]
    assert _fires(FaultSet([parse_fault("phase=eom,first=2")]), 5) == [
        True, True, False, False, False]
    assert _fires(FaultSet([parse_fault("phase=eom")]), 3) == [True] * 3
    hits = sum(_fires(FaultSet([parse_fault("phase=eom,prob=0.25")]), 4000))
    assert 850 < hits < 1150
    assert _fires(FaultSet([parse_fault("phase=eom,prob=0")]), 100) == [False] * 100
    conns = FaultSet([parse_fault("phase=connect,conns=2")])
    assert _fires(conns, 1, "connect", conns=2) == [False]
    assert _fires(conns, 1, "connect", conns=3) == [True]
    # Other phases are never touched by a rule.
    assert _fires(FaultSet([parse_fault("phase=rcpt")]), 3, "eom") == [False] * 3


def test_rate_trigger_lets_n_per_second_through() -> None:
    rules = FaultSet([parse_fault("phase=mail,rate=5")])
    assert _fires(rules, 8, "mail") == [False] * 5 + [True] * 3


def test_first_rule_to_fire_wins_and_later_rules_do_not_count() -> None:
    rules = FaultSet([parse_fault("id=a,phase=eom,first=1"), parse_fault("id=b,phase=eom,every=2")])
    rng = random.Random(0)
    got = [getattr(rules.check("eom", (), rng, 1), "id", None) for _ in range(5)]
    assert got == ["a", None, "b", None, "b"]


def test_recipient_patterns() -> None:
    rule = parse_fault("phase=rcpt,to=*@fail.test|boss@*")
    assert rule.matches(["x@FAIL.test"])
    assert rule.matches(["boss@corp.test"])
    assert not rule.matches(["x@ok.test"])
    assert rule.matches(["x@ok.test", "y@fail.test"])  # any recipient, for data/eom
    assert parse_fault("phase=rcpt").matches(["anyone@any.test"])


def test_config_patch_merges_and_validates() -> None:
    base = Config.build({"eom": "200ms", "rcpt": "10ms"}, ["id=a,phase=eom,every=2"], seed=1)
    new = base.patched({"latency": {"eom": "500ms", "rcpt": None, "mail": "0"}})
    assert new.to_json()["latency"] == {
        "connect": "0", "ehlo": "0", "starttls": "0", "auth": "0", "mail": "0", "rcpt": "0",
        "data": "0", "eom": "500ms", "quit": "0"}
    assert new.faults == base.faults and new.seed == 1  # what you leave out stays
    assert base.patched({"faults": []}).faults == ()
    assert base.patched({"seed": 9}).seed == 9
    for patch, field in [
        ({"latency": {"eom": "soon"}}, "latency.eom"),
        ({"latency": {"helo": "1s"}}, "latency.helo"),
        ({"latency": "1s"}, "latency"),
        ({"faults": [{"phase": "x"}]}, "faults[0].phase"),
        ({"faults": {"phase": "eom"}}, "faults"),
        ({"seed": "x"}, "seed"),
        ({"colour": 1}, "colour"),
        ([1, 2], "body"),
    ]:
        with pytest.raises(ConfigError) as info:
            base.patched(patch)
        assert info.value.field == field, patch


def test_store_bounds_indexes_and_evicts() -> None:
    store = MessageStore(capacity=3)
    for i in range(5):
        store.add("a@x.test", [f"u{i % 2}@x.test"], b"Subject: s\r\n\r\nb\r\n", time.time(), "")
    assert len(store) == 3 and store.evicted == 2
    assert [m.id for m in store.query()] == ["m5", "m4", "m3"]
    assert [m.id for m in store.query(to="U0@x.test")] == ["m5", "m3"]
    assert store.get("m1") is None
    assert store.query(to="u1@x.test", limit=1)[0].id == "m4"
    assert store.clear() == 3 and store.query() == [] and store.evicted == 2


def test_store_wait_is_woken_by_add() -> None:
    async def scenario() -> tuple[list, float]:
        store = MessageStore()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, store.add, "a@x", ["bob@x.test"], b"\r\n", time.time(), "")
        started = loop.time()
        found = await store.wait("bob@x.test", None, 5.0)
        return found, loop.time() - started

    found, waited = asyncio.run(scenario())
    # Woken by add, not by the 5 s deadline: a wait that times out returns [].
    assert [m.rcpt_tos for m in found] == [("bob@x.test",)]
    assert waited >= 0.04  # and not before the message was added


def test_parse_content_and_links() -> None:
    raw = (
        b"Subject: =?utf-8?q?Verify_=C3=A9?=\r\nX-Correlation-Id: abc\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Open https://app.test/verify/tok=3D1. Or (http://other.test/a).\r\n"
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<a href="https://app.test/verify/tok=1">go</a> <img src="http://cdn.test/x.png">'
        b' <a href="mailto:x@y.test">m</a> <a href="https://q.test/?a=1&amp;b=2">q</a>\r\n'
        b"--b--\r\n"
    )
    content = parse_content(raw)
    assert content.subject == "Verify é"
    assert content.header("x-correlation-id") == "abc"
    assert "tok=1" in (content.text or "") and "<a href" in (content.html or "")
    assert content.links == (
        "https://app.test/verify/tok=1", "http://other.test/a", "http://cdn.test/x.png",
        "https://q.test/?a=1&b=2",
    )
    assert extract_links(None, "<p>see <b>https://x.test/p</b></p>") == ("https://x.test/p",)


def test_parse_survives_garbage() -> None:
    content = parse_content(b"\xff\xfe not a header\r\n\r\n\x00\x01 https://ok.test/x")
    assert isinstance(content.headers, tuple)
    broken = parse_content(b"Content-Type: text/plain; charset=klingon\r\n\r\nhttp://k.test/\r\n")
    assert broken.links == ("http://k.test/",)
