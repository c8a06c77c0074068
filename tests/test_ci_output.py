"""maillab gate's CI output: JUnit XML read back by a JUnit parser, and the Markdown summary
(also appended to $GITHUB_STEP_SUMMARY) rendered and its tables checked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped
from markdown_it import MarkdownIt

from loadtests.results import GateReport, RuleOutcome
from maillab.ci import SUMMARY_LIMIT, markdown
from tests.test_gate import gate, rules_file, write_run

RULES = ("threaded.register.p50_ms < 2", "*.delivery.missing == 0",
         "queued{scenario=smtp-hang}.delivery.missing == 0")


def _tables(text: str) -> list[list[list[str]]]:
    """Every table of the rendered Markdown, as rows of cell texts (the header first)."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables: list[list[list[str]]] = []
    row: list[str] | None = None
    for index, token in enumerate(tokens):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            tables[-1].append(row)
        elif token.type in ("th_open", "td_open") and row is not None:
            row.append(tokens[index + 1].content)
    return tables


def test_the_junit_file_holds_each_check_with_its_figures(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "before", seed=1)
    run = write_run(tmp_path / "after", seed=2, scale=1.2)
    junit = tmp_path / "out" / "gate.xml"
    result = gate(str(run), "--baseline", str(baseline), "--rules", rules_file(tmp_path, *RULES),
                  "--junit", str(junit))
    assert result.exit_code == 1, result.output
    suites = {suite.name: list(suite) for suite in JUnitXml.fromfile(str(junit))}
    assert set(suites) == {"maillab gate rules: after", "maillab gate comparison: after"}
    report = json.loads((run / "gate.json").read_text())
    cases = suites["maillab gate rules: after"]
    assert len(cases) == len(report["rules"])  # every check a test case, none left out
    by_rule: dict[str, list[Any]] = {}
    for case in cases:
        by_rule.setdefault(case.name, []).append(case)
    [threaded] = by_rule["threaded.register.p50_ms < 2"]
    [failure] = threaded.result
    assert isinstance(failure, Failure)
    assert re.match(r"threaded@500ms/10rps: measured \d+\.\d+, limit < 2; ", failure.message)
    assert threaded.classname == "maillab.gate.threaded@500ms/10rps"
    assert all(not case.result for case in by_rule["*.delivery.missing == 0"])  # passed
    [hang] = by_rule["queued{scenario=smtp-hang}.delivery.missing == 0"]
    assert isinstance(hang.result[0], Skipped)
    assert "this run has no queued cells" in hang.result[0].message
    regressions = [c for c in suites["maillab gate comparison: after"] if c.result
                   and isinstance(c.result[0], Failure)]
    assert any(c.classname == "maillab.compare.threaded@500ms/10rps" and
               re.search(r"median [\d.]+ ms now, [\d.]+ ms before, \+\d+\.\d%",
                         c.result[0].message) for c in regressions)


def test_an_invalid_run_is_an_error_case(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", complete=False, stopped_reason="stopped by SIGINT")
    junit = tmp_path / "gate.xml"
    result = gate(str(run), "--rules", rules_file(tmp_path, "*.delivery.missing == 0"),
                  "--junit", str(junit))
    assert result.exit_code == 3, result.output
    [validity] = [s for s in JUnitXml.fromfile(str(junit)) if "validity" in s.name]
    errors = [case.result[0] for case in validity]
    assert errors and all(isinstance(e, Error) for e in errors)
    assert any("stopped by SIGINT" in str(e.message) for e in errors)


def test_the_summary_puts_failures_first_and_goes_to_the_step_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step = tmp_path / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    run = write_run(tmp_path / "run")
    summary = tmp_path / "summary.md"
    result = gate(str(run), "--rules", rules_file(tmp_path, *RULES), "--summary", str(summary))
    assert result.exit_code == 1, result.output
    text = summary.read_text()
    assert step.read_text() == "earlier step\n" + text + "\n"  # appended, not replaced
    assert text.startswith("## maillab gate: fail (exit 1)")
    failures, every = _tables(text)
    assert failures[0] == ["rule", "cell", "measured", "limit", "detail"]
    assert [row[:2] for row in failures[1:]] == [["threaded.register.p50_ms < 2",
                                                  "threaded@500ms/10rps"]]
    assert every[0] == ["verdict", "rule", "cell", "measured", "limit"]
    report = json.loads((run / "gate.json").read_text())
    assert len(every) - 1 == len(report["rules"])
    assert {row[0] for row in every[1:]} == {"❌ fail", "✅ pass", "⚪ skipped"}


def test_a_summary_past_githubs_limit_is_cut_and_says_so() -> None:
    rules = [RuleOutcome(rule=f"x{i} == 0 " + "y" * 400, cell="c", measured=0.0, limit="== 0",
                         verdict="pass") for i in range(4000)]
    text = markdown(GateReport(rules=rules), "huge")
    assert len(text.encode()) <= SUMMARY_LIMIT + 4096
    assert re.search(r"\d+ more checks left out to stay within GitHub's step summary limit",
                     text)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "ci"


def test_the_github_actions_example_passes_actionlint() -> None:
    """examples/ci/github-actions.yml, as users copy it, is a valid workflow (actionlint
    checks its syntax, expressions, action versions and permissions)."""
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("actionlint is not installed (pip install -e .[test])")
    done = subprocess.run([found, "-no-color", str(EXAMPLES / "github-actions.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (EXAMPLES / "github-actions.yml").read_text()
    assert "--gate --junit results/gate.xml --summary results/gate.md" in " ".join(text.split())


def test_the_gitlab_example_reads_the_junit_file() -> None:
    yaml = pytest.importorskip("yaml")
    job = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())["maillab"]
    assert job["artifacts"]["reports"]["junit"] == "results/gate.xml"
    assert job["artifacts"]["when"] == "always"  # the report of a failed gate is kept
    assert any("--gate --junit results/gate.xml" in line for line in job["script"])
