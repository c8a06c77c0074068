"""The latency spec parser and sampler (pure functions, no server)."""

from __future__ import annotations

import random
import statistics

import pytest

from fakesmtp.latency import (
    ACCEPTED_FORMS,
    PHASES,
    LatencyError,
    LatencySpec,
    parse_latency,
    parse_phase_latency,
)
from fakesmtp.stats import Stats, lateness_bound


@pytest.mark.parametrize(
    ("spec", "kind", "params", "canonical"),
    [
        ("0", "none", (), "0"),
        ("0ms", "none", (), "0"),
        ("500ms", "const", (0.5,), "500ms"),
        ("2s", "const", (2.0,), "2s"),
        ("1.5s", "const", (1.5,), "1500ms"),
        ("0.25ms", "const", (0.00025,), "0.25ms"),
        ("uniform:100ms..300ms", "uniform", (0.1, 0.3), "uniform:100ms..300ms"),
        ("uniform:1s..2s", "uniform", (1.0, 2.0), "uniform:1s..2s"),
        ("normal:200ms,50ms", "normal", (0.2, 0.05), "normal:200ms,50ms"),
        ("lognormal:p50=200ms,p99=2s", "lognormal", (0.2, 2.0), "lognormal:p50=200ms,p99=2s"),
        ("exp:200ms", "exp", (0.2,), "exp:200ms"),
        (" exp:200ms ", "exp", (0.2,), "exp:200ms"),
    ],
)
def test_parse_accepted_forms(spec: str, kind: str, params: tuple, canonical: str) -> None:
    parsed = parse_latency(spec)
    assert parsed.kind == kind
    assert parsed.params == pytest.approx(params)
    assert str(parsed) == canonical
    assert parse_latency(str(parsed)) == parsed  # the canonical form round-trips


@pytest.mark.parametrize(
    "spec",
    ["", "200", "fast", "200 msec", "-5ms", "uniform:300ms..100ms", "uniform:100ms",
     "normal:200ms", "lognormal:p50=2s,p99=200ms", "lognormal:p50=1s", "exp:0ms",
     "gamma:1s", "7200s", "nanms", "infms", "-infs", "normal:nan,1ms", "uniform:0ms..infms",
     "exp:Infinitys", "1e3ms", "1_0ms", "0.0000001ms", "lognormal:p50=0.0001ms,p99=1s"],
)
def test_bad_spec_lists_accepted_forms(spec: str) -> None:
    with pytest.raises(LatencyError) as info:
        parse_latency(spec)
    assert repr(spec) in str(info.value)
    assert ACCEPTED_FORMS in str(info.value)


def test_non_string_spec_is_rejected() -> None:
    with pytest.raises(LatencyError, match="must be a string"):
        parse_latency(200)  # type: ignore[arg-type]


def test_samples_are_seeded_and_in_range() -> None:
    spec = parse_latency("uniform:100ms..300ms")
    first = [spec.sample(random.Random(42)) for _ in range(3)]
    again = [spec.sample(random.Random(42)) for _ in range(3)]
    assert first == again
    rng = random.Random(1)
    draws = [spec.sample(rng) for _ in range(2000)]
    assert min(draws) >= 0.1 and max(draws) <= 0.3


def test_distributions_have_the_requested_shape() -> None:
    rng = random.Random(3)
    n = 20_000
    assert parse_latency("250ms").sample(rng) == 0.25
    normal = [parse_latency("normal:200ms,50ms").sample(rng) for _ in range(n)]
    assert statistics.mean(normal) == pytest.approx(0.2, rel=0.03)
    exp = [parse_latency("exp:200ms").sample(rng) for _ in range(n)]
    assert statistics.mean(exp) == pytest.approx(0.2, rel=0.05)
    logn = sorted(parse_latency("lognormal:p50=200ms,p99=2s").sample(rng) for _ in range(n))
    assert logn[n // 2] == pytest.approx(0.2, rel=0.06)
    assert logn[int(n * 0.99)] == pytest.approx(2.0, rel=0.15)


def test_normal_never_goes_negative() -> None:
    rng = random.Random(5)
    spec = parse_latency("normal:10ms,100ms")
    assert min(spec.sample(rng) for _ in range(5000)) == 0.0


def test_zero_spec_is_flagged_and_sleeps_nothing() -> None:
    spec = parse_latency("0ms")
    assert spec.is_zero and spec.sample(random.Random()) == 0.0
    assert not LatencySpec("const", (0.1,)).is_zero


def test_phase_latency_and_phase_names() -> None:
    assert PHASES == ("connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "eom",
                      "quit")
    phase, spec = parse_phase_latency("rcpt=uniform:10ms..20ms")
    assert phase == "rcpt" and str(spec) == "uniform:10ms..20ms"
    with pytest.raises(LatencyError, match="phases: connect, ehlo"):
        parse_phase_latency("helo=10ms")
    with pytest.raises(LatencyError, match="PHASE=SPEC"):
        parse_phase_latency("10ms")


@pytest.mark.parametrize(
    "spec", ["normal:nan,1ms", "uniform:0ms..infms", "exp:Infinitys", "9" * 400 + "ms"]
)
def test_non_finite_durations_are_named(spec: str) -> None:
    with pytest.raises(LatencyError, match="is not a finite number"):
        parse_latency(spec)


def test_errors_quote_a_huge_spec_short() -> None:
    with pytest.raises(LatencyError) as info:
        parse_latency("uniform:" + " " * 100_000 + "1" + " " * 100_000 + "x..1ms")
    assert len(str(info.value)) < 500


def test_a_wide_lognormal_is_clamped_before_exp() -> None:
    # Seed 632808 makes lognormvariate(mu, sigma) overflow for this spec (an OverflowError in
    # an SMTP session); the spec cannot be parsed any more, but the sampler holds anyway.
    spec = LatencySpec("lognormal", (5e-324, 3600.0))
    assert spec.sample(random.Random(632808)) == pytest.approx(3600.0)


def test_lateness_is_observed_minus_injected_and_bounded() -> None:
    """Stats keep each event's lateness; the bound is 5% of the injected p99, at least 10 ms."""
    stats = Stats()
    for i in range(100):
        stats.record_latency("eom", 0.2, 0.2 + (0.05 if i == 99 else 0.001))
        stats.record_latency("mail", 5.0, 5.2)
    summary = stats.latency_summary()
    eom, mail = summary["eom"], summary["mail"]
    assert eom["lateness_p50_ms"] == 1.0 and eom["lateness_p99_ms"] == 1.0
    assert eom["lateness_max_ms"] == 50.0  # one late event in a hundred: past the p99 rank
    assert eom["lateness_bound_ms"] == 10.0 and eom["within_bound"] is True
    assert mail["lateness_p99_ms"] == 200.0 and mail["lateness_bound_ms"] == 250.0
    assert mail["within_bound"] is True
    stats.record_latency("eom", 0.2, 0.3)  # two late events: now the p99
    assert stats.latency_summary()["eom"]["within_bound"] is False
    assert lateness_bound(0.0) == 0.010 and lateness_bound(1.0) == 0.05
    assert 'fakesmtp_latency_lateness_seconds{phase="mail",quantile="0.99"} 0.2' in \
        stats.prometheus(0, 0)
