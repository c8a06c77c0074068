"""The run-time configuration: latency per phase, fault rules, RNG seed.

JSON form (``GET /api/config``; ``PATCH /api/config`` takes any subset of it)::

    {"latency": {"connect": "0", ..., "eom": "200ms", "quit": "0"},
     "faults": [{"id": "r1", "phase": "rcpt", "reply": 550, "prob": 0.1, "to": "*@fail.test"}],
     "seed": 1234}

PATCH merges: a phase left out of ``latency`` keeps its spec (``"0"`` or ``null`` removes it);
``faults``, when given, replaces the whole list (and resets its counters); ``seed``, when given,
reseeds. Anything else is a :class:`ConfigError` naming the field, and nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fakesmtp.faults import FaultError, FaultRule, check_unique, parse_fault, rules_from_json
from fakesmtp.latency import PHASES, LatencyError, LatencySpec, check_phase, parse_latency
from fakesmtp.numbers import shown


class ConfigError(ValueError):
    """Invalid configuration input; ``field`` is a path such as ``latency.eom`` or
    ``faults[0].reply``."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True)
class Config:
    """Immutable; a change builds a new Config. ``latency`` holds only non-zero phases.
    ``seed`` None means "pick one at start-up" (the server then reports the one it picked)."""

    latency: Mapping[str, LatencySpec] = field(default_factory=dict)
    faults: tuple[FaultRule, ...] = ()
    seed: int | None = None

    @classmethod
    def build(
        cls,
        latency: Mapping[str, str | LatencySpec] | None = None,
        faults: Iterable[str | FaultRule | Mapping[str, Any]] = (),
        seed: int | None = None,
    ) -> Config:
        """Convenience constructor from spec strings, rule strings, rule dicts or parsed values."""
        specs: dict[str, LatencySpec] = {}
        for phase, spec in (latency or {}).items():
            try:
                check_phase(phase)
                parsed = spec if isinstance(spec, LatencySpec) else parse_latency(spec)
            except LatencyError as err:
                raise ConfigError(str(err), f"latency.{phase}") from None
            if not parsed.is_zero:
                specs[phase] = parsed
        rules: list[FaultRule] = []
        for i, item in enumerate(faults):
            try:
                if isinstance(item, FaultRule):
                    rules.append(item)
                elif isinstance(item, str):
                    rules.append(parse_fault(item, f"r{i + 1}"))
                else:
                    rules.append(FaultRule.from_mapping(item, f"r{i + 1}"))
            except FaultError as err:
                raise ConfigError(str(err), f"faults[{i}].{err.field}".rstrip(".")) from None
        try:
            check_unique(rules)
        except FaultError as err:
            raise ConfigError(str(err), "faults") from None
        return cls(dict(specs), tuple(rules), seed)

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": {p: str(self.latency[p]) if p in self.latency else "0" for p in PHASES},
            "faults": [rule.to_json() for rule in self.faults],
            "seed": self.seed,
        }

    def patched(self, patch: Any) -> Config:
        """A new Config with ``patch`` (a decoded JSON object) merged in; see the module doc."""
        if not isinstance(patch, Mapping):
            raise ConfigError("expected a JSON object", "body")
        unknown = sorted(set(patch) - {"latency", "faults", "seed"})
        if unknown:  # quoted, as the field alone says nothing when the key is ""
            raise ConfigError(f"unknown key {shown(unknown[0])}; keys: latency, faults, seed",
                              unknown[0])
        new = self
        if "latency" in patch:
            new = replace(new, latency=_merge_latency(new.latency, patch["latency"]))
        if "faults" in patch:
            try:
                rules = rules_from_json(patch["faults"] if patch["faults"] is not None else [])
            except FaultError as err:
                raise ConfigError(str(err), err.field or "faults") from None
            new = replace(new, faults=rules)
        if "seed" in patch:
            seed = patch["seed"]
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise ConfigError("must be an integer", "seed")
            new = replace(new, seed=seed)
        return new

    def describe(self) -> str:
        """One human line: ``latency eom=200ms; faults r1(...)`` (CLI start-up, inbox page)."""
        lat = " ".join(f"{p}={self.latency[p]}" for p in PHASES if p in self.latency) or "none"
        rules = " ".join(str(rule) for rule in self.faults) or "none"
        return f"latency: {lat}; faults: {rules}; seed: {self.seed}"


def _merge_latency(current: Mapping[str, LatencySpec], patch: Any) -> dict[str, LatencySpec]:
    if not isinstance(patch, Mapping):
        raise ConfigError("expected an object of phase: spec", "latency")
    merged = dict(current)
    for phase, spec in patch.items():
        name = f"latency.{phase}"
        try:
            check_phase(phase)
            parsed = parse_latency("0" if spec is None else spec)
        except LatencyError as err:
            raise ConfigError(str(err), name) from None
        if parsed.is_zero:
            merged.pop(phase, None)
        else:
            merged[phase] = parsed
    return merged
