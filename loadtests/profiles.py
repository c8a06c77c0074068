"""Bench profiles: which cells to run and how, from ``loadtests/profiles/<name>.toml``.

Keys (every one optional but ``variants``, ``latencies_ms`` and ``users``)::

    description = "..."
    variants = ["baseline", "sync", "threaded", "queued"]
    latencies_ms = [0, 500, 5000]      # fakesmtp latency after the final dot
    users = [10]                       # locust users, closed loop, no think time
    duration_s = 12                    # measured time per cell
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

A bad file or value raises :class:`ProfileError`, whose message names the file and the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from apps.core.registry import VARIANTS
from loadtests.cellfiles import CellKey, grid

PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    variants: tuple[str, ...]
    latencies_ms: tuple[int, ...]
    users: tuple[int, ...]
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
    source: str = field(default="", compare=False)

    def cells(self) -> list[CellKey]:
        return grid(self.variants, self.latencies_ms, self.users)

    @property
    def run_time_s(self) -> int:
        """locust's --run-time takes whole seconds: warm-up plus duration, rounded up."""
        return math.ceil(self.warmup_s + self.duration_s)

    @property
    def measured_s(self) -> float:
        """The measured window: the run time after the warm-up."""
        return self.run_time_s - self.warmup_s

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
        for variant in self.variants:
            if variant not in VARIANTS:
                fail("variants", f"has unknown variant {variant!r}; choose from "
                     f"{', '.join(VARIANTS)}")
        if not self.latencies_ms or any(not 0 <= x <= 120_000 for x in self.latencies_ms):
            fail("latencies_ms", "must be a non-empty list of 0..120000")
        if not self.users or any(not 1 <= x <= 1000 for x in self.users):
            fail("users", "must be a non-empty list of 1..1000")
        for key, low, high in (("duration_s", 1, 3600), ("warmup_s", 0, 600),
                               ("workers", 1, 64), ("threads", 1, 1024),
                               ("worker_threads", 1, 1024),
                               ("inbox_deadline_s", 1, 600), ("drain_s", 0, 600),
                               ("render_allowance_ms", 0, 1000),
                               ("enumeration_samples", 0, 5000)):
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
    for key in ("variants", "latencies_ms", "users"):
        if key not in data:
            raise ProfileError(f"{source}: {key} is required")
    values: dict[str, Any] = {}
    for key, value in data.items():
        expected = _TYPES[key]
        if key in ("variants", "latencies_ms", "users"):
            if not isinstance(value, list) or not all(
                    isinstance(x, expected) and not isinstance(x, bool) for x in value):
                raise ProfileError(f"{source}: {key} must be a list of {expected.__name__}")
            values[key] = tuple(value)
        else:
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ProfileError(f"{source}: {key} must be {_NAMES[key]}, got {value!r}")
            values[key] = value
    profile = Profile(name=name, source=source, **values)
    profile._check(source)
    return profile


_TYPES: dict[str, Any] = {
    "description": str, "variants": str, "latencies_ms": int, "users": int,
    "duration_s": (int, float), "warmup_s": (int, float), "workers": int, "threads": int,
    "worker_threads": int,
    "password_hash": str, "inbox_deadline_s": (int, float), "drain_s": (int, float),
    "render_allowance_ms": (int, float), "enumeration_samples": int,
}
_NAMES = {k: ("a number" if isinstance(t, tuple) else
              {"str": "a string", "int": "an integer"}[t.__name__]) for k, t in _TYPES.items()}
