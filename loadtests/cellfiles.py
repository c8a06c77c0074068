"""A cell's files: the one place that knows their names, columns and what "measured" means.

A cell is one (variant, SMTP latency, load) point of a run; the load is an arrival rate
(open loop, sign-ups per second) or a number of closed-loop users. The locust user records every
request as a :class:`Sample` and every sign-up as a :class:`Registration`; at the end of the
cell :class:`CellRecorder` writes them as gzip CSV into the cell's folder, and
:func:`read_samples` / :func:`read_registrations` read them back for the summary, the gate's
comparison and the report's charts.

One definition of *measured*, for latency and delivery alike: a sample or registration whose
sign-up started after the warm-up. Every sample of one sign-up (the form, the POST, its
redirect, the email, the link) carries the warm-up flag of that sign-up, so a sign-up is in
or out of the statistics as a whole. Of the measured samples, the successful ones give the
times and the others count as failures.

Latency is measured from when a step should have started: every sample carries its sign-up's
start lag (``lag_ms``, the open-loop scheduler's delay in starting it; 0 in closed loop), and
:attr:`Series.times` adds it to the service time ``ms``, as wrk2 does. An arrival that could
not start is a :class:`Registration` with ``dropped`` set: counted, never skipped.

Columns are declared once, as the dataclasses' fields; the writers and readers derive from them
(as locust's ``StatsCSV`` does), so a new column is added in one place.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadtests.scenarios import CLEAN, PLAIN, SMTP_MODES, scenario, smtp_mode_for

if TYPE_CHECKING:
    import numpy as np

SAMPLES_FILE = "samples.csv.gz"
REGISTRATIONS_FILE = "registrations.csv.gz"
MERGED_FILE = "load_counts.json"  # what merge_parts joined, and the load's own count
BROWSER_FILE = "browser.csv"  # the browser probe's sign-ups (maillab.probe.BrowserSignup)
CELLS_DIR = "cells"

# The names samples are recorded under (locust request names) and read back by.
REGISTER_FORM = "register_form"
REGISTER = "register"
REGISTER_SENT = "register_sent"
INP_PROXY = "inp_proxy"
TIME_TO_INBOX = "time_to_inbox"
VERIFY = "verify"
START_LAG = "start_lag"  # shown in locust's UI only; the registration holds the figure


class CellFileError(ValueError):
    """A cell file that cannot be read; the message names the file."""


@dataclass(frozen=True, order=True)
class Load:
    """What a cell offers the app: ``rate`` sign-ups per second on a schedule (open loop) or
    ``users`` signing up over and over (closed loop); exactly one is set."""

    users: int = 0
    rate: float = 0.0

    def __post_init__(self) -> None:
        if (self.users > 0) == (self.rate > 0):
            raise ValueError(f"a load is users or a rate, not both or neither: {self!r}")

    @property
    def short(self) -> str:
        """``10rps`` or ``10u``."""
        return f"{self.rate:g}rps" if self.rate else f"{self.users}u"

    @property
    def title(self) -> str:
        """``10 sign-ups/s`` or ``10 users``."""
        if self.rate:
            return f"{self.rate:g} sign-ups/s"
        return f"{self.users} user{'' if self.users == 1 else 's'}"


@dataclass(frozen=True, order=True)
class CellKey:
    """Where a cell sits in a run's grid; its folder name and label derive from it."""

    variant: str
    latency_ms: int
    load: Load
    scenario: str = CLEAN
    smtp: str = PLAIN

    @property
    def folder(self) -> str:
        """The cell's folder, relative to the run directory: ``cells/sync-500ms-10rps``, or
        ``cells/sync-500ms-10rps-smtp-flaky`` under a scenario, ``...-starttls-auth`` on a
        provider-like SMTP server."""
        load = f"{self.latency_ms}ms-{self.load.short}"
        smtp = "" if self.smtp == PLAIN else "-" + self.smtp.replace("+", "-")
        return f"{CELLS_DIR}/{self.variant}-{load}{self._suffix('-')}{smtp}"

    @property
    def label(self) -> str:
        """The short label tables, gate.json and warnings use: ``sync@500ms/10rps``, or
        ``sync@500ms/10rps/smtp-flaky`` under a scenario, ``sync@500ms/10rps+starttls+auth``
        on a provider-like SMTP server."""
        smtp = "" if self.smtp == PLAIN else f"+{self.smtp}"
        return (f"{self.variant}@{self.latency_ms}ms/{self.load.short}{self._suffix('/')}"
                f"{smtp}")

    @property
    def title(self) -> str:
        """The label for people: ``sync @ 500 ms x 10 sign-ups/s (smtp-flaky)``."""
        scenario = f" ({self.scenario})" if self.scenario != CLEAN else ""
        smtp = "" if self.smtp == PLAIN else f" over {SMTP_MODES[self.smtp]}"
        return f"{self.variant} @ {self.latency_ms} ms x {self.load.title}{scenario}{smtp}"

    def _suffix(self, separator: str) -> str:
        return "" if self.scenario == CLEAN else separator + self.scenario


