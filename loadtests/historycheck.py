"""A run judged against its history (``maillab gate RUN --history DIR``).

For each cell x figure of the run, the series is that cell's figure in the history's earlier
runs of the same machine (fingerprint), target (name and file hash) and profile, cells valid
for the figure's question only. Then:

- **Timing** (register and time to inbox, p50 and p95): change points are found in the series
  (ruptures' PELT on a squared-error cost, a penalty of 2 log n times the series' noise,
  estimated from successive differences so a step does not inflate it), and the new value is
  judged against the segment it would fall in, the last: a one-sided t test of a new
  observation against the segment (the prediction interval: mean and s x sqrt(1 + 1/n)), and a
  change of at least ``min_effect`` of the segment's mean.
- **Counts** (emails lost, sent twice, failures shown): an exact binomial test of the run's
  count of its registrations against the segment's rate, taken at its upper bound (Clopper-
  Pearson at 1 - alpha): a history of zeros over N sign-ups allows a rate of
  1 - alpha^(1/N), so one lost email in a run is not a regression, eight are.

The p values of every check of the run are adjusted together (Benjamini-Hochberg): with the
false discovery rate held at ``alpha``, a run that changed nothing raises a false alarm with
a probability of at most ``alpha`` (0.01 by default: about one run in a hundred).

ruptures is used for the change points (a well-kept library; apache-otava and MongoDB's
signal-processing-algorithms pin numpy versions this project's other libraries do not allow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ruptures
from scipy import stats

from loadtests.history import History, fingerprint
from loadtests.results import CellResult, HistoryCheck, HistoryReport, Results

TIMING = ("register.p50_ms", "register.p95_ms", "time_to_inbox.p50_ms", "time_to_inbox.p95_ms")
# figure -> the registrations it is a count of
COUNTS = ("delivery.missing", "delivery.duplicates", "delivery.failed_visibly")
MIN_HISTORY = 5  # earlier runs of a cell before its figures are judged against them
MIN_SEGMENT = 3  # runs in a segment between change points


class HistoryMismatch(ValueError):
    """The history holds no run comparable with this one; the message says why."""


@dataclass(frozen=True)
class _Series:
    run_ids: list[str]
    values: list[float]
    registered: list[float]


def comparable(history: History, results: Results, any_machine: bool = False,
               ) -> tuple[list[dict[str, Any]], str | None]:
    """The history's runs this run may be compared with (same target, file hash and profile;
    same machine unless ``any_machine``), oldest first, and a warning when machines differ."""
    target = results.target
    name = target.name if target else "maillab"
    sha = target.sha256 if target else None
    same = [e for e in history.entries if e["run_id"] != results.run_id
            and e["target"].get("name") == name and e["target"].get("sha256") == sha
            and e["profile"] == results.profile]
    machine = fingerprint(results)["id"]
    here = [e for e in same if e["fingerprint"].get("id") == machine]
    if here or not same:
        return here, None
    others = sorted({e["fingerprint"].get("id") for e in same})
    if not any_machine:
        raise HistoryMismatch(
            f"{history.path}: no earlier {name}/{results.profile} run on this machine "
            f"(fingerprint {machine}; the history has {', '.join(map(str, others))}): "
            "timings from another machine say nothing about this one (--any-machine to "
            "compare anyway)")
    return same, (f"compared across machines (this one {machine}, the history's "
                  f"{', '.join(map(str, others))}): its timing checks mean little")


def _series(entries: list[dict[str, Any]], cell: CellResult, figure: str,
            family: str) -> _Series:
    ids, values, registered = [], [], []
    for entry in entries:
        for c in entry["cells"]:
            if c["cell"] != cell.label or family in c.get("invalid_for", []):
                continue
            value = c["figures"].get(figure)
            if value is not None:
                ids.append(entry["run_id"])
                values.append(float(value))
                registered.append(float(c["figures"].get("delivery.registered") or 0))
    return _Series(ids, values, registered)


def change_points(values: Sequence[float]) -> list[int]:
    """Where each segment after the first starts (empty: no change point), by one PELT fit."""
    n = len(values)
    if n < 2 * MIN_SEGMENT:
        return []
    signal = np.asarray(values, dtype=float)
    # The noise from successive differences: a step between segments adds one large
    # difference, not a wider spread.
    sigma = float(np.median(np.abs(np.diff(signal)))) / (0.6745 * math.sqrt(2))
    if sigma <= 0:
        sigma = float(np.std(signal)) or 1e-9
    breaks = ruptures.Pelt(model="l2", min_size=MIN_SEGMENT, jump=1).fit(
        signal.reshape(-1, 1)).predict(pen=2 * math.log(n) * sigma ** 2)
    return [b for b in breaks if b < n]


def last_segment(values: Sequence[float]) -> int:
    """Where the series' last segment starts (0: no change point)."""
    found = change_points(values)
    return found[-1] if found else 0


