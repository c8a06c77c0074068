"""`maillab gate` on hand-built runs: rules, baseline comparison, validity, exit codes."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loadtests.cellfiles import CellKey, Registration, Sample
from loadtests.profiles import Profile
from maillab.cli import cli
from tests.runs import results_for, summarize, validate

LATENCY = 500
PROFILE = Profile(name="quick", variants=("sync", "threaded"), latencies_ms=(LATENCY,),
                  users=(10,), duration_s=10, warmup_s=0)


def write_run(run_dir: Path, scale: float = 1.0, seed: int = 1, n: int = 400,
              **changes: Any) -> Path:
    """A run of two cells whose samples are log-normal around realistic medians; ``changes``
    set keys of the written document (``cells__0__valid=False``)."""
    rng = random.Random(seed)
    medians = {"sync": {"register": 510.0, "verify": 3.0, "time_to_inbox": 505.0},
               "threaded": {"register": 6.0, "verify": 3.0, "time_to_inbox": 520.0}}
    cells = []
    for variant, metric_medians in medians.items():
        key = CellKey(variant, LATENCY, 10)
        samples = [Sample(name, "X", 0.0, round(m * scale * rng.lognormvariate(0, 0.05), 3),
                          ok=True, warmup=False)
                   for name, m in metric_medians.items() for _ in range(n)]
        registrations = [Registration(f"u{i}@maillab.test", 0.0, warmup=False, status=303,
                                      verify_status=200) for i in range(n)]
        cells.append(summarize(run_dir, key, PROFILE, samples, registrations))
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
    assert {(m["cell"], m["metric"]) for m in failed} >= {("threaded@500ms/10u", "register")}
    assert all(m["change"] == pytest.approx(0.2, abs=0.03) for m in failed)
    assert "threaded@500ms/10u" in result.output and "fail" in result.output


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


def test_missing_cells_and_unfinished_runs_exit_3(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", profile_settings__users=[10, 50], complete=False,
                    stopped_reason="stopped by SIGINT")
    result = gate(str(run))
    assert result.exit_code == 3
    assert "2 cells missing" in result.output and "stopped by SIGINT" in result.output


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
    run = write_run(tmp_path / "run", cells__1__time_to_inbox__p95_ms=None)
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "threaded.time_to_inbox.p95_ms < 10000", "sync{users=99}.register.p50_ms < 10"))
    assert result.exit_code == 1
    verdicts = [(r["verdict"], r["detail"]) for r in
                json.loads((run / "gate.json").read_text())["rules"]]
    assert verdicts[0][0] == "error" and "has no time_to_inbox.p95_ms" in verdicts[0][1]
    assert verdicts[1] == ("error", "no cell of this run matches the selector")


def test_selectors_filter_by_latency_and_users(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    result = gate(str(run), "--rules", rules_file(
        tmp_path, "sync{latency=500,users=10}.register.p50_ms > smtp_latency_ms - 10",
        "*{latency=500}.delivery.missing == 0"))
    assert result.exit_code == 0, result.output
    assert len(json.loads((run / "gate.json").read_text())["rules"]) == 3


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
    run = write_run(tmp_path / "run")  # sync and threaded only
    result = gate(str(run), "--rules", rules_file(tmp_path, "queued.register.p50_ms < 10"))
    assert result.exit_code == 0, result.output
    [row] = json.loads((run / "gate.json").read_text())["rules"]
    assert row["verdict"] == "skipped" and "no queued cells" in row["detail"]
    result = gate(str(run), "--rules", rules_file(tmp_path, "qeued.register.p50_ms < 10"))
    assert result.exit_code == 2 and "did you mean 'queued'?" in result.output