def grid(variants: Sequence[str], latencies_ms: Sequence[int], users: Sequence[int] = (),
         rates: Sequence[float] = (), scenarios: Sequence[str] = (CLEAN,),
         scenario_latencies_ms: Sequence[int] = (),
         smtp: Sequence[str] = (PLAIN,)) -> list[CellKey]:
    """Every cell of a profile, SMTP mode first, then latency, so one fakesmtp (and one
    setting of it) runs at a time: one per rate when rates are given (open loop), else one per
    users count; one per scenario that applies to the variant, ``clean`` at every latency and
    the others at ``scenario_latencies_ms`` (every latency when empty). A variant that sends
    nothing (the baseline) runs on plain SMTP only."""
    loads = [Load(rate=r) for r in rates] or [Load(users=u) for u in users]
    return [CellKey(v, lat, load, name, mode) for mode in smtp for lat in latencies_ms
            for load in loads for name in scenarios
            if name == CLEAN or not scenario_latencies_ms or lat in scenario_latencies_ms
            for v in variants if scenario(name).applies_to(v) and smtp_mode_for(v, mode) == mode]


@dataclass(frozen=True)
class Sample:
    """One measurement: a request, or a custom timing (INP proxy, time to inbox).

    ``start`` is epoch seconds when it started (for custom timings, when the POST was sent);
    ``ms`` is the service time; ``warmup`` is whether its sign-up started during the warm-up;
    ``lag_ms`` is how late its sign-up started against the schedule.
    """

    name: str
    type: str
    start: float
    ms: float
    ok: bool
    warmup: bool
    lag_ms: float = 0.0


@dataclass
class Registration:
    """One sign-up, recorded when it arrives (open loop) or before its POST (closed loop), so an
    address the server may have seen is never uncounted; the rest is filled in as it goes on.

    ``intended_at`` is when the schedule said it should start, ``lag_ms`` how late it started
    (None: it never did), ``dropped`` that it could not start (the cap on sign-ups in flight),
    ``sent_at`` when its POST was sent (None: it did not get that far).
    """

    email: str
    sent_at: float | None
    warmup: bool
    status: int | None = None
    inbox_ms: float | None = None
    verify_status: int | None = None
    intended_at: float | None = None
    lag_ms: float | None = None
    dropped: bool = False
    # What the target's statuses made of the answers (its signup's ``accepted``, its
    # verify's ``verified``); None in files written before targets, read as maillab's own
    # 303 and 200.
    told: bool | None = None
    confirmed: bool | None = None

    @property
    def accepted(self) -> bool:
        """The app answered the POST with a status the target calls accepted: the person was
        told to check their email."""
        return self.told if self.told is not None else self.status == 303

    @property
    def verified(self) -> bool:
        """The link's answer was one the target calls verified."""
        return self.confirmed if self.confirmed is not None else self.verify_status == 200