def _timing_p(segment: Sequence[float], value: float) -> float:
    """One-sided p that ``value`` is no worse (larger) than the segment's next run."""
    n = len(segment)
    mean, s = float(np.mean(segment)), float(np.std(segment, ddof=1))
    if s == 0:
        return 0.0 if value > mean else 1.0
    t = (value - mean) / (s * math.sqrt(1 + 1 / n))
    return float(stats.t.sf(t, df=n - 1))


def count_bound(events: float, trials: float, alpha: float) -> float:
    """The upper Clopper-Pearson bound at 1 - alpha of a rate seen ``events`` times in
    ``trials``."""
    if trials <= 0:
        return 1.0
    if events >= trials:
        return 1.0
    return float(stats.beta.ppf(1 - alpha, events + 1, trials - events))


def _benjamini_hochberg(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    q = [1.0] * len(p)
    running = 1.0
    for rank, index in reversed(list(enumerate(order, 1))):
        running = min(running, p[index] * len(p) / rank)
        q[index] = running
    return q


def check_history(results: Results, history: History, alpha: float = 0.01,
                  min_effect: float = 0.10, any_machine: bool = False) -> HistoryReport:
    """Every cell x figure of ``results`` against ``history`` (see the module's docstring)."""
    entries, warning = comparable(history, results, any_machine)
    checks: list[HistoryCheck] = []
    for cell in results.cells:
        for figure in (*TIMING, *(COUNTS if cell.sends_email else ())):
            family = "timing" if figure in TIMING else "delivery"
            value = cell.metric(*figure.split(".", 1))
            if value is None:
                continue
            if family in cell.invalid_for:
                checks.append(HistoryCheck(cell=cell.label, figure=figure, value=value,
                                           verdict="skipped", detail=f"the cell is invalid "
                                           f"for {family}"))
                continue
            series = _series(entries, cell, figure, family)
            if len(series.values) < MIN_HISTORY:
                checks.append(HistoryCheck(
                    cell=cell.label, figure=figure, value=value, history=len(series.values),
                    verdict="skipped", detail=f"{len(series.values)} earlier runs of this "
                    f"cell; {MIN_HISTORY} are needed"))
                continue
            breaks = change_points(series.values) if family == "timing" else []
            start = breaks[-1] if breaks else 0
            segment = series.values[start:]
            check = HistoryCheck(cell=cell.label, figure=figure, value=value,
                                 history=len(series.values), segment=len(segment),
                                 segment_since=series.run_ids[start],
                                 change_points=[series.run_ids[i] for i in breaks],
                                 verdict="pass")
            if family == "timing":
                mean = float(np.mean(segment))
                check.expected = round(mean, 3)
                check.change = round(value / mean - 1, 4) if mean else None
                check.p_value = _timing_p(segment, value)
            else:
                events = sum(segment)
                trials = sum(series.registered[start:])
                rate = count_bound(events, trials, alpha)
                registered = float(cell.metric("delivery", "registered") or 0)
                check.expected = round(rate * registered, 3)
                check.p_value = (float(stats.binom.sf(value - 1, registered, rate))
                                 if value > 0 and registered else 1.0)
            checks.append(check)
    judged = [c for c in checks if c.p_value is not None]
    for check, q in zip(judged, _benjamini_hochberg([c.p_value or 1.0 for c in judged]),
                        strict=True):
        check.q_value = q
        large = (check.change is None or check.change >= min_effect)
        if q < alpha and large:
            check.verdict = "fail"
            check.detail = (f"{check.value:g} against {check.expected:g} expected "
                            f"(q {q:.2g} after Benjamini-Hochberg over {len(judged)} checks)")
    return HistoryReport(alpha=alpha, min_effect=min_effect, runs=len(entries),
                         path=str(history.path),
                         warning=warning, checks=checks,
                         expected_false_alarms=f"at most {alpha:g} per run (the false "
                         f"discovery rate over the run's {len(judged)} checks, held at "
                         f"{alpha:g} by Benjamini-Hochberg)")

