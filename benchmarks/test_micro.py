"""Micro-benchmarks of the flow's building blocks (``make microbench``).

Token create+verify and the latency parser are pure CPU and serve as the reference that
benchmarks/ratios.py divides by, so comparisons survive a change of machine.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.core import create_app, emails, tokens
from fakesmtp.latency import parse_latency
from fakesmtp.server import FakeSMTP

SECRET = "x" * 64


def test_token_create_and_verify(benchmark: Any) -> None:
    benchmark.group = "tokens"

    def roundtrip() -> tokens.TokenCheck:
        token = tokens.make_token(SECRET, 42, "someone@maillab.test")
        return tokens.check_token(SECRET, token, 3600)

    assert benchmark(roundtrip).state is tokens.TokenState.VALID


def test_email_composition(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "composition"
    app = create_app("baseline", {"INSTANCE_DIR": str(tmp_path)})
    link = "http://127.0.0.1:8000/verify/" + tokens.make_token(SECRET, 1, "a@maillab.test")
    with app.app_context():
        email = benchmark(emails.verification_email, "a@maillab.test", link, 48.0)
    assert link in email.text and email.html is not None and link in email.html


@pytest.mark.parametrize("spec", ["500ms", "uniform:100ms..300ms", "lognormal:p50=200ms,p99=2s"])
def test_latency_spec_parser(benchmark: Any, spec: str) -> None:
    benchmark.group = "latency spec parser"
    assert str(benchmark(parse_latency, spec)) == str(parse_latency(spec))


@pytest.fixture
def fakesmtp() -> Iterator[FakeSMTP]:
    with FakeSMTP(max_messages=1000) as server:
        yield server


def test_fakesmtp_ingest_one_message(benchmark: Any, fakesmtp: FakeSMTP) -> None:
    """One message over an open connection: MAIL, RCPT, DATA and the reply to the final dot."""
    benchmark.group = "fakesmtp ingest"
    body = b"Subject: hi\r\n\r\nOpen http://127.0.0.1/verify/abc\r\n"
    with smtplib.SMTP("127.0.0.1", fakesmtp.smtp_port, timeout=10) as client:
        client.ehlo("bench")
        benchmark.pedantic(lambda: client.sendmail("a@maillab.test", ["b@maillab.test"], body),
                           rounds=500, iterations=1, warmup_rounds=10)
    assert fakesmtp.stats()["received"] >= 500
