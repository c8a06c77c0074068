"""SMTP phases and latency specs: the one place both are defined.

Phases, in the order a client meets them:

    connect  before the 220 banner
    ehlo     before the reply to EHLO/HELO (again after STARTTLS)
    starttls before the 220 that starts the TLS handshake (``--tls``)
    auth     before an AUTH exchange (``--auth``): its challenge, or its verdict
    mail     before the reply to MAIL FROM
    rcpt     before the reply to each RCPT TO
    data     before the 354 that invites the message body
    eom      after the final dot, before the reply that accepts (or rejects) the message
    quit     before the 221 reply to QUIT

Latency spec strings (every number is a plain decimal with its unit, ``ms`` or ``s``; a
duration is 0, or between 0.001ms, the resolution of the canonical spelling, and 3600s):

    0 | 0ms             no latency
    500ms | 2s          constant
    uniform:A..B        uniform between A and B            uniform:100ms..300ms
    normal:MEAN,SD      normal, clamped at 0               normal:200ms,50ms
    lognormal:p50=X,p99=Y  log-normal with that median and 99th percentile
                                                            lognormal:p50=200ms,p99=2s
    exp:MEAN            exponential with that mean         exp:200ms

``parse_latency(spec)`` returns a frozen :class:`LatencySpec`; ``spec.sample(rng)`` draws one
delay in seconds from a ``random.Random`` (the caller owns the seed), and ``str(spec)`` is the
canonical spelling, which parses back to an equal spec. A bad spec raises
:class:`LatencyError` (a ``ValueError``) whose message lists the accepted forms.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Final

from fakesmtp.numbers import NumberError, finite, shown

PHASES: Final[tuple[str, ...]] = (
    "connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "eom", "quit")
DEFAULT_PHASE: Final = "eom"  # what `--latency X` alone applies to

#: One delay above this is a typo, not a test scenario (clients time out long before).
MAX_DELAY_S: Final = 3600.0
#: The smallest non-zero duration: ``str(spec)`` spells durations to 0.001ms, so anything
#: smaller would not parse back to an equal spec (it would print as 0ms).
MIN_DELAY_S: Final = 1e-6

ACCEPTED_FORMS: Final = (
    "0, 500ms, 2s, uniform:100ms..300ms, normal:200ms,50ms, "
    "lognormal:p50=200ms,p99=2s, exp:200ms"
)

# z-score of the 99th percentile of a standard normal: ln(p99/p50) = sigma * Z99.
_Z99: Final = 2.3263478740408408
_LOG_MAX_DELAY: Final = math.log(MAX_DELAY_S)
# Applied to stripped text only: a leading or trailing \s* here, next to the \s* in the
# middle, would backtrack quadratically on a long run of spaces.
_DURATION = re.compile(r"(\S*?)\s*(ms|s)")
_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)


class LatencyError(ValueError):
    """A latency spec or phase name that cannot be used; the message says why."""


@dataclass(frozen=True)
class LatencySpec:
    """A delay distribution. ``params`` are seconds, in the order the spec string names them."""

    kind: str  # "none", "const", "uniform", "normal", "lognormal", "exp"
    params: tuple[float, ...] = ()

    @property
    def is_zero(self) -> bool:
        return self.kind == "none"

    def sample(self, rng: random.Random) -> float:
        """One delay in seconds, never negative, never above ``MAX_DELAY_S``."""
        kind, p = self.kind, self.params
        if kind == "none":
            return 0.0
        if kind == "const":
            value = p[0]
        elif kind == "uniform":
            value = rng.uniform(p[0], p[1])
        elif kind == "normal":
            value = rng.gauss(p[0], p[1])
        elif kind == "lognormal":
            mu = math.log(p[0])
            sigma = (math.log(p[1]) - mu) / _Z99
            # lognormvariate is exp(normalvariate): the same draw, clamped before exp(), which
            # would otherwise overflow on a far tail of a wide spec.
            value = math.exp(min(rng.normalvariate(mu, sigma), _LOG_MAX_DELAY))
        else:  # exp
            value = rng.expovariate(1.0 / p[0])
        return min(max(value, 0.0), MAX_DELAY_S)

    def __str__(self) -> str:
        p = [format_duration(v) for v in self.params]
        return {
            "none": lambda: "0",
            "const": lambda: p[0],
            "uniform": lambda: f"uniform:{p[0]}..{p[1]}",
            "normal": lambda: f"normal:{p[0]},{p[1]}",
            "lognormal": lambda: f"lognormal:p50={p[0]},p99={p[1]}",
            "exp": lambda: f"exp:{p[0]}",
        }[self.kind]()


NO_LATENCY: Final = LatencySpec("none")


def format_duration(seconds: float) -> str:
    """Canonical spelling of a duration: whole seconds as ``2s``, anything else in ms."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    ms = round(seconds * 1000, 3)
    return f"{ms:g}ms" if ms != int(ms) else f"{int(ms)}ms"


