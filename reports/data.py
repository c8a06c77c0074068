"""A run directory read for reporting: results.json checked, cells indexed, samples on demand.

Contract: :func:`load_run` either returns a :class:`Run` or raises :class:`ReportError` whose
message names the file at fault. Everything beyond the schema's required keys is optional
(older runs lack ``profile_settings``, ``throughput_rps``, ``files``...); readers use ``.get``.
Samples (``cells/<cell>/samples.csv.gz``) are read only when a chart asks, once per cell.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apps.core.registry import VARIANTS
from maillab.results import SCHEMA, SCHEMA_FILE

if TYPE_CHECKING:
    import numpy as np

Cell = dict[str, Any]


class ReportError(RuntimeError):
    """The run directory cannot be reported on; the message names the file and the reason."""


@dataclass(frozen=True, order=True)
class Condition:
    """The load a cell ran under: SMTP latency and concurrent users."""

    latency_ms: int
    users: int

    @property
    def label(self) -> str:
        return f"{self.latency_ms} ms · {self.users} u"


@dataclass(frozen=True)
class Series:
    """One kind of sample of one cell, as arrays of equal length (start is epoch seconds)."""

    start: np.ndarray
    ms: np.ndarray
    ok: np.ndarray
    warmup: np.ndarray

    def __len__(self) -> int:
        return len(self.ms)


@dataclass
class Run:
    """A loaded run: the document, its cells indexed by (variant, latency, users), the gate."""

    run_dir: Path
    document: dict[str, Any]
    gate: dict[str, Any] | None = None
    gate_error: str | None = None
    _samples: dict[str, dict[str, Series] | None] = field(default_factory=dict, repr=False)

    @property
    def cells(self) -> list[Cell]:
        return sorted(self.document["cells"], key=_cell_sort_key)

    @property
    def variants(self) -> list[str]:
        """Variants the profile asked for or the run holds, in the registry's order."""
        wanted = set(self._settings.get("variants") or []) | {c["variant"]
                                                              for c in self.document["cells"]}
        return [v for v in VARIANTS if v in wanted] + sorted(wanted - set(VARIANTS))

    @property
    def latencies(self) -> list[int]:
        return sorted(set(self._settings.get("latencies_ms") or [])
                      | {c["smtp_latency_ms"] for c in self.document["cells"]})

    @property
    def users(self) -> list[int]:
        return sorted(set(self._settings.get("users") or [])
                      | {c["users"] for c in self.document["cells"]})

    @property
    def conditions(self) -> list[Condition]:
        """Every (latency, users) pair of the grid, sorted by latency then users."""
        return sorted(Condition(lat, u) for lat in self.latencies for u in self.users)

    @property
    def focus_users(self) -> int | None:
        """The users count the per-latency charts and the verdict use: the most common one
        among the cells (ties go to the larger count); None when the run has no cells."""
        counts = Counter(c["users"] for c in self.document["cells"])
        if not counts:
            return self.users[-1] if self.users else None
        return max(counts, key=lambda u: (counts[u], u))

    @property
    def missing(self) -> list[tuple[str, Condition]]:
        """Cells of the grid (profile settings, else the cells' own axes) that did not run."""
        return [(v, cond) for cond in self.conditions for v in self.variants
                if self.cell(v, cond.latency_ms, cond.users) is None]

    @property
    def complete(self) -> bool:
        return bool(self.document.get("complete", True)) and not self.document.get(
            "stopped_reason")

    @property
    def _settings(self) -> dict[str, Any]:
        return self.document.get("profile_settings") or {}

    def cell(self, variant: str, latency_ms: int, users: int) -> Cell | None:
        for cell in self.document["cells"]:
            if (cell["variant"], cell["smtp_latency_ms"], cell["users"]) == (
                    variant, latency_ms, users):
                return cell
        return None

    def verdict_cell(self, variant: str) -> Cell | None:
        """The cell that speaks for ``variant`` in the verdict: the highest SMTP latency at
        :attr:`focus_users`; a variant with no cell there falls back to its highest latency,
        then most users."""
        mine = [c for c in self.document["cells"] if c["variant"] == variant]
        at_focus = [c for c in mine if c["users"] == self.focus_users]
        pool = at_focus or mine
        return max(pool, key=lambda c: (c["smtp_latency_ms"], c["users"]), default=None)

    def samples(self, cell: Cell) -> dict[str, Series] | None:
        """The cell's kept samples by name (register, time_to_inbox...), or None when the
        file is absent or unreadable."""
        key = cell_label(cell)
        if key not in self._samples:
            self._samples[key] = _read_samples(self.sample_path(cell))
        return self._samples[key]

    def sample_path(self, cell: Cell) -> Path:
        folder = cell.get("files") or (
            f"cells/{cell['variant']}-{cell['smtp_latency_ms']}ms-{cell['users']}u")
        return self.run_dir / folder / "samples.csv.gz"


