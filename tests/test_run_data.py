"""A run's data: the cell files, the cell summary, the results model and who reads them.

Every test here runs in-process on hand-made inputs: no server, no locust, no clock.
"""

from __future__ import annotations

import ast
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from apps.core.registry import VARIANTS
from loadtests import cellfiles
from loadtests.cellfiles import (
    CellFileError,
    CellKey,
    Load,
    Registration,
    Sample,
    read_registrations,
    read_samples,
)
from loadtests.profiles import Profile
from loadtests.results import (
    METRICS,
    LoadGenerator,
    PhaseLatency,
    RunError,
    SmtpFaults,
    load_run,
    parse_results,
)
from loadtests.summary import (
    Capture,
    Observed,
    load_generator,
    summarize_cell,
    worth_another_attempt,
)
from loadtests.target import sends_email
from maillab.cli import cli
from maillab.gate import compare, load_rules, parse_rule, run_gate
from reports import build_report
from tests.runs import record_cell, results_for, summarize, validate

ROOT = Path(__file__).resolve().parent.parent
V1_RUN = ROOT / "tests" / "report_fixtures" / "v1_run"
PROFILE = Profile(name="unit", variants=("sync", "baseline"), latencies_ms=(100,), users=(2,),
                  mode="closed", duration_s=4, warmup_s=1)
KEY = CellKey("sync", 100, Load(users=2))


def registration(i: int, *, warmup: bool = False, status: int = 303,
                 verified: bool = True) -> Registration:
    return Registration(f"u{i}@maillab.test", 1000.0 + i, warmup=warmup, status=status,
                        verify_status=200 if verified else None)


# -- the cell files ------------------------------------------------------------------------------

def test_cell_files_round_trip_with_one_meaning_of_measured(tmp_path: Path) -> None:
    samples = [Sample("register", "POST", 1.0, 5.0, ok=True, warmup=True),
               Sample("register", "POST", 2.0, 7.0, ok=True, warmup=False),
               Sample("register", "POST", 3.0, 3.0, ok=True, warmup=False),
               Sample("register", "POST", 4.0, 9.0, ok=False, warmup=False),
               Sample("register", "POST", 5.0, 9.0, ok=False, warmup=True)]
    regs = [registration(1, warmup=True), registration(2), registration(3, status=500)]
    folder = record_cell(tmp_path, KEY, samples, regs)
    assert folder == tmp_path / "cells" / "sync-100ms-2u"
    read = read_samples(folder)
    register = read["register"]
    assert len(register) == 5
    assert register.times == [3.0, 7.0]  # measured and ok, sorted
    assert register.failures == 1  # the warm-up failure is not counted
    assert len(read["verify"]) == 0 and "verify" not in read
    back = read_registrations(folder)
    assert back == regs
    assert [r.accepted for r in back] == [True, True, False]


def test_cell_key_names_its_folder_and_label_and_the_profile_grid_uses_it() -> None:
    assert KEY.folder == "cells/sync-100ms-2u" and KEY.label == "sync@100ms/2u"
    assert KEY.title == "sync @ 100 ms x 2 users"
    profile = Profile(name="p", variants=("sync", "queued"), latencies_ms=(0, 500),
                      users=(1, 10), mode="closed")
    assert profile.cells() == cellfiles.grid(["sync", "queued"], [0, 500], [1, 10])
    assert profile.cells()[:3] == [CellKey("sync", 0, Load(users=1)),
                                   CellKey("queued", 0, Load(users=1)),
                                   CellKey("sync", 0, Load(users=10))]
    open_loop = Profile(name="o", variants=("sync",), latencies_ms=(500,), rates=(10, 2.5))
    rate = CellKey("sync", 500, Load(rate=2.5))
    assert open_loop.cells() == [CellKey("sync", 500, Load(rate=10)), rate]
    assert (rate.folder, rate.label, rate.title) == (
        "cells/sync-500ms-2.5rps", "sync@500ms/2.5rps", "sync @ 500 ms x 2.5 sign-ups/s")
    with pytest.raises(ValueError, match="not both or neither"):
        Load(users=1, rate=1.0)


