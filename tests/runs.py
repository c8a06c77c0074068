"""Hand-made runs for the gate and report tests, written by the product's own writers.

Samples go through :class:`loadtests.cellfiles.CellRecorder` (the format the locust user
writes), figures through :func:`loadtests.summary.summarize_cell` and results.json through
:func:`loadtests.results.write_results`, so a test never types a file format again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loadtests.cellfiles import CellKey, CellRecorder, Registration, Sample, read_samples
from loadtests.environment import capture_environment
from loadtests.profiles import Profile
from loadtests.results import CellResult, Results, json_schema, parse_results
from loadtests.summary import Capture, Observed, summarize_cell


def validate(document: dict[str, Any]) -> Results:
    """Check a results.json document against the JSON schema and the model; return it read."""
    import jsonschema

    jsonschema.validate(document, json_schema())
    return parse_results(json.dumps(document), "document")


def record_cell(run_dir: Path, key: CellKey, samples: Iterable[Sample],
                registrations: Iterable[Registration] = ()) -> Path:
    """Write a cell's samples and registrations as the locust user does; return its folder."""
    recorder = CellRecorder(list(samples), list(registrations))
    folder = run_dir / key.folder
    recorder.write(folder)
    return folder


def summarize(run_dir: Path, key: CellKey, profile: Profile, samples: Iterable[Sample],
              registrations: list[Registration], delivered: Counter[str] | None = None,
              sends_email: bool = True) -> CellResult:
    """A cell recorded and then summarized as the runner would, against a capture in which
    every accepted registration got one email unless ``delivered`` says otherwise."""
    folder = record_cell(run_dir, key, samples, registrations)
    capture = Capture(delivered if delivered is not None else Counter(
        r.email for r in registrations if r.accepted and sends_email))
    return summarize_cell(key, profile, Observed(read_samples(folder), registrations, capture,
                                                 sends_email=sends_email))


def results_for(profile: Profile, cells: list[CellResult], run_id: str = "run") -> Results:
    return Results(run_id=run_id, profile=profile.name, profile_settings=profile.settings(),
                   started_at="2026-11-24T08:00:00+0000", finished_at="2026-11-24T08:01:00+0000",
                   complete=True, stopped_reason=None,
                   environment=capture_environment(profile.workers, profile.threads,
                                                   profile.password_hash,
                                                   profile.worker_threads),
                   cells=cells)
