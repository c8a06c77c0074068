"""`maillab gate` on hand-built runs: rules, baseline comparison, validity, exit codes."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loadtests.cellfiles import CellKey, Load, Registration, Sample
from loadtests.profiles import Profile
from maillab.cli import cli
from tests.runs import results_for, summarize, validate

LATENCY = 500
RATE = 10.0
PROFILE = Profile(name="quick", variants=("baseline", "sync", "threaded"),
                  latencies_ms=(LATENCY,), rates=(RATE,), duration_s=10, warmup_s=0)
MEDIANS = {"baseline": {"register": 5.0, "verify": 3.0},
           "sync": {"register": 510.0, "verify": 3.0, "time_to_inbox": 505.0},
           "threaded": {"register": 6.0, "verify": 3.0, "time_to_inbox": 520.0}}


def write_run(run_dir: Path, scale: float = 1.0, seed: int = 1, n: int = 400,
              slower: dict[str, float] | None = None, **changes: Any) -> Path:
    """An open-loop run of three cells at ``RATE`` whose samples are log-normal around
    realistic medians, every metric times ``scale`` (``slower`` scales one variant's register
    samples more); ``changes`` set keys of the written document (``cells__0__valid=False``)."""
    rng = random.Random(seed)
    cells = []
    for variant, metric_medians in MEDIANS.items():
        key = CellKey(variant, LATENCY, Load(rate=RATE))
        factor = {name: scale * ((slower or {}).get(variant, 1.0) if name == "register" else 1)
                  for name in metric_medians}
        samples = [Sample(name, "X", 0.0,
                          round(m * factor[name] * rng.lognormvariate(0, 0.05), 3),
                          ok=True, warmup=False, lag_ms=0.5)
                   for name, m in metric_medians.items() for _ in range(n)]
        registrations = [Registration(f"u{i}@maillab.test", i / RATE, warmup=False, status=303,
                                      verify_status=200, intended_at=i / RATE, lag_ms=0.5)
                         for i in range(n)]
        cells.append(summarize(run_dir, key, PROFILE, samples, registrations,
                               sends_email=variant != "baseline"))
    document = json.loads(results_for(PROFILE, cells, run_dir.name).to_json())
    for path, value in changes.items():
        target = document
        *parents, last = path.split("__")
        for key_ in parents:
            target = target[int(key_)] if isinstance(target, list) else target[key_]
        target[last] = value
    validate(document)
    (run_dir / "results.json").write_text(json.dumps(document))
    return run_dir


def gate(*args: str) -> Any:
    return CliRunner().invoke(cli, ["gate", *args])


def rules_file(tmp_path: Path, *rules: str) -> str:
    path = tmp_path / "rules.toml"
    path.write_text("rules = [" + ", ".join(json.dumps(r) for r in rules) + "]\n")
    return str(path)


def test_passing_run_exits_0(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run))
    assert result.exit_code == 0, result.output
    written = json.loads((run / "gate.json").read_text())
    assert written["verdict"] == "pass" and len(written["rules"]) > 5


def test_a_broken_rule_fails_with_the_measured_value(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(tmp_path, "threaded.register.p50_ms < 2",
                                                  "sync.register.p50_ms >= smtp_latency_ms"))
    assert result.exit_code == 1, result.output
    rows = json.loads((run / "gate.json").read_text())["rules"]
    assert [r["verdict"] for r in rows] == ["fail", "pass"]
    assert rows[0]["measured"] == pytest.approx(6.0, rel=0.1) and rows[0]["limit"] == "< 2"


def test_regression_of_20_percent_exits_1_and_is_named(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "before", seed=1)
    run = write_run(tmp_path / "after", seed=2, scale=1.2)
    result = gate(str(run), "--baseline", str(baseline), "--rules",
                  rules_file(tmp_path, "*.delivery.missing == 0"))
    assert result.exit_code == 1, result.output
    failed = [m for m in json.loads((run / "gate.json").read_text())["comparison"]["metrics"]
              if m["verdict"] == "fail"]
    assert {(m["cell"], m["metric"]) for m in failed} >= {("threaded@500ms/10rps", "register")}
    # 20% on the service time; the 0.5 ms start lag is not scaled
    assert all(m["change"] == pytest.approx(0.2, abs=0.05) for m in failed)
    assert "threaded@500ms/10rps" in result.output and "fail" in result.output


def test_default_rules_pass_the_run_and_fail_it_with_one_variant_slowed_by_20_percent(
        tmp_path: Path) -> None:
    """The same run (same seed), once as measured and once with only threaded's register
    samples 20% slower: the default rules and the comparison with the first tell them apart."""
    before = write_run(tmp_path / "before")
    assert gate(str(before), "--baseline", str(before)).exit_code == 0
    after = write_run(tmp_path / "after", slower={"threaded": 1.2})
    result = gate(str(after), "--baseline", str(before))
    assert result.exit_code == 1, result.output
    report = json.loads((after / "gate.json").read_text())
    verdicts = {(r["rule"], r["verdict"]) for r in report["rules"]}
    # Skipped: the run has no queued cells and no fault scenarios.
    assert {v for _, v in verdicts} == {"pass", "skipped"}
    assert all(rule.startswith(("queued", "outbox")) or re.search(r"scenario=(?!clean)", rule)
               for rule, v in verdicts if v == "skipped")
    failed = [(m["cell"], m["metric"]) for m in report["comparison"]["metrics"]
              if m["verdict"] == "fail"]
    assert failed == [("threaded@500ms/10rps", "register")]


def test_same_distribution_with_noise_exits_0(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "before", seed=1)
    run = write_run(tmp_path / "after", seed=7)
    result = gate(str(run), "--baseline", str(baseline))
    assert result.exit_code == 0, result.output


def test_small_slowdown_below_the_effect_size_passes(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "before", seed=1)
    run = write_run(tmp_path / "after", seed=3, scale=1.05)  # significant, but only 5%
    result = gate(str(run), "--baseline", str(baseline))
    assert result.exit_code == 0, result.output


def test_invalid_cell_exits_3(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", cells__0__valid=False,
                    cells__0__warnings=["load generator saturated"])
    result = gate(str(run))
    assert result.exit_code == 3, result.output
    assert "load generator saturated" in result.output


LATE_TIMERS = ("fakesmtp did not deliver the latency it injected: fakesmtp's delays at eom "
               "came 34.0 ms late at p99, past the 25 ms bound")


def test_a_cell_whose_timing_is_invalid_still_answers_what_it_lost(tmp_path: Path) -> None:
    """A faults run's cell with late SMTP timers (doctored as the bench writes it): its loss
    rules are checked, its timing rules and the rules that name its timing are skipped with
    the reason, and the run is not invalid (exit 3) for it."""
    rules = rules_file(tmp_path, "threaded.delivery.missing == 0",
                       "threaded.register.p95_ms < baseline.register.p95_ms * 1.5 + 5",
                       "sync.register.p50_ms >= smtp_latency_ms",
                       "*.arrivals.dropped == 0")
    run = write_run(tmp_path / "run", cells__2__valid=False, cells__2__invalid_for=["timing"],
                    cells__2__warnings=[LATE_TIMERS])
    result = gate(str(run), "--rules", rules)
    assert result.exit_code == 0, result.output
    written = json.loads((run / "gate.json").read_text())
    assert written["verdict"] == "pass" and written["invalid"] == []
    verdicts = {(o["rule"], o["cell"]): o for o in written["rules"]}
    skipped = verdicts[("threaded.register.p95_ms < baseline.register.p95_ms * 1.5 + 5",
                        "threaded@500ms/10rps")]
    assert skipped["verdict"] == "skipped" and "timing figures cannot be trusted" in \
        skipped["detail"] and "34.0 ms late" in skipped["detail"]
    assert verdicts[("threaded.delivery.missing == 0", "threaded@500ms/10rps")]["verdict"] \
        == "pass"
    assert verdicts[("*.arrivals.dropped == 0", "threaded@500ms/10rps")]["verdict"] == "pass"
    assert verdicts[("sync.register.p50_ms >= smtp_latency_ms",
                     "sync@500ms/10rps")]["verdict"] == "pass"
    assert "partly invalid" in result.output and written["partly_invalid"]

    # The same cell losing mail fails the gate: a timing doubt does not hide a loss.
    lossy = write_run(tmp_path / "lossy", cells__2__valid=False,
                      cells__2__invalid_for=["timing"], cells__2__warnings=[LATE_TIMERS],
                      cells__2__delivery__missing=3)
    assert gate(str(lossy), "--rules", rules).exit_code == 1


def test_a_rule_naming_a_figure_of_a_timing_invalid_cell_is_skipped(tmp_path: Path) -> None:
    rules = rules_file(tmp_path,
                       "threaded.register.p95_ms < baseline.register.p95_ms * 1.5 + 5")
    run = write_run(tmp_path / "run", cells__0__valid=False, cells__0__invalid_for=["timing"],
                    cells__0__warnings=[LATE_TIMERS])
    result = gate(str(run), "--rules", rules)
    assert result.exit_code == 0, result.output
    [outcome] = json.loads((run / "gate.json").read_text())["rules"]
    assert outcome["verdict"] == "skipped"
    assert outcome["detail"].startswith("baseline@500ms/10rps's timing figures")


def test_a_cell_invalid_for_delivery_skips_its_loss_rules_and_for_both_exits_3(
        tmp_path: Path) -> None:
    rules = rules_file(tmp_path, "threaded.delivery.missing == 0",
                       "threaded.register.p95_ms < baseline.register.p95_ms * 1.5 + 5")
    run = write_run(tmp_path / "run", cells__2__valid=False, cells__2__invalid_for=["delivery"],
                    cells__2__warnings=["fakesmtp received more messages than it keeps"])
    result = gate(str(run), "--rules", rules)
    assert result.exit_code == 0, result.output
    verdicts = [o["verdict"] for o in json.loads((run / "gate.json").read_text())["rules"]]
    assert verdicts == ["skipped", "pass"]
    both = write_run(tmp_path / "both", cells__2__valid=False,
                     cells__2__invalid_for=["timing", "delivery"],
                     cells__2__warnings=["locust exited with 2; see locust.log"])
    result = gate(str(both), "--rules", rules)
    assert result.exit_code == 3 and "locust exited with 2" in result.output


def test_missing_cells_and_unfinished_runs_exit_3(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", profile_settings__rates=[10, 50], complete=False,
                    stopped_reason="stopped by SIGINT")
    result = gate(str(run))
    assert result.exit_code == 3
    assert "3 cells missing" in result.output and "stopped by SIGINT" in result.output


def test_typo_in_metric_name_is_a_clear_error(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(tmp_path, "sync.regster.p50_ms < 10"))
    assert result.exit_code == 2
    assert "unknown metric 'regster'; did you mean 'register'?" in result.output
    result = gate(str(run), "--rules", rules_file(tmp_path, "sync.register.p50ms < 10"))
    assert result.exit_code == 2 and "did you mean 'p50_ms'?" in result.output


@pytest.mark.parametrize("rule", ["sync.register.p50_ms < latency", "sync.register.p50_ms <",
                                  "sync{region=eu}.register.p50_ms < 1", "nonsense"])
def test_malformed_rules_are_usage_errors(tmp_path: Path, rule: str) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(tmp_path, rule))
    assert result.exit_code == 2 and "rule" in result.output


def test_metric_the_run_lacks_is_an_error_not_a_pass(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", cells__2__time_to_inbox__p95_ms=None)
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "threaded.time_to_inbox.p95_ms < 10000", "sync{users=99}.register.p50_ms < 10"))
    assert result.exit_code == 1
    verdicts = [(r["verdict"], r["detail"]) for r in
                json.loads((run / "gate.json").read_text())["rules"]]
    assert verdicts[0][0] == "error" and "has no time_to_inbox.p95_ms" in verdicts[0][1]
    assert verdicts[1] == ("error", "no cell of this run matches the selector")


def test_the_gate_can_hold_the_browser_figures(tmp_path: Path) -> None:
    """What the person waits in Chromium is a metric like any other: a rule on it passes or
    fails with the measured value, and a cell without browser sign-ups is an error."""
    block = {"count": 20, "trusted": 20, "click_to_confirmation_p50_ms": 560.0,
             "click_to_confirmation_p75_ms": 596.0, "click_to_confirmation_p95_ms": 613.0,
             "event_p75_ms": 16.0, "events_reported": 14, "proxy_p75_ms": 579.0,
             "response_p75_ms": 562.0, "render_p50_ms": 33.0}
    run = write_run(tmp_path / "run", cells__1__browser=block,
                    cells__2__browser={**block, "click_to_confirmation_p75_ms": 114.0})
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "sync.browser.click_to_confirmation_p75_ms >= smtp_latency_ms",
        "threaded.browser.click_to_confirmation_p75_ms < "
        "sync.browser.click_to_confirmation_p75_ms / 2",
        "threaded.browser.event_p75_ms < 16"))
    assert result.exit_code == 1, result.output
    rows = json.loads((run / "gate.json").read_text())["rules"]
    assert [(r["verdict"], r["measured"]) for r in rows] == [
        ("pass", 596.0), ("pass", 114.0), ("fail", 16.0)]
    result = gate(str(run), "--rules", rules_file(tmp_path, "baseline.browser.count >= 20"))
    [row] = json.loads((run / "gate.json").read_text())["rules"]
    assert result.exit_code == 1 and row["verdict"] == "error"
    assert "has no browser.count" in row["detail"]


def test_selectors_filter_by_latency_and_rate(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "sync{latency=500,rate=10}.register.p50_ms > smtp_latency_ms - 10",
        "*{latency=500}.delivery.missing == 0", "sync.register.p50_ms > rate * 50"))
    assert result.exit_code == 0, result.output
    assert len(json.loads((run / "gate.json").read_text())["rules"]) == 5
    result = gate(str(run), "--rules", rules_file(tmp_path, "sync{rate=20}.register.p50_ms > 1"))
    assert result.exit_code == 1


def test_a_rule_compares_with_another_variant_in_the_same_cell_position(
        tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "threaded.register.p95_ms < baseline.register.p95_ms * 1.5 + 5",
        "sync.register.p50_ms < baseline.register.p50_ms * 2",
        "*.register.p50_ms >= (baseline.register.p50_ms - 1) / 1.05"))
    assert result.exit_code == 1, result.output
    rows = json.loads((run / "gate.json").read_text())["rules"]
    assert [(r["cell"], r["verdict"]) for r in rows] == [
        ("threaded@500ms/10rps", "pass"), ("sync@500ms/10rps", "fail"),
        ("baseline@500ms/10rps", "pass"), ("sync@500ms/10rps", "pass"),
        ("threaded@500ms/10rps", "pass")]
    assert rows[1]["limit"].startswith("< 11")  # twice baseline's p50 (5 ms + 0.5 ms lag)


def test_a_reference_the_run_lacks_fails_and_a_bad_one_is_a_usage_error(
        tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "threaded.register.p95_ms < queued.register.p95_ms * 1.5"))
    assert result.exit_code == 1
    [row] = json.loads((run / "gate.json").read_text())["rules"]
    assert row["verdict"] == "error"
    assert row["detail"].startswith("this run has no queued cell at 500 ms and 10 sign-ups/s")
    for rule, needle in (("threaded.register.p95_ms < basline.register.p95_ms", "did you mean "
                          "'baseline'?"),
                         ("threaded.register.p95_ms < baseline.regster.p95_ms", "did you mean "
                          "'register'?"),
                         ("threaded.register.p95_ms < baseline.register", "needs a statistic"),
                         ("threaded{rate=fast}.register.p95_ms < 1", "rate=R")):
        result = gate(str(run), "--rules", rules_file(tmp_path, rule))
        assert result.exit_code == 2 and needle in result.output, result.output


def test_incomparable_runs_exit_3_naming_the_keys(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "before")
    document = json.loads((baseline / "results.json").read_text())
    changed = copy.deepcopy(document)
    changed["environment"]["cpu_count"] = 8
    changed["environment"]["password_hash"] = "scrypt"
    (baseline / "results.json").write_text(json.dumps(changed))
    run = write_run(tmp_path / "after", seed=2)
    result = gate(str(run), "--baseline", str(baseline))
    assert result.exit_code == 3
    assert "cpu_count, password_hash differ" in result.output


def test_not_a_run_directory(tmp_path: Path) -> None:
    result = gate(str(tmp_path))
    assert result.exit_code == 2 and "no results.json" in result.output


def test_rules_for_a_variant_the_run_skipped(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")  # baseline, sync and threaded only
    result = gate(str(run), "--rules", rules_file(tmp_path, "queued.register.p50_ms < 10"))
    assert result.exit_code == 0, result.output
    [row] = json.loads((run / "gate.json").read_text())["rules"]
    assert row["verdict"] == "skipped" and "no queued cells" in row["detail"]
    result = gate(str(run), "--rules", rules_file(tmp_path, "qeued.register.p50_ms < 10"))
    assert result.exit_code == 2 and "did you mean 'queued'?" in result.output


def _faults_run(run_dir: Path) -> dict[str, Any]:
    """``write_run``'s cells plus queued, each also under smtp-flaky with the counts a good
    build measures (sync shows the 451s, threaded loses about the injected share, queued
    retries): a results.json document the default rules pass."""
    document = json.loads((write_run(run_dir) / "results.json").read_text())
    cells = {c["variant"]: c for c in document["cells"]}
    document["cells"].append({**copy.deepcopy(cells["threaded"]), "variant": "queued",
                              "files": None})
    cells["queued"] = document["cells"][-1]
    for variant, faults, told, lost in (("sync", 60, 60, 0), ("threaded", 60, 0, 60),
                                        ("queued", 75, 0, 0)):
        cell = copy.deepcopy(cells[variant])
        cell.update(scenario="smtp-flaky", files=None, smtp_faults={
            "attempts": 400 + faults - told - lost, "received": 400 - told - lost,
            "injected": faults, "injected_share": round(faults / (400 + faults - told - lost), 4),
            "by_rule": {"flaky": faults}, "latency": {}})
        cell["delivery"].update(registered=400 - told, delivered=400 - told - lost,
                                missing=lost, failed_visibly=told)
        document["cells"].append(cell)
    settings = document["profile_settings"]
    settings["variants"] = [*settings["variants"], "queued"]
    settings["scenarios"] = ["clean", "smtp-flaky"]
    validate(document)
    return document


def test_the_faults_rules_pass_a_good_run_and_fail_one_where_queued_loses_mail(
        tmp_path: Path) -> None:
    document = _faults_run(tmp_path / "good")
    (tmp_path / "good" / "results.json").write_text(json.dumps(document))
    result = gate(str(tmp_path / "good"))
    assert result.exit_code == 0, result.output
    rules = json.loads((tmp_path / "good" / "gate.json").read_text())["rules"]
    checked = {r["rule"] for r in rules if r["verdict"] == "pass"}
    assert "queued{scenario=smtp-flaky}.delivery.missing == 0" in checked
    assert "*{scenario=smtp-flaky}.smtp_faults.injected > 0" in checked

    flaky = next(c for c in document["cells"]
                 if c["variant"] == "queued" and c["scenario"] == "smtp-flaky")
    flaky["delivery"].update(delivered=397, missing=3)  # queued lost three emails
    validate(document)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps(document))
    result = gate(str(tmp_path / "bad"))
    assert result.exit_code == 1, result.output
    failed = [r for r in json.loads((tmp_path / "bad" / "gate.json").read_text())["rules"]
              if r["verdict"] == "fail"]
    assert [(r["rule"], r["measured"]) for r in failed] == [
        ("queued{scenario=smtp-flaky}.delivery.missing == 0", 3.0)]


def test_a_selector_picks_an_smtp_mode_and_the_baseline_is_the_plain_one(
        tmp_path: Path) -> None:
    """Cells on starttls+auth are selected with smtp=...; a baseline reference from one of
    them is the baseline measured on plain SMTP, the only mode a baseline runs."""
    run = write_run(tmp_path / "run")
    document = json.loads((run / "results.json").read_text())
    for plain in [c for c in document["cells"] if c["variant"] != "baseline"]:
        tls = copy.deepcopy(plain)
        tls.update(smtp="starttls+auth", files=None)
        tls["register"]["p50_ms"] = plain["register"]["p50_ms"] + 3.0
        document["cells"].append(tls)
    document["profile_settings"]["smtp"] = ["plain", "starttls+auth"]
    validate(document)
    (run / "results.json").write_text(json.dumps(document))
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "sync{smtp=starttls+auth}.register.p50_ms > baseline.register.p50_ms",
        "*{smtp=plain}.delivery.missing == 0"))
    assert result.exit_code == 0, result.output
    rows = json.loads((run / "gate.json").read_text())["rules"]
    assert [r["cell"] for r in rows] == ["sync@500ms/10rps+starttls+auth", "baseline@500ms/10rps",
                                         "sync@500ms/10rps", "threaded@500ms/10rps"]
    bad = gate(str(run), "--rules", rules_file(tmp_path, "sync{smtp=tls}.register.p50_ms > 1"))
    assert bad.exit_code == 2 and "unknown SMTP mode 'tls'" in bad.output


def test_a_rule_for_an_smtp_mode_the_run_lacks_is_skipped(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "sync{smtp=starttls+auth}.register.p50_ms < 100"))
    assert result.exit_code == 0, result.output
    [row] = json.loads((run / "gate.json").read_text())["rules"]
    assert row["verdict"] == "skipped" and "no cells on starttls+auth SMTP" in row["detail"]


def test_a_rules_file_extends_another_less_some_rules(tmp_path: Path) -> None:
    """A profile's rules say only how they differ from the default: ``extends`` and
    ``without`` (word for word: a rule the base no longer has is an error, not a silent keep)."""
    from maillab.gate import DEFAULT_RULES, RuleError, load_rules

    default = load_rules(DEFAULT_RULES)
    dropped = "*.arrivals.dropped == 0"
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{DEFAULT_RULES}"\nwithout = ["{dropped}"]\n'
                     'rules = ["*.arrivals.dropped <= 1"]\n')
    rules = [rule.text for rule in load_rules(child)]
    assert rules == [r.text for r in default if r.text != dropped] + ["*.arrivals.dropped <= 1"]
    child.write_text(f'extends = "{DEFAULT_RULES}"\nwithout = ["*.no.such == 0"]\n')
    with pytest.raises(RuleError, match="'without' names '\\*.no.such == 0'"):
        load_rules(child)
    child.write_text('extends = "child.toml"\n')
    with pytest.raises(RuleError, match="makes a loop"):
        load_rules(child)
    child.write_text('rule = ["*.arrivals.dropped == 0"]\n')
    with pytest.raises(RuleError, match="unknown key 'rule'"):
        load_rules(child)



def test_a_run_is_gated_by_its_profiles_rules_unless_told_otherwise(tmp_path: Path) -> None:
    """A profile that names its rules (gate_rules) has its runs held to them by default; a
    --rules file given still wins."""
    from maillab.gate import DEFAULT_RULES, load_rules

    soak = [rule.text for rule in load_rules(DEFAULT_RULES.parent / "soak-gates.toml")]
    run = write_run(tmp_path / "run", profile_settings__gate_rules="soak-gates.toml")
    gate(str(run))
    assert {o["rule"] for o in json.loads((run / "gate.json").read_text())["rules"]} == set(soak)
    told = rules_file(tmp_path, "*.arrivals.dropped == 0")
    gate(str(run), "--rules", told)
    assert {o["rule"] for o in json.loads((run / "gate.json").read_text())["rules"]} == {
        "*.arrivals.dropped == 0"}


def test_every_profile_names_rules_that_load() -> None:
    """Each shipped profile's gate_rules file reads (a broken one would fail only the runs of
    that profile, long after it was written); browser's adds to the default rules."""
    from loadtests.profiles import PROFILES_DIR, load_profile
    from maillab.gate import DEFAULT_RULES, load_rules

    default = {rule.text for rule in load_rules(DEFAULT_RULES)}
    named = {}
    for path in sorted(PROFILES_DIR.glob("*.toml")):
        profile = load_profile(path.stem)
        named[path.stem] = {r.text for r in load_rules(DEFAULT_RULES.parent / profile.gate_rules)}
    assert named["quick"] == named["full"] == named["faults"] == default
    assert default < named["browser"]
    assert named["capacity"] < default
    assert not any(".time_to_inbox.p50_ms" in rule and rule.startswith(("queued", "outbox"))
                   for rule in named["capacity"])
    assert any(".browser." in rule for rule in named["browser"] - default)
    assert not named["soak"] & default - {"*.arrivals.dropped == 0"}