def test_unreadable_cell_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CellFileError, match="no samples were kept"):
        read_samples(tmp_path)
    (tmp_path / cellfiles.SAMPLES_FILE).write_bytes(b"not gzip")
    with pytest.raises(CellFileError, match=str(tmp_path / cellfiles.SAMPLES_FILE)):
        read_samples(tmp_path)
    assert read_registrations(tmp_path / "nowhere") == []


# -- the summary ---------------------------------------------------------------------------------

def test_summary_counts_delivery_for_the_same_sign_ups_as_latency(tmp_path: Path) -> None:
    samples = [Sample("register", "POST", float(i), 100.0 + i, ok=True, warmup=i < 2)
               for i in range(6)]
    samples += [Sample("time_to_inbox", "EMAIL", float(i), 110.0, ok=True, warmup=i < 2)
                for i in range(6)]
    regs = [registration(i, warmup=i < 2) for i in range(6)]
    delivered = Counter({r.email: 1 for r in regs})
    delivered["u4@maillab.test"] = 2  # a duplicate
    del delivered["u5@maillab.test"]  # lost
    cell = summarize(tmp_path, KEY, PROFILE, samples, regs, delivered)
    assert cell.register.count == 4 and cell.register.p50_ms == 103.0
    assert cell.time_to_inbox.count == 4
    d = cell.delivery
    assert (d.registered, d.delivered, d.missing, d.duplicates) == (4, 3, 1, 1)
    assert d.warmup_excluded == 2 and d.counted == "registrations sent after the warm-up"
    assert cell.warnings == ["1 of 4 emails never arrived (within the 15 s drain)"]
    assert cell.valid and cell.files == KEY.folder
    assert cell.duration_s == PROFILE.measured_s(KEY) == 4


def test_summary_of_a_variant_that_sends_nothing(tmp_path: Path) -> None:
    key = CellKey("baseline", 100, Load(users=2))
    samples = [Sample("register", "POST", float(i), 5.0, ok=True, warmup=False)
               for i in range(4)]
    cell = summarize(tmp_path, key, PROFILE, samples, [registration(i) for i in range(4)],
                     sends_email=False)
    assert not cell.sends_email
    assert (cell.delivery.registered, cell.delivery.delivered, cell.delivery.missing) == (
        4, 0, 0)
    assert cell.throughput_rps == 1.0  # 4 registrations in the 4 s window
    assert cell.time_to_inbox.count == 0 and cell.time_to_inbox.p50_ms is None


@pytest.mark.parametrize(("observed", "reason", "spoiled"), [
    ({"load_cpu_percent": 97.0}, "load generator saturated", ["timing"]),
    ({"locust_exit": 2}, "locust exited with 2", ["timing", "delivery"]),
    ({"capture": Capture(truncated=True)}, "delivery counts are incomplete", ["delivery"]),
    ({"samples": cellfiles.CellSamples({})}, "no successful registration", ["timing", "delivery"]),
    ({"merged": cellfiles.Merged(2, 3, 1, 4)}, "fired 4 timings but 3 samples were kept",
     ["timing", "delivery"]),
    ({"merged": cellfiles.Merged(2, 3, 1, None, ("samples.part-1.csv.gz.open",))},
     "a load process did not finish its samples (samples.part-1.csv.gz.open)",
     ["timing", "delivery"]),
    ({"capture": Capture(smtp=SmtpFaults(
        attempts=1, received=1, injected=0, injected_share=0.0, latency={
            "eom": PhaseLatency(count=500, injected_p99_ms=500.0, lateness_p50_ms=3.0,
                            lateness_p99_ms=25.5, bound_ms=25.0)}))},
     "delays at eom came 25.5 ms late at p99, past the 25 ms bound (the SMTP server was",
     ["timing"]),
    ({"capture": Capture(smtp=SmtpFaults(
        attempts=1, received=1, injected=0, injected_share=0.0, latency={
            "eom": PhaseLatency(count=30, injected_p99_ms=500.0, lateness_p50_ms=30.0,
                                lateness_p99_ms=40.0, bound_ms=25.0)}))},
     "did not deliver the latency it injected", ["timing"]),
])
def test_summary_marks_a_cell_invalid_and_says_why(observed: dict[str, object],
                                                   reason: str, spoiled: list[str]) -> None:
    """And for which question: late timers or a busy load generator spoil the timing, not
    the counts; a record short of what happened spoils both."""
    samples = cellfiles.CellSamples({})
    base = Observed(samples=samples, registrations=[], capture=Capture(), sends_email=True)
    register = [Sample("register", "POST", 0.0, 5.0, ok=True, warmup=False)]
    import numpy as np

    base.samples = cellfiles.CellSamples({"register": cellfiles.Series(
        np.array([s.start for s in register]), np.array([s.ms for s in register]),
        np.array([True]), np.array([False]), np.array([0.0]))})
    for name, value in observed.items():
        setattr(base, name, value)
    cell = summarize_cell(KEY, PROFILE, base)
    assert not cell.valid and cell.invalid_for == spoiled
    assert any(reason in warning for warning in cell.warnings), cell.warnings
    assert worth_another_attempt(cell) == (spoiled == ["timing"])


