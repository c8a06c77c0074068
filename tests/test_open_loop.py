"""Open-loop load on hand-made inputs: the schedule, what a cell counts, profiles, capacity.

The driver itself runs against real servers in tests/test_bench.py; these check its rules of
counting in-process, with no clock and no network.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import math
from pathlib import Path

import pytest

from loadtests import cellfiles
from loadtests.arrivals import schedule
from loadtests.cellfiles import CellKey, Load, Registration, Sample, read_registrations
from loadtests.profiles import (
    PROFILES_DIR,
    Profile,
    ProfileError,
    load_profile,
    profile_from_mapping,
)
from loadtests.results import CellResult
from loadtests.summary import Capture, delivery
from maillab.capacity import breach, capacity_rows, predicted_rps
from tests.runs import results_for, summarize

RATE = 10.0
PROFILE = Profile(name="unit", variants=("baseline", "sync", "threaded"), latencies_ms=(500,),
                  rates=(RATE,), min_signups=4, duration_s=1, warmup_s=1)


def arrival(i: int, *, lag: float | None = 0.5, dropped: bool = False,
            warmup: bool = False) -> Registration:
    return Registration(f"u{i}@maillab.test", None if dropped else i / RATE, warmup=warmup,
                        status=None if dropped else 303, verify_status=None if dropped else 200,
                        intended_at=i / RATE, lag_ms=None if dropped else lag, dropped=dropped)


# -- the schedule --------------------------------------------------------------------------------

def test_constant_arrivals_are_evenly_spaced_from_the_start() -> None:
    assert list(itertools.islice(schedule(4), 5)) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_poisson_arrivals_are_seeded_and_average_the_rate() -> None:
    first = list(itertools.islice(schedule(20, "poisson", seed=7), 4000))
    assert first == list(itertools.islice(schedule(20, "poisson", seed=7), 4000))
    assert first != list(itertools.islice(schedule(20, "poisson", seed=8), 4000))
    assert first == sorted(first)
    assert 4000 / first[-1] == pytest.approx(20, rel=0.05)


@pytest.mark.parametrize("kind", ["constant", "poisson"])
def test_load_processes_share_one_schedule_exactly(kind: str) -> None:
    """Three processes each take every third arrival: together, the one schedule, none twice,
    none missing, whichever kind."""
    alone = list(itertools.islice(schedule(30, kind, seed=3), 300))
    shares = [list(itertools.islice(schedule(30, kind, 3, index, 3), 100)) for index in range(3)]
    assert sorted(itertools.chain(*shares)) == alone
    assert shares[1][:2] == [alone[1], alone[4]]
    with pytest.raises(ValueError, match="load process 3 of 3"):
        schedule(30, kind, 3, 3, 3)


@pytest.mark.parametrize(("rate", "kind"), [(0, "constant"), (-1, "constant"),
                                            (math.nan, "constant"), (1, "bursty")])
def test_a_schedule_that_cannot_be_kept_is_refused(rate: float, kind: str) -> None:
    with pytest.raises(ValueError, match="rate must be above 0|arrivals must be one of"):
        schedule(rate, kind)


# -- what a cell counts --------------------------------------------------------------------------

def test_latency_counts_from_the_intended_start_and_every_arrival_is_counted(
        tmp_path: Path) -> None:
    key = CellKey("sync", 500, Load(rate=RATE))
    samples = [Sample("register", "POST", i / RATE, 500.0, ok=True, warmup=i < 2,
                      lag_ms=float(i)) for i in range(8)]
    regs = [arrival(i, warmup=i < 2, lag=float(i)) for i in range(8)]
    regs += [arrival(8, dropped=True), arrival(9, dropped=True)]
    cell = summarize(tmp_path, key, PROFILE, samples, regs)
    # Service time 500 ms plus each sign-up's start lag: 502..507 for the measured six.
    assert cell.register.p50_ms == 504.0 and cell.register.max_ms == 507.0
    assert (cell.mode, cell.rate, cell.users) == ("open", RATE, PROFILE.max_in_flight)
    arrivals = cell.arrivals
    assert arrivals is not None
    assert (arrivals.offered, arrivals.started, arrivals.dropped) == (8, 6, 2)
    assert (arrivals.lag_p50_ms, arrivals.lag_p99_ms) == (4.0, 7.0)
    assert cell.duration_s == 0.8  # 8 measured arrivals at 10/s: the schedule's own span
    assert cell.valid  # a drop is a finding, not a broken measurement
    assert "2 of 8 arrivals were dropped" in " ".join(cell.warnings)
    assert cell.delivery.registered == 6  # the dropped never reached the app


def test_every_measured_sign_up_lands_in_exactly_one_bucket(tmp_path: Path) -> None:
    from collections import Counter

    key = CellKey("threaded", 500, Load(rate=RATE))
    regs = [arrival(i, warmup=i == 0) for i in range(7)]
    regs[2].status = 500  # an error page
    regs[3].status = None  # the connection broke
    regs += [arrival(7, dropped=True)]
    delivered = Counter({"u1@maillab.test": 1, "u4@maillab.test": 2, "u5@maillab.test": 1})
    samples = [Sample("register", "POST", 0.0, 5.0, ok=True, warmup=False)]
    cell = summarize(tmp_path, key, PROFILE, samples, regs, delivered)
    d, a = cell.delivery, cell.arrivals
    assert a is not None
    assert (a.dropped, d.failed_visibly, d.delivered, d.missing, d.duplicates) == (1, 2, 3, 1, 1)
    assert a.dropped + (d.failed_visibly or 0) + d.delivered + d.missing == a.offered == 7


def test_refused_late_and_delivered_anyway_are_told_apart() -> None:
    """fakesmtp's per-recipient record splits what never arrived: a permanent 5xx is refused
    (the person told or not), anything else accepted and missing is lost silently. An email
    that arrives after the fault ended, for a sign-up made before, is late."""
    from collections import Counter

    regs = [arrival(i) for i in range(8)]  # sent at i / 10 s
    regs[1].status = 503  # sync: the person saw the refusal
    regs[5].status = 503  # an error shown, yet the email arrived (an eom drop)
    capture = Capture(
        Counter({"u0@maillab.test": 1, "u3@maillab.test": 1, "u5@maillab.test": 1,
                 "u6@maillab.test": 1, "u7@maillab.test": 1}),
        first_at={"u0@maillab.test": 0.1, "u3@maillab.test": 2.3, "u5@maillab.test": 0.6,
                  "u6@maillab.test": 0.7, "u7@maillab.test": 2.0},
        faulted={"u1@maillab.test": {"550": 1}, "u2@maillab.test": {"550": 1},
                 "u3@maillab.test": {"451": 2}, "u4@maillab.test": {"hang": 1},
                 "u5@maillab.test": {"drop": 1}})
    d = delivery(regs, capture, sends_email=True, fault_ended_at=1.5)
    assert (d.delivered, d.refused, d.refused_told, d.missing, d.failed_visibly) == (
        4, 2, 1, 1, 1)
    assert d.buckets == 8
    assert d.delivered_anyway == 1
    # u3 (sent 0.3, arrived 2.3) and u7 (sent 0.7, arrived 2.0): both after the fault ended.
    assert (d.late, d.late_inbox_p50_ms, d.late_inbox_max_ms) == (2, 1300.0, 2000.0)
    assert delivery(regs, capture, sends_email=True).late is None  # no window: never late
    assert delivery(regs, Capture(), sends_email=False).buckets == 8  # 7 accepted, 1 error


def test_a_cell_whose_schedule_slipped_is_invalid(tmp_path: Path) -> None:
    key = CellKey("baseline", 500, Load(rate=RATE))
    samples = [Sample("register", "POST", 0.0, 5.0, ok=True, warmup=False, lag_ms=40.0)]
    cell = summarize(tmp_path, key, PROFILE, samples, [arrival(0, lag=40.0)],
                     sends_email=False)
    assert not cell.valid
    assert "start lag p99 40.0 ms is above the 25 ms bound" in cell.warnings[0]


def test_load_processes_stream_their_parts_and_the_merge_counts_every_sample(
        tmp_path: Path) -> None:
    """Each process writes its part as it goes (a registration once its sign-up ends); the
    merge joins them into the cell's two files, checks the rows against what the processes
    counted, and says what is wrong when a process died or a timing was lost."""
    regs = [Registration(f"u{i}@maillab.test", float(i), warmup=False, status=303,
                         intended_at=float(i), lag_ms=0.5) for i in range(4)]
    for tag, mine in (("0", regs[:2]), ("1", regs[2:])):
        part = cellfiles.PartRecorder(tmp_path, tag)
        for r in mine:
            part.sample(Sample("register", "POST", r.intended_at or 0.0, 5.0, True, False))
            part.registration(r)
        part.close(requests=len(mine))
    merged = cellfiles.merge_parts(tmp_path)
    assert (merged.parts, merged.samples, merged.registrations, merged.requests) == (2, 4, 4, 4)
    assert merged.problems == []
    assert sorted(read_registrations(tmp_path), key=lambda r: r.email) == regs
    assert len(cellfiles.read_sample_rows(tmp_path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        cellfiles.MERGED_FILE, cellfiles.REGISTRATIONS_FILE, cellfiles.SAMPLES_FILE]
    assert cellfiles.merge_parts(tmp_path) == merged  # read back once the parts are gone

    lost = tmp_path / "lost"
    part = cellfiles.PartRecorder(lost, "0")
    part.sample(Sample("register", "POST", 0.0, 5.0, True, False))
    part.close(requests=2)  # fired two, kept one
    dead = cellfiles.PartRecorder(lost, "1")
    dead.sample(Sample("register", "POST", 0.0, 5.0, True, False))
    dead._files[0].flush()  # a process killed before closing its part  # noqa: SLF001
    problems = cellfiles.merge_parts(lost).problems
    assert any("did not finish its samples" in p and "samples.part-1" in p for p in problems)
    assert any("did not say how many" in p for p in problems)
    part = cellfiles.PartRecorder(lost / "short", "0")
    part.sample(Sample("register", "POST", 0.0, 5.0, True, False))
    part.close(requests=2)
    assert cellfiles.merge_parts(lost / "short").problems == [
        "the load processes fired 2 timings but 1 samples were kept"]


def test_registrations_round_trip_and_files_from_before_arrivals_still_read(
        tmp_path: Path) -> None:
    regs = [arrival(0), arrival(1, dropped=True)]
    cellfiles.CellRecorder([], regs).write(tmp_path)
    assert read_registrations(tmp_path) == regs
    old = tmp_path / "old"
    old.mkdir()
    with gzip.open(old / cellfiles.REGISTRATIONS_FILE, "wt") as fh:
        fh.write("email,sent_at,warmup,status,inbox_ms,verify_status\n"
                 "A@maillab.test,1.5,0,303,120.0,200\n")
    [read] = read_registrations(old)
    assert (read.email, read.intended_at, read.lag_ms, read.dropped) == (
        "a@maillab.test", None, None, False)


# -- profiles ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "needle"), [
    ({"rates": [0]}, "rates must be sign-ups per second above 0"),
    ({"rates": [-2.5]}, "rates must be sign-ups per second above 0"),
    ({"rates": [math.inf]}, "rates must be sign-ups per second above 0"),
    ({"rates": ["10"]}, "rates must be a list of numbers"),
    ({"rates": []}, "rates must be a non-empty list of sign-ups per second in open loop"),
    ({"mode": "sideways"}, "mode must be one of open, closed"),
    ({"arrivals": "bursty"}, "arrivals must be one of constant, poisson"),
    ({"mode": "closed"}, "users must be a non-empty list in closed loop"),
    ({"mode": "closed", "users": [2], "capacity": True}, "capacity steps up a rate"),
    ({"capacity": "yes"}, "capacity must be true or false"),
    ({"max_in_flight": 0}, "max_in_flight must be between 1 and 10000"),
    ({"slo_bad_share": 2}, "slo_bad_share must be between 0 and 1"),
    ({"database": "mysql"}, "database must be one of sqlite, postgresql"),
    ({"queue": "rabbitmq"}, "queue must be one of sqlite, redis"),
    ({"load_processes": 0}, "load_processes must be between 1 and 16"),
    ({"consumers": 17}, "consumers must be between 1 and 16"),
    ({"smtp": ["smtps"]}, "smtp has unknown mode 'smtps'; choose from plain, starttls\\+auth"),
    ({"smtp": []}, "smtp must be a non-empty list without repeats"),
    ({"smtp": ["plain", "plain"]}, "smtp must be a non-empty list without repeats"),
    ({"smtp": "plain"}, "smtp must be a list of strings"),
    ({"smtp": ["plain", "starttls+auth"], "capacity": True}, "capacity run"),
])
def test_a_bad_open_loop_profile_names_the_key(changes: dict[str, object],
                                               needle: str) -> None:
    data: dict[str, object] = {"variants": ["sync"], "latencies_ms": [0], "rates": [10],
                               **changes}
    with pytest.raises(ProfileError, match=needle) as raised:
        profile_from_mapping("p", data, "p.toml")
    assert str(raised.value).startswith("p.toml: ")


def test_an_open_loop_cell_is_long_enough_for_its_sign_ups() -> None:
    profile = profile_from_mapping("p", {"variants": ["sync"], "latencies_ms": [0],
                                         "rates": [10, 2.5, 400], "min_signups": 200,
                                         "duration_s": 5, "warmup_s": 2}, "p.toml")
    slow, fast = CellKey("sync", 0, Load(rate=2.5)), CellKey("sync", 0, Load(rate=400))
    assert profile.run_time_s(slow) == 83 and profile.measured_s(slow) == 81  # 200/2.5 + 1
    assert profile.run_time_s(fast) == 7  # duration_s is longer than 200/400 + 1
    assert [k.load.rate for k in profile.cells()] == [10, 2.5, 400]


# -- capacity -----------------------------------------------------------------------------------

def test_the_knee_is_the_highest_rate_that_held_the_slo(tmp_path: Path) -> None:
    profile = dataclasses.replace(PROFILE, rates=(4.0, 8.0, 16.0), capacity=True,
                                  slo_p99_ms=1000, workers=1, threads=2)
    cells = []
    for rate, sync_ms, threads in ((4.0, 510.0, 9), (8.0, 2500.0, 11)):
        for variant, ms, live in (("baseline", 5.0, 6), ("sync", sync_ms, 8),
                                  ("threaded", 6.0, threads)):
            key = CellKey(variant, 500, Load(rate=rate))
            samples = [Sample("register", "POST", i / rate, ms, ok=True, warmup=False)
                       for i in range(20)]
            regs = [dataclasses.replace(arrival(i), intended_at=i / rate) for i in range(20)]
            cell = summarize(tmp_path / variant / str(rate), key, profile, samples, regs,
                             sends_email=variant != "baseline")
            cell.resources.peak_threads = live
            cells.append(cell)
    assert breach(cells[1], profile) is None
    assert breach(cells[4], profile) == ("register SLO", "register p99 2500 ms > 1000 ms")
    rows = {row.variant: row for row in capacity_rows(cells, profile)}
    sync = rows["sync"]
    assert (sync.knee_rps, sync.broke_at_rps, sync.skipped_rates) == (4.0, 8.0, [16.0])
    assert sync.predicted_rps == 4.0 and sync.prediction == "1 workers x 2 threads / 0.5 s SMTP"
    threaded = rows["threaded"]
    assert (threaded.knee_rps, threaded.broke_at_rps) == (8.0, None)
    # Little's law at 8/s and 0.5 s: 4 emails in flight; measured 11 - 6 = 5 threads.
    assert (threaded.predicted_email_threads, threaded.email_threads) == (4.0, 5.0)
    results = results_for(profile, cells)
    results.capacity = list(rows.values())
    missing = {k.label for k in results.missing_cells}
    assert missing == {"baseline@500ms/16rps", "threaded@500ms/16rps"}  # sync's was skipped


def _queued_step(run_dir: Path, rate: float, inbox_ms: float, profile: Profile,
                 lag_ms: float = 0.5) -> CellResult:
    """A queued cell at ``rate`` whose sign-ups answer in 4 ms and whose emails take
    ``inbox_ms`` to arrive."""
    key = CellKey("queued", 500, Load(rate=rate))
    samples = [Sample(metric, "POST", i / rate, ms, ok=True, warmup=False) for i in range(20)
               for metric, ms in (("register", 4.0), ("time_to_inbox", inbox_ms))]
    regs = [dataclasses.replace(arrival(i, lag=lag_ms), intended_at=i / rate)
            for i in range(20)]
    return summarize(run_dir / str(rate), key, profile, samples, regs)


def test_a_queue_whose_backlog_grows_ends_its_series_on_the_inbox_slo(tmp_path: Path) -> None:
    """Register holds at 4 ms while the consumer falls behind: the series ends where time to
    inbox breaks its own SLO, and the row says that SLO ended it."""
    profile = dataclasses.replace(PROFILE, variants=("queued",), rates=(4.0, 8.0, 16.0),
                                  capacity=True, slo_inbox_p99_ms=2000)
    cells = [_queued_step(tmp_path, 4.0, 600.0, profile),
             _queued_step(tmp_path, 8.0, 3500.0, profile)]
    assert breach(cells[0], profile) is None
    assert breach(cells[1], profile) == ("inbox SLO", "time to inbox p99 3500 ms > 2000 ms")
    [row] = capacity_rows(cells, profile)
    assert (row.knee_rps, row.broke_at_rps, row.ended_by) == (4.0, 8.0, "inbox SLO")
    assert "time to inbox p99 <= 2000 ms" in row.slo


def test_a_series_the_load_generator_could_not_offer_is_not_an_slo_break(
        tmp_path: Path) -> None:
    profile = dataclasses.replace(PROFILE, variants=("queued",), rates=(4.0, 8.0),
                                  capacity=True, max_start_lag_ms=25)
    cells = [_queued_step(tmp_path, 4.0, 600.0, profile),
             _queued_step(tmp_path, 8.0, 600.0, profile, lag_ms=80.0)]
    assert cells[1].invalid_for == ["timing"]
    [row] = capacity_rows(cells, profile)
    assert (row.knee_rps, row.broke_at_rps) == (4.0, 8.0)
    assert row.ended_by == "load generator could not keep the schedule"
    assert "start lag p99 80.0 ms" in (row.broke_because or "")


def test_a_consumer_offered_more_than_it_delivers_falls_behind_as_predicted() -> None:
    """queued's consumer delivers at most threads / SMTP time emails per second: 64 / 5 s =
    12.8/s. At 20/s the queue grows 7.2 a second from the start of the load; the 95th
    percentile of the measured sign-ups arrives 2 + 0.95 x 11 s in and waits 0.5625 x that."""
    from maillab.capacity import predicted_backlog_ms

    assert predicted_backlog_ms("queued", 5000, 20, 2, 11, 64) == pytest.approx(7003.125)
    assert predicted_backlog_ms("queued", 5000, 12.8, 2, 11, 64) == 0  # at capacity
    assert predicted_backlog_ms("queued", 500, 10, 2, 11, 64) == 0
    assert predicted_backlog_ms("threaded", 5000, 40, 2, 11, 64) == 0  # no consumer
    assert predicted_backlog_ms("queued", 0, 40, 2, 11, 64) == 0


def test_predictions_from_first_principles() -> None:
    profile = dataclasses.replace(PROFILE, workers=2, threads=8, worker_threads=16)
    assert predicted_rps("sync", 500, profile)[0] == 32.0
    assert predicted_rps("queued", 250, profile)[0] == 64.0
    assert predicted_rps("sync", 0, profile)[0] is None
    assert predicted_rps("threaded", 500, profile)[0] is None


# -- scenarios -----------------------------------------------------------------------------------

def test_scenarios_run_where_the_profile_says() -> None:
    profile = profile_from_mapping("p", {
        "variants": ["sync", "queued"], "latencies_ms": [0, 500], "rates": [10],
        "scenarios": ["clean", "smtp-flaky"], "scenario_latencies_ms": [500]}, "p.toml")
    assert [k.label for k in profile.cells()] == [
        "sync@0ms/10rps", "queued@0ms/10rps", "sync@500ms/10rps", "queued@500ms/10rps",
        "sync@500ms/10rps/smtp-flaky", "queued@500ms/10rps/smtp-flaky"]
    flaky = profile.cells()[-1]
    assert flaky.folder == "cells/queued-500ms-10rps-smtp-flaky"
    assert flaky.title == "queued @ 500 ms x 10 sign-ups/s (smtp-flaky)"


def test_the_smtp_axis_runs_mode_by_mode_and_the_baseline_on_plain_only() -> None:
    profile = profile_from_mapping("p", {
        "variants": ["baseline", "sync"], "latencies_ms": [0], "rates": [10],
        "smtp": ["plain", "starttls+auth"]}, "p.toml")
    assert [k.label for k in profile.cells()] == [
        "baseline@0ms/10rps", "sync@0ms/10rps", "sync@0ms/10rps+starttls+auth"]
    tls = profile.cells()[-1]
    assert tls.folder == "cells/sync-0ms-10rps-starttls-auth"
    assert tls.title == "sync @ 0 ms x 10 sign-ups/s over STARTTLS and AUTH"


@pytest.mark.parametrize(("changes", "needle"), [
    ({"scenarios": ["smtp-gremlins"]}, "scenarios has unknown scenario 'smtp-gremlins'"),
    ({"scenarios": []}, "scenarios is empty"),
    ({"scenario_latencies_ms": [250]}, "scenario_latencies_ms has 250, which is not in"),
])
def test_a_bad_scenario_setting_names_the_key(changes: dict[str, object], needle: str) -> None:
    data: dict[str, object] = {"variants": ["sync"], "latencies_ms": [0], "rates": [10],
                               **changes}
    with pytest.raises(ProfileError, match=needle):
        profile_from_mapping("p", data, "p.toml")


def test_an_smtp_outage_covers_the_middle_third_of_the_measured_window(tmp_path: Path) -> None:
    from loadtests.scenarios import scenario
    from maillab.bench import Bench

    bench = Bench(PROFILE, tmp_path / "run", tmp_path, smtp_port=1, api_port=1)
    assert bench._scenario_actions(scenario("smtp-flaky"), 100.0, 2.0, 30.0) == []
    actions = bench._scenario_actions(scenario("smtp-outage"), 100.0, 2.0, 30.0)
    assert [(at, what) for at, what, _ in actions] == [
        (112.0, "SMTP faults on: id=outage,phase=mail,reply=421"), (122.0, "SMTP faults off")]


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_profile_loads_and_says_what_it_does(path: Path) -> None:
    profile = load_profile(path.stem)
    assert profile.description and profile.cells()


def test_the_faults_and_queues_profiles_run_every_scenario() -> None:
    """PROFILE=faults is where a scenario's rules are checked; a scenario left out of it
    would have its rules skipped in every shipped run. broker-restart needs a queue server
    (its SQLite queue is a file), so the queues profile runs it, on Redis and RabbitMQ."""
    from loadtests.scenarios import BROKER_RESTART, SCENARIOS

    assert set(load_profile("faults").scenarios) == set(SCENARIOS) - {BROKER_RESTART}
    queues = load_profile("queues")
    assert BROKER_RESTART in queues.scenarios and queues.queue == "redis"
    assert {k.variant for k in queues.cells() if k.scenario == BROKER_RESTART} == {
        "queued", "celery-early-rabbitmq", "celery-late-rabbitmq", "celery-early-redis",
        "celery-late-redis", "celery-late-redis-vt10"}
