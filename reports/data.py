"""A stored run as the report sees it: the run's one loader, plus the report's own choices.

The run is read by :func:`loadtests.results.load_run` (typed, checked, samples on demand);
this module only adds what the page decides: which load the per-latency charts use, which cell
speaks for a variant in the verdict, the grid's conditions and its missing cells.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from loadtests.cellfiles import CellKey, Load
from loadtests.results import CellResult, Run, RunError, load_run
from loadtests.scenarios import CLEAN, PLAIN

ReportError = RunError  # what the report raises for a run it cannot read: the run's own error


@dataclass(frozen=True, order=True)
class Condition:
    """What a cell ran under: SMTP latency, the load (a rate or users), the scenario and the
    SMTP mode."""

    latency_ms: int
    load: Load
    scenario: str = CLEAN
    smtp: str = PLAIN

    @property
    def label(self) -> str:
        scenario = "" if self.scenario == CLEAN else f" · {self.scenario}"
        smtp = "" if self.smtp == PLAIN else f" · {self.smtp}"
        return f"{self.latency_ms} ms · {self.load.short}{scenario}{smtp}"

    def key(self, variant: str) -> CellKey:
        return CellKey(variant, self.latency_ms, self.load, self.scenario, self.smtp)


class ReportRun(Run):
    @property
    def conditions(self) -> list[Condition]:
        """Every (latency, load, scenario, SMTP mode) of the grid, sorted by latency, load,
        clean first, then plain SMTP first (so a mode sits beside the plain one it costs more
        than)."""
        found = {Condition(k.latency_ms, k.load, k.scenario, k.smtp) for k in self._expected}
        return sorted(found, key=lambda c: (c.latency_ms, c.load, c.scenario != CLEAN,
                                            c.scenario, c.smtp != PLAIN, c.smtp))

    @property
    def focus_load(self) -> Load | None:
        """The load the per-latency charts and the verdict use: the most common one among the
        cells (ties go to the heavier); None when the run has no cells and no grid."""
        counts = Counter(c.load for c in self.cells)
        if not counts:
            return self.loads[-1] if self.loads else None
        return max(counts, key=lambda load: (counts[load], load))

    def at(self, variant: str, latency_ms: int, load: Load | None) -> CellResult | None:
        """The cell of ``variant`` at ``latency_ms`` and ``load``; None when absent."""
        return None if load is None else self.cell(variant, latency_ms, load)

    @property
    def rates(self) -> list[float]:
        """The open-loop rates of the grid, ascending."""
        return [load.rate for load in self.loads if load.rate]

    def in_grid(self, variant: str, cond: Condition) -> bool:
        """Whether the grid has a cell for ``variant`` under ``cond``: a variant that sends
        nothing has none under a scenario that breaks sending, or on another SMTP mode."""
        return cond.key(variant) in self._expected

    @cached_property
    def _expected(self) -> set[CellKey]:
        """The grid's cells (profile settings, else the cells' own axes) and the run's."""
        return {*self.results.expected_cells, *(c.key for c in self.cells)}

    @property
    def missing(self) -> list[tuple[str, Condition]]:
        """Cells of the grid (profile settings, else the cells' own axes) that did not run."""
        expected = set(self.results.expected_cells)
        return [(v, cond) for cond in self.conditions for v in self.variants
                if cond.key(v) in expected and self.results.cell(cond.key(v)) is None]

    def verdict_cell(self, variant: str) -> CellResult | None:
        """The cell that speaks for ``variant`` in the verdict: the highest SMTP latency at
        :attr:`focus_load`; a variant with no cell there falls back to its highest latency,
        then heaviest load."""
        mine = [c for c in self.cells if c.variant == variant and c.scenario == CLEAN
                and c.smtp == PLAIN]
        at_focus = [c for c in mine if c.load == self.focus_load]
        return max(at_focus or mine, key=lambda c: (c.smtp_latency_ms, c.load), default=None)


def load_report_run(run_dir: Path) -> ReportRun:
    """:func:`loadtests.results.load_run`, as a :class:`ReportRun`; raises ReportError."""
    run = load_run(run_dir)
    return ReportRun(run.run_dir, run.results, run.gate, run.gate_error)