SAMPLE_COLUMNS = tuple(f.name for f in fields(Sample))
REGISTRATION_COLUMNS = tuple(f.name for f in fields(Registration))
# Columns added since the first format; files written before them read with the defaults.
_ADDED = {"lag_ms", "intended_at", "dropped", "told", "confirmed"}


@dataclass
class CellRecorder:
    """What the locust user records during a cell; :meth:`write` puts it in the cell's folder."""

    samples: list[Sample] = field(default_factory=list)
    registrations: list[Registration] = field(default_factory=list)

    def clear(self) -> None:
        self.samples.clear()
        self.registrations.clear()

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / SAMPLES_FILE, SAMPLE_COLUMNS, (astuple(s) for s in self.samples))
        _write(folder / REGISTRATIONS_FILE, REGISTRATION_COLUMNS,
               (astuple(r) for r in self.registrations))


class PartRecorder:
    """What one load process records, streamed to its own part files as it is made, so a long
    soak keeps the load generator's memory flat: a sample is written when it is fired, a
    registration when its sign-up ends (it is filled in as it goes on). The files carry an
    ``.open`` suffix until :meth:`close`, so a part whose process died is told apart from a
    finished one. Every process of a distributed load writes its own part (``tag``: its worker
    index); :func:`merge_parts` joins them into the cell's two files."""

    def __init__(self, folder: Path, tag: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = (folder / f"{_SAMPLES_PART}{tag}{_PART_SUFFIX}",
                      folder / f"{_REGISTRATIONS_PART}{tag}{_PART_SUFFIX}")
        self._files = [gzip.open(_opened(path), "wt", newline="", encoding="utf-8")
                       for path in self.paths]
        self._samples, self._registrations = (csv.writer(f) for f in self._files)
        self._samples.writerow(SAMPLE_COLUMNS)
        self._registrations.writerow(REGISTRATION_COLUMNS)
        self.samples = self.registrations = 0
        self.closed = False

    def sample(self, sample: Sample) -> None:
        self._samples.writerow(tuple(_cell(v) for v in astuple(sample)))
        self.samples += 1

    def registration(self, registration: Registration) -> None:
        self._registrations.writerow(tuple(_cell(v) for v in astuple(registration)))
        self.registrations += 1

    def close(self, requests: int) -> None:
        """Finish the part; ``requests`` is how many timings the process fired, counted apart
        from the writer, so the merge can check that every one of them was kept."""
        if self.closed:
            return
        self.closed = True
        for handle, path in zip(self._files, self.paths, strict=True):
            handle.close()
            _opened(path).replace(path)
        tag = self.paths[0].name[len(_SAMPLES_PART):-len(_PART_SUFFIX)]
        counts = self.paths[0].with_name(f"{_COUNTS_PART}{tag}.json")
        counts.write_text(json.dumps({"requests": requests, "samples": self.samples,
                                      "registrations": self.registrations}))


_SAMPLES_PART = "samples.part-"
_REGISTRATIONS_PART = "registrations.part-"
_COUNTS_PART = "counts.part-"
_PART_SUFFIX = ".csv.gz"


def _opened(path: Path) -> Path:
    return path.with_name(path.name + ".open")


@dataclass(frozen=True)
class Merged:
    """What :func:`merge_parts` joined: the load processes' parts, the rows kept, the timings
    the processes said they fired (None: a part has no count), and parts left unfinished (a
    process that died before closing them; what they hold is merged too, up to the break)."""

    parts: int
    samples: int
    registrations: int
    requests: int | None = None
    unfinished: tuple[str, ...] = ()

    @property
    def problems(self) -> list[str]:
        """Why the merged samples cannot be trusted whole; empty when every timing was kept."""
        found = []
        if self.unfinished:
            names = ", ".join(self.unfinished)
            found.append(f"a load process did not finish its samples ({names})")
        if self.requests is None:
            found.append("a load process did not say how many timings it fired")
        elif self.requests != self.samples:
            found.append(f"the load processes fired {self.requests} timings but "
                         f"{self.samples} samples were kept")
        return found


def merge_parts(folder: Path) -> Merged:
    """Join every process's part files in ``folder`` into :data:`SAMPLES_FILE` and
    :data:`REGISTRATIONS_FILE` (row by row: the runner's memory stays flat too), then remove
    the parts; what was joined is kept in :data:`MERGED_FILE`. With no parts (merged already,
    by the only load process), that record is read back."""
    samples = sorted(folder.glob(f"{_SAMPLES_PART}*{_PART_SUFFIX}"))
    registrations = sorted(folder.glob(f"{_REGISTRATIONS_PART}*{_PART_SUFFIX}"))
    unfinished = sorted(folder.glob(f"*.part-*{_PART_SUFFIX}.open"))
    if not samples and not registrations and not unfinished:
        try:
            kept = json.loads((folder / MERGED_FILE).read_text())
            return Merged(kept["parts"], kept["samples"], kept["registrations"],
                          kept["requests"], tuple(kept["unfinished"]))
        except (OSError, ValueError, KeyError, TypeError):
            return Merged(0, 0, 0)
    requests: int | None = 0
    for part in samples:
        sidecar = folder / f"{_COUNTS_PART}{part.name[len(_SAMPLES_PART):-len(_PART_SUFFIX)]}.json"
        try:
            requests = None if requests is None else requests + int(
                json.loads(sidecar.read_text())["requests"])
        except (OSError, ValueError, KeyError, TypeError):
            requests = None
        sidecar.unlink(missing_ok=True)
    if unfinished:
        requests = None
    counts = []
    for target, prefix, columns in ((SAMPLES_FILE, _SAMPLES_PART, SAMPLE_COLUMNS),
                                    (REGISTRATIONS_FILE, _REGISTRATIONS_PART,
                                     REGISTRATION_COLUMNS)):
        parts = sorted([*folder.glob(f"{prefix}*{_PART_SUFFIX}"),
                        *folder.glob(f"{prefix}*{_PART_SUFFIX}.open")])
        rows = (tuple(row[c] for c in columns)
                for part in parts for row in _part_rows(part, columns))
        counted = _Counted(rows)
        _write(folder / target, columns, counted)
        counts.append(counted.n)
        for part in parts:
            part.unlink()
    merged = Merged(len(samples) + len(unfinished) // 2, counts[0], counts[1], requests,
                    tuple(p.name for p in unfinished))
    (folder / MERGED_FILE).write_text(json.dumps(asdict(merged)))
    return merged


class _Counted:
    def __init__(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self.rows, self.n = rows, 0

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for row in self.rows:
            self.n += 1
            yield row


def _part_rows(path: Path, columns: Sequence[str]) -> Iterator[dict[str, str]]:
    """A part's rows; one whose process died mid-write ends at its last whole row."""
    if path.name.endswith(".open"):
        try:
            yield from _rows(path, columns)
        except CellFileError:
            return
        return
    yield from _rows(path, columns)


def _write(path: Path, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    # Written to a temporary name and renamed, so a reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(tuple(_cell(v) for v in row) for row in rows)
    tmp.replace(path)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def _rows(path: Path, columns: Sequence[str]) -> Iterator[dict[str, str]]:
    try:
        with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            absent = [c for c in columns
                      if c not in (reader.fieldnames or ()) and c not in _ADDED]
            if absent:
                raise CellFileError(f"{path}: no column {', '.join(absent)}")
            yield from reader
    except (OSError, EOFError, csv.Error, UnicodeDecodeError) as exc:
        raise CellFileError(f"{path}: cannot be read ({exc})") from None


def _flag(text: str) -> bool:
    return text == "1"


def _optional_flag(text: str) -> bool | None:
    return text == "1" if text else None


def _optional_int(text: str) -> int | None:
    return int(text) if text else None


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


@dataclass(frozen=True)
class Series:
    """Every sample of one name, as arrays of equal length."""

    start: np.ndarray
    ms: np.ndarray
    ok: np.ndarray
    warmup: np.ndarray
    lag: np.ndarray

    def __len__(self) -> int:
        return len(self.ms)

    @property
    def measured(self) -> np.ndarray:
        """The mask of samples outside the warm-up."""
        return ~self.warmup

    @property
    def latency(self) -> np.ndarray:
        """Milliseconds from when each step should have started: service time plus the start
        lag of its sign-up."""
        return self.ms + self.lag

    @property
    def times(self) -> list[float]:
        """Measured successful samples' latency, sorted: what percentiles are taken of."""
        return sorted(float(x) for x in self.latency[self.measured & self.ok])

    @property
    def failures(self) -> int:
        """Measured samples that failed."""
        return int((self.measured & ~self.ok).sum())


@dataclass(frozen=True)
class CellSamples:
    """A cell's samples by name; a name with no samples reads as an empty series."""

    by_name: dict[str, Series]

    def __getitem__(self, name: str) -> Series:
        found = self.by_name.get(name)
        return found if found is not None else _empty()

    def __contains__(self, name: str) -> bool:
        return name in self.by_name and len(self.by_name[name]) > 0

    def values(self) -> Iterable[Series]:
        return self.by_name.values()


def _empty() -> Series:
    import numpy as np

    return Series(np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool),
                  np.zeros(0))


def read_sample_rows(folder: Path) -> list[Sample]:
    """The cell's samples as written, one :class:`Sample` each; raises :class:`CellFileError`
    naming the file when it is absent or unreadable."""
    path = folder / SAMPLES_FILE
    if not path.exists():
        raise CellFileError(f"{path}: no samples were kept for this cell")
    try:
        return [Sample(row["name"], row["type"], float(row["start"]), float(row["ms"]),
                       _flag(row["ok"]), _flag(row["warmup"]), float(row.get("lag_ms") or 0.0))
                for row in _rows(path, SAMPLE_COLUMNS)]
    except ValueError as exc:
        raise CellFileError(f"{path}: a value is not a number ({exc})") from None


def read_samples(folder: Path) -> CellSamples:
    """The cell's samples by name, as arrays; raises :class:`CellFileError` naming the file
    when it is absent or unreadable."""
    import numpy as np

    columns: dict[str, list[Sample]] = {}
    for sample in read_sample_rows(folder):
        columns.setdefault(sample.name, []).append(sample)
    return CellSamples({name: Series(np.asarray([s.start for s in rows], dtype=float),
                                     np.asarray([s.ms for s in rows], dtype=float),
                                     np.asarray([s.ok for s in rows], dtype=bool),
                                     np.asarray([s.warmup for s in rows], dtype=bool),
                                     np.asarray([s.lag_ms for s in rows], dtype=float))
                        for name, rows in columns.items()})


def read_registrations(folder: Path) -> list[Registration]:
    """Every registration of the cell, addresses lower-cased (fakesmtp's capture is); an empty
    list when the cell recorded none."""
    path = folder / REGISTRATIONS_FILE
    if not path.exists():
        return []
    try:
        return [Registration(email=row["email"].lower(), sent_at=_optional_float(row["sent_at"]),
                             warmup=_flag(row["warmup"]), status=_optional_int(row["status"]),
                             inbox_ms=_optional_float(row["inbox_ms"]),
                             verify_status=_optional_int(row["verify_status"]),
                             intended_at=_optional_float(row.get("intended_at") or ""),
                             lag_ms=_optional_float(row.get("lag_ms") or ""),
                             dropped=_flag(row.get("dropped") or "0"),
                             told=_optional_flag(row.get("told") or ""),
                             confirmed=_optional_flag(row.get("confirmed") or ""))
                for row in _rows(path, REGISTRATION_COLUMNS)]
    except ValueError as exc:
        raise CellFileError(f"{path}: a value is not a number ({exc})") from None
