"""The gate's verdict in the formats CI systems read: a JUnit XML file (every rule check and
every comparison with a stored run a test case; GitHub, GitLab, Jenkins and Azure all render
it) and a Markdown summary (failures first, then every check), which ``maillab gate`` also
appends to ``$GITHUB_STEP_SUMMARY`` when GitHub Actions sets it.

The XML is written with junitparser (a well-kept library that also reads it back in the
tests) rather than by hand: the schema's quirks (a failure's message attribute, skipped
elements, escaping) are its job.
"""

from __future__ import annotations

import os
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from loadtests.results import GateReport, RuleOutcome

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
# GitHub keeps at most 1 MiB of step summary per step; the table of every check is cut, with
# a line that says so, before the summary passes this.
SUMMARY_LIMIT = 1024 * 1024 - 4096


def _rule_case(outcome: RuleOutcome) -> TestCase:
    case = TestCase(outcome.rule, classname=f"maillab.gate.{outcome.cell or 'run'}")
    figures = (f"{outcome.cell or 'no cell'}: measured "
               f"{'-' if outcome.measured is None else f'{outcome.measured:g}'}, limit "
               f"{outcome.limit}")
    if outcome.verdict == "fail":
        case.result = [Failure(f"{figures}; {outcome.rule}", "rule")]
    elif outcome.verdict == "error":
        case.result = [Error(f"{figures}; {outcome.detail}", "rule")]
    elif outcome.verdict == "skipped":
        case.result = [Skipped(outcome.detail)]
    return case


def junit(report: GateReport, run: str) -> JUnitXml:
    """The report as JUnit XML: one suite for the rules, one for the comparison with a stored
    run (where there is one), one for why the run cannot be trusted (where it cannot)."""
    xml = JUnitXml("maillab gate")
    rules = TestSuite(f"maillab gate rules: {run}")
    rules.add_testcases([_rule_case(o) for o in report.rules])
    xml.add_testsuite(rules)
    comparison = report.comparison
    if comparison is not None:
        compared = TestSuite(f"maillab gate comparison: {run}")
        for m in comparison.metrics:
            case = TestCase(f"{m.metric} not slower", classname=f"maillab.compare.{m.cell}")
            if m.verdict == "fail":
                medians = (f"median {m.median_ms[0]:g} ms now, {m.median_ms[1]:g} ms before"
                           if m.median_ms else "")
                change = "" if m.change is None else f", {m.change:+.1%}"
                p = "" if m.p_value is None else f", p {m.p_value:.2g}"
                case.result = [Failure(f"{m.cell} {m.metric}: {medians}{change}{p}; {m.detail}",
                                       "regression")]
            elif m.verdict == "skipped":
                case.result = [Skipped(m.detail)]
            compared.add_testcase(case)
        xml.add_testsuite(compared)
    if report.history is not None:
        history = TestSuite(f"maillab gate history: {run}")
        for c in report.history.checks:
            case = TestCase(f"{c.figure} within its history", classname=f"maillab.history.{c.cell}")
            if c.verdict == "fail":
                case.result = [Failure(f"{c.cell} {c.figure}: {c.detail}; segment since "
                                       f"{c.segment_since}", "regression")]
            elif c.verdict == "skipped":
                case.result = [Skipped(c.detail)]
            history.add_testcase(case)
        xml.add_testsuite(history)
    if report.invalid:
        validity = TestSuite(f"maillab gate validity: {run}")
        for reason in report.invalid:
            case = TestCase("the run can be trusted", classname="maillab.validity")
            case.result = [Error(reason, "invalid")]
            validity.add_testcase(case)
        xml.add_testsuite(validity)
    return xml