def cell_label(cell: Cell) -> str:
    """The label gate.json uses too: ``sync@500ms/10u``."""
    return f"{cell['variant']}@{cell['smtp_latency_ms']}ms/{cell['users']}u"


def load_run(run_dir: Path) -> Run:
    """Read ``run_dir/results.json`` (and ``gate.json`` when present) into a :class:`Run`.

    Raises ReportError when run_dir is not a directory or results.json is missing, not JSON,
    not a ``maillab.results/1`` document, or lacks a key the schema requires. A gate.json that
    cannot be read does not fail the report: ``Run.gate_error`` says why.
    """
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a run directory")
    path = run_dir / "results.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no results.json in this run directory") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ReportError(f"{path}: not a {SCHEMA} document")
    problems = _missing_required(document, _schema(), _schema(), "")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ReportError(f"{path}: {'; '.join(problems[:3])}{more}")
    run = Run(run_dir=run_dir, document=document)
    gate_path = run_dir / "gate.json"
    if gate_path.exists():
        try:
            gate = json.loads(gate_path.read_text(encoding="utf-8"))
            if not isinstance(gate, dict) or "verdict" not in gate:
                raise ValueError("no verdict")
            run.gate = gate
        except (OSError, ValueError) as exc:
            run.gate_error = f"{gate_path}: cannot be read ({exc})"
    return run


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def _missing_required(value: Any, node: dict[str, Any], root: dict[str, Any],
                      where: str) -> list[str]:
    """The schema's required keys (and object/array shapes) that ``value`` lacks.

    A deliberately small walk of the schema file, so reporting needs no jsonschema install and
    stays lenient about types an older writer got slightly different.
    """
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        node = root["$defs"][ref.removeprefix("#/$defs/")]
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "object" in kinds and value is not None:
        if not isinstance(value, dict):
            return [f"{where or 'document'} is not an object"]
        absent = [k for k in node.get("required", []) if k not in value]
        found = [f"{where or 'document'} lacks {', '.join(absent)}"] if absent else []
        for key, sub in node.get("properties", {}).items():
            if key in value:
                found += _missing_required(value[key], sub, root, f"{where}.{key}".lstrip("."))
        return found
    if "array" in kinds and value is not None:
        if not isinstance(value, list):
            return [f"{where} is not a list"]
        found = []
        for index, item in enumerate(value):
            found += _missing_required(item, node.get("items", {}), root, f"{where}[{index}]")
        return found
    return []


def _read_samples(path: Path) -> dict[str, Series] | None:
    import numpy as np

    if not path.exists():
        return None
    columns: dict[str, tuple[list[float], list[float], list[bool], list[bool]]] = {}
    try:
        with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                start, ms, ok, warm = columns.setdefault(row["name"], ([], [], [], []))
                start.append(float(row["start"]))
                ms.append(float(row["ms"]))
                ok.append(row["ok"] == "1")
                warm.append(row["warmup"] == "1")
    except (OSError, EOFError, KeyError, ValueError, csv.Error):
        return None
    return {name: Series(np.asarray(s), np.asarray(m), np.asarray(o, dtype=bool),
                         np.asarray(w, dtype=bool))
            for name, (s, m, o, w) in columns.items()}


def _cell_sort_key(cell: Cell) -> tuple[int, int, int, str]:
    order = list(VARIANTS)
    rank = order.index(cell["variant"]) if cell["variant"] in order else len(order)
    return cell["smtp_latency_ms"], cell["users"], rank, cell["variant"]


def sends_email(cell: Cell) -> bool:
    """Whether the cell's variant sends email at all (``delivery.expected``; runs older than
    that key: every variant but baseline)."""
    return bool(cell["delivery"].get("expected", cell["variant"] != "baseline"))