def _probe(p50: float, p75: float, *, trusted: int = 20) -> dict[str, Any]:
    return {"count": 20, "trusted": trusted, "click_to_confirmation_p50_ms": p50,
            "click_to_confirmation_p75_ms": p75, "click_to_confirmation_p95_ms": p75 * 1.2,
            "event_p75_ms": 16.0, "events_reported": 20, "proxy_p75_ms": p75,
            "response_p75_ms": p75 - 30, "render_p50_ms": 30.0}


def test_the_browser_profiles_rules_judge_what_the_person_sees(tmp_path: Path) -> None:
    """browser-gates.toml: sync's person waits for SMTP, threaded's sees the floor's page;
    a threaded variant that made the person wait, or a click Chromium did not trust, fails."""
    from maillab.gate import DEFAULT_RULES

    rules = str(DEFAULT_RULES.parent / "browser-gates.toml")
    seen: dict[str, Any] = {"cells__0__browser": _probe(90, 100),
                            "cells__1__browser": _probe(575, 590),
            "cells__2__browser": _probe(85, 110)}
    run = write_run(tmp_path / "good", **seen)
    assert gate(str(run), "--rules", rules).exit_code == 0
    verdicts = {(o["rule"], o["verdict"])
                for o in json.loads((run / "gate.json").read_text())["rules"]}
    assert ("sync.browser.click_to_confirmation_p50_ms >= smtp_latency_ms", "pass") in verdicts

    waited = write_run(tmp_path / "waited", **{**seen, "cells__2__browser": _probe(560, 580)})
    assert gate(str(waited), "--rules", rules).exit_code == 1
    failed = {o["rule"] for o in json.loads((waited / "gate.json").read_text())["rules"]
              if o["verdict"] == "fail"}
    assert failed == {"threaded.browser.click_to_confirmation_p75_ms < "
                      "baseline.browser.click_to_confirmation_p75_ms * 1.5 + 50"}

    untrusted = write_run(tmp_path / "untrusted",
                          **{**seen, "cells__1__browser": _probe(575, 590, trusted=19)})
    assert gate(str(untrusted), "--rules", rules).exit_code == 1