def test_the_load_generators_memory_is_read_a_minute_in() -> None:
    """A minute in, locust's imports and first connections are done: growth after that is
    what a longer run keeps adding. A shorter cell uses its first reading."""
    def block(rss: list[tuple[float, float, int]]) -> LoadGenerator:
        return load_generator(Observed(samples=cellfiles.CellSamples({}), registrations=[],
                                       capture=Capture(), sends_email=True, load_rss=rss,
                                       load_processes=3))

    # The master alone at first and at the end: those readings are not the load's.
    soak = block([(0.5, 40.0, 1), (30.0, 210.0, 3), (60.2, 215.0, 3), (300.0, 220.0, 3),
                  (600.0, 216.0, 3), (601.0, 79.0, 1)])
    assert (soak.rss_mb_first, soak.rss_mb_last, soak.rss_mb_peak) == (215.0, 216.0, 220.0)
    assert soak.processes == 3
    assert block([(0.5, 40.0, 1), (5.0, 70.0, 1)]).rss_mb_first == 40.0
    assert block([]).rss_mb_first is None


# -- the model -----------------------------------------------------------------------------------

def test_metric_names_derive_from_the_model() -> None:
    assert METRICS["register"] == ("count", "failures", "rps", "p50_ms", "p75_ms", "p95_ms",
                                   "p99_ms", "max_ms")
    assert METRICS["delivery"][:5] == ("registered", "delivered", "missing", "duplicates",
                                       "verified")
    assert METRICS["throughput_rps"] == ()  # a single number
    assert "smtp_latency_ms" not in METRICS and "valid" not in METRICS
    parse_rule("queued.throughput_rps > 1")
    with pytest.raises(ValueError, match="single number"):
        parse_rule("queued.throughput_rps.rps > 1")
    with pytest.raises(ValueError, match="needs a statistic"):
        parse_rule("queued.register > 1")


def test_whether_a_variant_sends_email_is_asked_of_the_target() -> None:
    assert [name for name in VARIANTS if not sends_email(name)] == ["baseline"]
    assert sends_email("someone-elses-app")


def test_a_run_written_before_the_model_still_loads_renders_and_gates(tmp_path: Path) -> None:
    run_dir = tmp_path / "v1"
    shutil.copytree(V1_RUN, run_dir)
    run = load_run(run_dir)
    # The four variants of its day (the outbox and celery came later).
    assert [c.label for c in run.cells] == [f"{v}@100ms/2u" for v in VARIANTS
                                            if v not in ("outbox", "celery")]
    assert run.cells[0].delivery.counted == "all registrations"  # as it was counted then
    assert not run.cells[0].sends_email and run.cells[1].sends_email
    # Its own era's rules pass; today's ask for the arrivals block it predates, and say so.
    old_rules = [parse_rule(r) for r in ("*.delivery.missing == 0",
                                         "sync.register.p50_ms >= smtp_latency_ms")]
    assert run_gate(run_dir, old_rules).verdict == "pass"
    report = run_gate(run_dir, load_rules(ROOT / "loadtests" / "gates.toml"))
    assert report.verdict == "fail"
    assert {o.detail for o in report.rules if o.verdict == "error"} == {
        "the run has no arrivals.dropped here"}
    html = build_report(run_dir).read_text()
    assert "oldrun" in html


