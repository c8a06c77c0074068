"""Bench profiles: which cells to run and how, from ``loadtests/profiles/<name>.toml``.

Keys (every one optional but ``variants``, ``latencies_ms``, and ``rates`` in open loop or
``users`` in closed loop)::

    description = "..."
    variants = ["baseline", "sync", "threaded", "queued", "outbox"]
    latencies_ms = [0, 500, 5000]      # fakesmtp latency after the final dot
    mode = "open"                      # "open": sign-ups arrive on a schedule, the same for
                                       # every variant; "closed": locust users, no think time
    rates = [10]                       # open loop: sign-ups per second, one cell each
    arrivals = "constant"              # open loop: "constant" gaps or "poisson" (seeded)
    seed = 1                           # the Poisson schedule's seed
    max_in_flight = 1000               # open loop: sign-ups running at once; an arrival past
                                       # it is dropped (and counted)
    min_signups = 200                  # open loop: the measured window is long enough for this
                                       # many arrivals (or duration_s, if longer)
    max_start_lag_ms = 25              # open loop: a cell whose start lag p99 is above this is
                                       # invalid (the load generator could not keep the schedule)
    capacity = false                   # open loop: step each (variant, latency) up the rates,
                                       # stopping at the first that breaks the SLO
    slo_p99_ms = 1000                  # capacity: register p99, from the intended start
    slo_bad_share = 0.01               # capacity: dropped plus failed sign-ups, a share
    gate_rules = "gates.toml"          # the rules `maillab gate` holds the run to, in
                                       # loadtests/ (a profile whose cells differ in kind)
    slo_inbox_p99_ms = 5000            # capacity: time to inbox p99 (emailing variants), from
                                       # when the POST was sent; a queue's backlog breaks it
    scenarios = ["clean", "smtp-flaky"]  # what goes wrong in a cell (loadtests/scenarios.py)
    scenario_latencies_ms = [500]      # where the scenarios other than clean run (empty: at
                                       # every latency)
    scenario_min_signups = 100         # their measured arrivals (0: min_signups); losses
                                       # need fewer sign-ups than percentiles do
    users = [10]                       # closed loop: locust users, no think time
    duration_s = 12                    # measured time per cell (at least; see min_signups)
    warmup_s = 3                       # run before it, left out of the stats
    workers = 2                        # gunicorn workers
    threads = 8                        # gunicorn threads per worker
    worker_threads = 16                # queued's consumer threads; sized like the web tier
                                       # (workers x threads), or emails wait for a free thread
    password_hash = "pbkdf2:sha256:1000"  # cheap on purpose: the lab measures email, not hashing
    inbox_deadline_s = 30              # an email later than this is missing
    drain_s = 15                       # after a cell, how long to wait for email still in flight
    render_allowance_ms = 16.7         # added to the response time for the INP proxy
    enumeration_samples = 200          # per side, the account-enumeration timing probe of
                                       # each variant (0: skip it)
    browser_signups = 0                # per cell, sign-ups in real headless Chromium during
                                       # the load (maillab.probe), spread over the window
    database = "sqlite"                # the app's users (and outbox): "sqlite", a file per
                                       # cell, or "postgresql", a database per cell
    queue = "sqlite"                   # queued's Huey: "sqlite", a file per cell, or "redis",
                                       # a private redis-server for the run
    consumers = 1                      # queued's workers or outbox's relays, each a process
    load_processes = 1                 # locust processes: above 1, a master and this many
                                       # workers, each taking its share of the schedule
    smtp = ["plain"]                   # fakesmtp as plain SMTP, or "starttls+auth": a
                                       # provider's port 587 (STARTTLS and AUTH before every
                                       # message); an axis, one cell each (the baseline sends
                                       # nothing, so it runs plain only)

A bad file or value raises :class:`ProfileError`, whose message names the file and the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from loadtests.arrivals import KINDS as ARRIVALS
from loadtests.arrivals import MAX_RATE, valid_rate
from loadtests.cellfiles import CellKey, grid
from loadtests.scenarios import BROKER_RESTART, CLEAN, PLAIN, SCENARIOS, SMTP_MODES
from loadtests.target import known_variants, variant_info

PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    pass


MODES = ("open", "closed")
DATABASES = ("sqlite", "postgresql")
QUEUES = ("sqlite", "redis")


@dataclass(frozen=True)
class Profile:
    name: str
    variants: tuple[str, ...]
    latencies_ms: tuple[int, ...]
    users: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    mode: str = "open"
    arrivals: str = "constant"
    seed: int = 1
    max_in_flight: int = 1000
    min_signups: int = 200
    max_start_lag_ms: float = 25.0
    capacity: bool = False
    slo_p99_ms: float = 1000.0
    slo_bad_share: float = 0.01
    slo_inbox_p99_ms: float = 5000.0
    gate_rules: str = "gates.toml"
    scenarios: tuple[str, ...] = (CLEAN,)
    scenario_latencies_ms: tuple[int, ...] = ()
    scenario_min_signups: int = 0
    description: str = ""
    duration_s: float = 10.0
    warmup_s: float = 2.0
    workers: int = 2
    threads: int = 8
    worker_threads: int = 16
    password_hash: str = "pbkdf2:sha256:1000"
    inbox_deadline_s: float = 30.0
    drain_s: float = 15.0
    render_allowance_ms: float = 1000 / 60
    enumeration_samples: int = 0
    browser_signups: int = 0
    database: str = "sqlite"
    queue: str = "sqlite"
    consumers: int = 1
    load_processes: int = 1
    smtp: tuple[str, ...] = (PLAIN,)
    source: str = field(default="", compare=False)

    @property
    def open_loop(self) -> bool:
        return self.mode == "open"

    def cells(self) -> list[CellKey]:
        loads: dict[str, Any] = {"rates": self.rates} if self.open_loop else {"users": self.users}
        return grid(self.variants, self.latencies_ms, scenarios=self.scenarios,
                    scenario_latencies_ms=self.scenario_latencies_ms, smtp=self.smtp, **loads)

    def run_time_s(self, key: CellKey) -> int:
        """locust's --run-time takes whole seconds: warm-up plus the measured window, rounded
        up. In open loop the window holds at least ``min_signups`` arrivals, plus one second so
        the last of them is not cut at the edge."""
        duration = self.duration_s
        wanted = self.min_signups
        if key.scenario != CLEAN and self.scenario_min_signups:
            wanted = self.scenario_min_signups
        if key.load.rate:
            duration = max(duration, wanted / key.load.rate + 1)
        return math.ceil(self.warmup_s + duration)

    def measured_s(self, key: CellKey) -> float:
        """The measured window: the run time after the warm-up."""
        return self.run_time_s(key) - self.warmup_s

    def settings(self) -> dict[str, Any]:
        """Every setting, as results.json records it (the name is the document's "profile")."""
        settings = asdict(self)
        del settings["name"]
        return settings

    def with_overrides(self, **overrides: Any) -> Profile:
        given = {k: v for k, v in overrides.items() if v is not None}
        changes: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                   for k, v in given.items()}
        changed = replace(self, **changes)
        changed._check(f"{self.source} with command-line overrides")
        return changed

    def _check(self, where: str) -> None:
        def fail(key: str, why: str) -> None:
            raise ProfileError(f"{where}: {key} {why}")

        if not self.variants:
            fail("variants", "is empty")
        known = known_variants()
        for variant in self.variants:
            if variant not in known:
                fail("variants", f"has unknown variant {variant!r}; choose from "
                     f"{', '.join(known)}")
        if not self.latencies_ms or any(not 0 <= x <= 120_000 for x in self.latencies_ms):
            fail("latencies_ms", "must be a non-empty list of 0..120000")
        if self.mode not in MODES:
            fail("mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.database not in DATABASES:
            fail("database", f"must be one of {', '.join(DATABASES)}, got {self.database!r}")
        if self.queue not in QUEUES:
            fail("queue", f"must be one of {', '.join(QUEUES)}, got {self.queue!r}")
        if self.arrivals not in ARRIVALS:
            fail("arrivals", f"must be one of {', '.join(ARRIVALS)}, got {self.arrivals!r}")
        if self.open_loop:
            if not self.rates:
                fail("rates", "must be a non-empty list of sign-ups per second in open loop "
                     "(mode = \"open\")")
            for rate in self.rates:
                if not valid_rate(rate):
                    fail("rates", f"must be sign-ups per second above 0 and at most {MAX_RATE}, "
                         f"got {rate!r}")
        elif not self.users:
            fail("users", "must be a non-empty list in closed loop (mode = \"closed\")")
        if not self.scenarios:
            fail("scenarios", "is empty; \"clean\" is the healthy run")
        for name in self.scenarios:
            if name not in SCENARIOS:
                fail("scenarios", f"has unknown scenario {name!r}; choose from "
                     f"{', '.join(SCENARIOS)}")
        if BROKER_RESTART in self.scenarios and self.queue != "redis":
            on_queue = [v for v in self.variants if variant_info(v).broker == "queue"]
            if on_queue:
                fail("scenarios", f"has {BROKER_RESTART}, which restarts the queue's server: "
                     f"{', '.join(on_queue)} need queue = \"redis\" (a SQLite queue is a file)")
        if not self.smtp or len(set(self.smtp)) != len(self.smtp):
            fail("smtp", "must be a non-empty list without repeats")
        for mode in self.smtp:
            if mode not in SMTP_MODES:
                fail("smtp", f"has unknown mode {mode!r}; choose from {', '.join(SMTP_MODES)}")
        if self.capacity and self.smtp != (PLAIN,):
            fail("smtp", "must be [\"plain\"] in a capacity run (it steps one SMTP mode)")
        rules = Path(__file__).parent / self.gate_rules
        if not rules.is_file() or rules.suffix != ".toml":
            fail("gate_rules", f"must name a rules file in {rules.parent}, got "
                 f"{self.gate_rules!r}")
        for latency in self.scenario_latencies_ms:
            if latency not in self.latencies_ms:
                fail("scenario_latencies_ms", f"has {latency}, which is not in latencies_ms")
        if self.capacity and not self.open_loop:
            fail("capacity", "steps up a rate, so it needs mode = \"open\"")
        if any(not 1 <= x <= 1000 for x in self.users):
            fail("users", "must be a list of 1..1000")
        for key, low, high in (("duration_s", 1, 3600), ("warmup_s", 0, 600),
                               ("workers", 1, 64), ("threads", 1, 1024),
                               ("worker_threads", 1, 1024),
                               ("inbox_deadline_s", 1, 600), ("drain_s", 0, 600),
                               ("render_allowance_ms", 0, 1000),
                               ("enumeration_samples", 0, 5000), ("seed", 0, 2**32 - 1),
                               ("browser_signups", 0, 1000), ("consumers", 1, 16),
                               ("load_processes", 1, 16),
                               ("max_in_flight", 1, 10_000), ("min_signups", 1, 100_000),
                               ("scenario_min_signups", 0, 100_000),
                               ("max_start_lag_ms", 0, 60_000), ("slo_p99_ms", 1, 600_000),
                               ("slo_inbox_p99_ms", 1, 600_000),
                               ("slo_bad_share", 0, 1)):
            value = getattr(self, key)
            if not low <= value <= high:
                fail(key, f"must be between {low} and {high}, got {value!r}")


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise ProfileError(f"no profile {name_or_path!r} (known: {known}, or a .toml path)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    return profile_from_mapping(path.stem, data, str(path))


def profile_from_mapping(name: str, data: dict[str, Any], source: str) -> Profile:
    known = {f.name for f in fields(Profile)} - {"name", "source"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProfileError(f"{source}: unknown key {unknown[0]!r}; "
                           f"keys: {', '.join(sorted(known))}")
    for key in ("variants", "latencies_ms"):
        if key not in data:
            raise ProfileError(f"{source}: {key} is required")
    values: dict[str, Any] = {}
    for key, value in data.items():
        expected = _TYPES[key]
        if key in _LISTS:
            if not isinstance(value, list) or not all(
                    isinstance(x, expected) and not isinstance(x, bool) for x in value):
                plural = _NAMES[key].split(" ", 1)[1] + "s"
                raise ProfileError(f"{source}: {key} must be a list of {plural}")
            values[key] = tuple(float(x) for x in value) if key == "rates" else tuple(value)
        else:
            if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
                raise ProfileError(f"{source}: {key} must be {_NAMES[key]}, got {value!r}")
            values[key] = value
    profile = Profile(name=name, source=source, **values)
    profile._check(source)
    return profile


_LISTS = ("variants", "latencies_ms", "users", "rates", "scenarios", "scenario_latencies_ms",
          "smtp")
_TYPES: dict[str, Any] = {
    "description": str, "variants": str, "latencies_ms": int, "users": int,
    "rates": (int, float), "mode": str, "arrivals": str, "seed": int, "max_in_flight": int,
    "min_signups": int, "max_start_lag_ms": (int, float), "capacity": bool,
    "slo_p99_ms": (int, float), "slo_bad_share": (int, float),
    "slo_inbox_p99_ms": (int, float), "gate_rules": str, "scenarios": str,
    "scenario_latencies_ms": int, "scenario_min_signups": int,
    "duration_s": (int, float), "warmup_s": (int, float), "workers": int, "threads": int,
    "worker_threads": int,
    "password_hash": str, "inbox_deadline_s": (int, float), "drain_s": (int, float),
    "render_allowance_ms": (int, float), "enumeration_samples": int, "browser_signups": int,
    "database": str, "queue": str, "consumers": int, "load_processes": int, "smtp": str,
}
_NAMES = {k: ("a number" if isinstance(t, tuple) else
              {"str": "a string", "int": "an integer", "bool": "true or false"}[t.__name__])
          for k, t in _TYPES.items()}
