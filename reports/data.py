"""A stored run as the report sees it: the run's one loader, plus the report's own choices.

The run is read by :func:`loadtests.results.load_run` (typed, checked, samples on demand);
this module only adds what the page decides: which users count the per-latency charts use,
which cell speaks for a variant in the verdict, the grid's conditions and its missing cells.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from loadtests.results import CellResult, Run, RunError, load_run

ReportError = RunError  # what the report raises for a run it cannot read: the run's own error


@dataclass(frozen=True, order=True)
class Condition:
    """The load a cell ran under: SMTP latency and concurrent users."""

    latency_ms: int
    users: int

    @property
    def label(self) -> str:
        return f"{self.latency_ms} ms · {self.users} u"


class ReportRun(Run):
    @property
    def conditions(self) -> list[Condition]:
        """Every (latency, users) pair of the grid, sorted by latency then users."""
        return sorted(Condition(lat, u) for lat in self.latencies for u in self.users)

    @property
    def focus_users(self) -> int | None:
        """The users count the per-latency charts and the verdict use: the most common one
        among the cells (ties go to the larger count); None when the run has no cells."""
        counts = Counter(c.users for c in self.cells)
        if not counts:
            return self.users[-1] if self.users else None
        return max(counts, key=lambda u: (counts[u], u))

    @property
    def missing(self) -> list[tuple[str, Condition]]:
        """Cells of the grid (profile settings, else the cells' own axes) that did not run."""
        return [(v, cond) for cond in self.conditions for v in self.variants
                if self.cell(v, cond.latency_ms, cond.users) is None]

    def verdict_cell(self, variant: str) -> CellResult | None:
        """The cell that speaks for ``variant`` in the verdict: the highest SMTP latency at
        :attr:`focus_users`; a variant with no cell there falls back to its highest latency,
        then most users."""
        mine = [c for c in self.cells if c.variant == variant]
        at_focus = [c for c in mine if c.users == self.focus_users]
        return max(at_focus or mine, key=lambda c: (c.smtp_latency_ms, c.users), default=None)


def load_report_run(run_dir: Path) -> ReportRun:
    """:func:`loadtests.results.load_run`, as a :class:`ReportRun`; raises ReportError."""
    run = load_run(run_dir)
    return ReportRun(run.run_dir, run.results, run.gate, run.gate_error)