def parse_duration(text: str) -> float:
    """``"200ms"`` -> 0.2, ``"2s"`` -> 2.0; a unit is required (``0`` alone is also accepted).
    Raises :class:`LatencyError` for anything but a plain decimal (no sign, exponent, NaN or
    infinity) from MIN_DELAY_S to MAX_DELAY_S, or 0."""
    stripped = text.strip()
    if stripped == "0":
        return 0.0
    expected = "expected a number with ms or s, like 200ms"
    m = _DURATION.fullmatch(stripped)
    number, unit = m.groups() if m else (stripped, "")
    try:
        value = finite(number, "duration")  # names NaN and the infinities for what they are
    except NumberError as err:
        raise LatencyError(f"bad duration {shown(text)}: {err}; {expected}") from None
    if not unit or not _DECIMAL.fullmatch(number):  # no sign, exponent, "_" or other digits
        raise LatencyError(f"bad duration {shown(text)}: {expected}")
    value /= 1000.0 if unit == "ms" else 1.0
    if value > MAX_DELAY_S:
        raise LatencyError(f"duration {shown(text)} is above the {MAX_DELAY_S:g}s maximum")
    if 0 < value < MIN_DELAY_S:
        raise LatencyError(f"duration {shown(text)} is below the 0.001ms resolution "
                           "(0 means none)")
    return value


def parse_latency(spec: str) -> LatencySpec:
    """Parse a latency spec string (see the module docstring) into a :class:`LatencySpec`."""
    if not isinstance(spec, str):
        raise LatencyError(f"latency spec must be a string, got {shown(spec)}; "
                           f"accepted: {ACCEPTED_FORMS}")
    try:
        return _parse(spec.strip())
    except LatencyError as err:
        message = f"bad latency spec {shown(spec)}: {err}; accepted: {ACCEPTED_FORMS}"
        raise LatencyError(message) from None


def _parse(spec: str) -> LatencySpec:
    kind, sep, rest = spec.partition(":")
    if not sep:
        value = parse_duration(spec)
        return NO_LATENCY if value == 0 else LatencySpec("const", (value,))
    if kind == "uniform":
        low, dots, high = rest.partition("..")
        if not dots:
            raise LatencyError("uniform needs A..B")
        a, b = parse_duration(low), parse_duration(high)
        if a > b:
            raise LatencyError("uniform needs A <= B")
        return LatencySpec("uniform", (a, b))
    if kind == "normal":
        parts = rest.split(",")
        if len(parts) != 2:
            raise LatencyError("normal needs MEAN,SD")
        return LatencySpec("normal", (parse_duration(parts[0]), parse_duration(parts[1])))
    if kind == "lognormal":
        fields = dict(_key_value(part) for part in rest.split(","))
        if set(fields) != {"p50", "p99"}:
            raise LatencyError("lognormal needs p50=X,p99=Y")
        p50, p99 = parse_duration(fields["p50"]), parse_duration(fields["p99"])
        if not 0 < p50 <= p99:
            raise LatencyError("lognormal needs 0 < p50 <= p99")
        return LatencySpec("lognormal", (p50, p99))
    if kind == "exp":
        mean = parse_duration(rest)
        if mean <= 0:
            raise LatencyError("exp needs a mean above 0")
        return LatencySpec("exp", (mean,))
    raise LatencyError(f"unknown distribution {shown(kind)}")


def _key_value(part: str) -> tuple[str, str]:
    key, eq, value = part.partition("=")
    if not eq:
        raise LatencyError(f"expected key=value, got {shown(part)}")
    return key.strip(), value


def check_phase(name: str) -> str:
    """Return ``name`` if it is a phase, else raise :class:`LatencyError` listing the phases."""
    if name not in PHASES:
        raise LatencyError(f"unknown phase {shown(name)}; phases: {', '.join(PHASES)}")
    return name


def parse_phase_latency(text: str) -> tuple[str, LatencySpec]:
    """``"rcpt=uniform:10ms..50ms"`` -> ``("rcpt", LatencySpec(...))`` (CLI ``--phase-latency``)."""
    phase, eq, spec = text.partition("=")
    if not eq:
        raise LatencyError(
            f"expected PHASE=SPEC, got {shown(text)}; phases: {', '.join(PHASES)}"
        )
    return check_phase(phase.strip()), parse_latency(spec)