def test_written_results_validate_against_the_derived_schema(tmp_path: Path) -> None:
    samples = [Sample("register", "POST", 0.0, 5.0, ok=True, warmup=False)]
    cell = summarize(tmp_path, KEY, PROFILE, samples, [registration(0)])
    document = json.loads(results_for(PROFILE, [cell]).to_json())
    assert validate(document).cells[0] == cell
    schema = json.loads(CliRunner().invoke(cli, ["schema"]).output)
    assert schema["$id"] == "maillab.results/1"
    assert set(schema["$defs"]["CellResult"]["required"]) >= {
        "variant", "smtp_latency_ms", "users", "duration_s", "register", "verify",
        "inp_proxy", "time_to_inbox", "delivery", "resources", "valid", "warnings"}


def test_a_model_error_names_the_field() -> None:
    document = json.loads((V1_RUN / "results.json").read_text())
    document["cells"][1]["register"]["count"] = "many"
    with pytest.raises(RunError, match=r"x\.json: cells\.1\.register\.count"):
        parse_results(json.dumps(document), "x.json")


def test_the_gate_median_is_the_results_p50(tmp_path: Path) -> None:
    run = load_run(V1_RUN)
    report = compare(run, run, alpha=0.01, min_effect=0.1, min_samples=5)
    compared = [row for row in report.metrics if row.verdict != "skipped"]
    assert len(compared) == 10  # 3 metrics x 3 emailing variants, and baseline's register
    for row in compared:
        cell = next(c for c in run.cells if c.label == row.cell)
        assert row.median_ms is not None and row.verdict == "pass"
        assert row.median_ms[0] == cell.metric(row.metric, "p50_ms")


# -- who reads the files -------------------------------------------------------------------------

def _imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_packages_depend_one_way() -> None:
    """apps <- loadtests <- reports <- maillab (the CLI ties them together); fakesmtp alone."""
    assert not {"maillab", "reports"} & _imports("loadtests")
    assert "maillab" not in _imports("reports")
    assert not {"maillab", "reports", "loadtests"} & _imports("apps")


def test_only_the_cell_files_module_names_the_files() -> None:
    naming = [path.relative_to(ROOT).as_posix()
              for package in ("apps", "fakesmtp", "loadtests", "maillab", "reports")
              for path in (ROOT / package).rglob("*.py")
              if "samples.csv" in path.read_text() or "registrations.csv" in path.read_text()]
    assert naming == ["loadtests/cellfiles.py"]


@pytest.mark.parametrize(("late", "warned"), [
    (PhaseLatency(count=500, injected_p99_ms=500.0, lateness_p50_ms=0.2, lateness_p99_ms=25.0,
                  bound_ms=25.0), None),
    # 35 delays: the p99 is the worst one (seen: Chromium starting beside a small cell).
    (PhaseLatency(count=35, injected_p99_ms=300.0, lateness_p50_ms=0.4, lateness_p99_ms=15.7,
                  bound_ms=15.0), "in 35 delays: the worst one, not a tail"),
])
def test_latency_within_its_bound_leaves_the_cell_valid(late: PhaseLatency,
                                                        warned: str | None) -> None:
    """The other side of the bound: lateness up to it is timer noise, not a wrong cell, and
    so is one late delay among too few for a p99 to be a tail (said in a warning)."""
    import numpy as np

    observed = Observed(samples=cellfiles.CellSamples({"register": cellfiles.Series(
        np.array([0.0]), np.array([5.0]), np.array([True]), np.array([False]),
        np.array([0.0]))}), registrations=[], sends_email=False,
        capture=Capture(smtp=SmtpFaults(attempts=1, received=1, injected=0, injected_share=0.0,
                                        latency={"eom": late})))
    cell = summarize_cell(KEY, PROFILE, observed)
    assert cell.valid, cell.warnings
    assert cell.smtp_faults is not None and cell.smtp_faults.latency["eom"] == late
    said = [w for w in cell.warnings if "fakesmtp" in w]
    assert said == [] if warned is None else len(said) == 1 and warned in said[0], said