def write_junit(path: Path, report: GateReport, run: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    junit(report, run).write(str(path), pretty=True)
    return path


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return text.replace("|", "\\|").replace("\n", " ") or " "


def _measured(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


_MARK = {"pass": "✅ pass", "fail": "❌ fail", "error": "❌ error", "skipped": "⚪ skipped"}


def markdown(report: GateReport, run: str) -> str:
    """The report as GitHub-flavoured Markdown: the verdict, the failures (and why the run is
    invalid) first, then a compact table of every check, cut to stay within GitHub's limit."""
    counts = {v: sum(1 for o in report.rules if o.verdict == v) for v in _MARK}
    lines = [f"## maillab gate: {report.verdict} (exit {report.exit_code})", "",
             f"Run `{run}`: {len(report.rules)} rule checks, "
             + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".", ""]
    if report.invalid:
        lines += ["**Invalid** (the run's answers cannot be trusted):", ""]
        lines += [f"- {_cell(reason)}" for reason in report.invalid] + [""]
    failed = [o for o in report.rules if o.verdict in ("fail", "error")]
    compared = report.comparison.metrics if report.comparison else []
    regressions = [m for m in compared if m.verdict == "fail"]
    history = report.history.checks if report.history else []
    drifted = [c for c in history if c.verdict == "fail"]
    if failed or regressions or drifted:
        lines += ["### Failures", "", "| rule | cell | measured | limit | detail |",
                  "|---|---|---:|---|---|"]
        lines += [f"| {_cell(o.rule)} | {_cell(o.cell or '-')} | {_measured(o.measured)} | "
                  f"{_cell(o.limit)} | {_cell(o.detail or o.verdict)} |" for o in failed]
        lines += [f"| {_cell(m.metric)} not slower | {_cell(m.cell)} | "
                  f"{'-' if m.change is None else f'{m.change:+.1%}'} | "
                  f"p < {report.comparison.alpha if report.comparison else '-'} | "
                  f"{_cell(m.detail)} |" for m in regressions]
        lines += [f"| {_cell(c.figure)} within its history | {_cell(c.cell)} | {c.value:g} | "
                  f"{c.expected:g} expected | {_cell(c.detail)} |" for c in drifted]
        lines.append("")
    if report.history is not None:
        judged = sum(1 for c in history if c.verdict != "skipped")
        lines += [f"History: {judged} of {len(history)} cell x figure checks judged against "
                  f"{report.history.runs} earlier runs; expected false alarms "
                  f"{_cell(report.history.expected_false_alarms)}."
                  + (f" **{_cell(report.history.warning)}**" if report.history.warning else ""),
                  ""]
    if report.partly_invalid:
        lines += ["Partly invalid (those questions' rules skipped): "
                  + "; ".join(_cell(r) for r in report.partly_invalid), ""]
    head = "\n".join(lines)
    table = ["### Every check", "", "| verdict | rule | cell | measured | limit |",
             "|---|---|---|---:|---|"]
    size = len(head.encode()) + sum(len(r.encode()) + 1 for r in table)
    for index, o in enumerate(report.rules):
        row = (f"| {_MARK[o.verdict]} | {_cell(o.rule)} | {_cell(o.cell or '-')} | "
               f"{_measured(o.measured)} | {_cell(o.limit)} |")
        if size + len(row.encode()) + 200 > SUMMARY_LIMIT:
            table.append(f"\n{len(report.rules) - index} more checks left out to stay within "
                         "GitHub's step summary limit; gate.json has them all.")
            break
        table.append(row)
        size += len(row.encode()) + 1
    return head + "\n" + "\n".join(table) + "\n"


def write_summary(path: Path | None, report: GateReport, run: str) -> list[Path]:
    """Write the Markdown to ``path`` (if given) and append it to ``$GITHUB_STEP_SUMMARY``
    (if set); the files written."""
    text = markdown(report, run)
    written = []
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    step = os.environ.get(STEP_SUMMARY_ENV)
    if step:
        with open(step, "a", encoding="utf-8") as out:
            out.write(text + "\n")
        written.append(Path(step))
    return written
