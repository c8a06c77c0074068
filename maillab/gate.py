"""``maillab gate``: pass/fail rules on a run, and a statistical comparison with a stored run.

Rules (TOML, ``rules = ["...", ...]``) read like k6 thresholds::

    *.delivery.missing == 0
    *.arrivals.dropped == 0
    queued.register.p95_ms < baseline.register.p95_ms * 1.5 + 5
    queued{latency=500}.time_to_inbox.p95_ms < smtp_latency_ms + 200
    sync{rate=10}.register.p50_ms >= smtp_latency_ms

``SELECTOR.METRIC.STAT OP EXPRESSION`` (or ``SELECTOR.METRIC OP ...`` for a metric that is
a single number, such as ``throughput_rps``): the selector is a variant or ``*``, optionally
with ``{latency=MS,rate=R,users=N,scenario=NAME,smtp=MODE}``; the right side is arithmetic
over numbers, the cell's variables (:data:`loadtests.results.VARIABLES`) and other variants'
figures in the same cell position (``baseline.register.p95_ms``: the baseline at the same SMTP
latency, load and scenario, on plain SMTP, the only mode a baseline runs), so a rule can hold
a variant to the floor measured in the same run rather than to absolute milliseconds on a
noisy machine. The metrics and statistics a rule may name are the results
model's (:data:`loadtests.results.METRICS`). A rule is checked on every cell it selects. A
name the model does not know is a rule error (exit 2, with a suggestion); a known metric the
run lacks, a variant the run has no cell of at that position, or a selector no cell matches,
fails the rule: never a silent pass.

Comparison with a baseline run: for each cell present in both, register, verify and time to
inbox are compared on their measured samples with a one-sided Mann-Whitney U test; a
regression needs both p < ``alpha`` and a median (the nearest-rank p50, as in results.json)
slower by more than ``min_effect`` (10%), so noise does not fail a build and a real slowdown
does. Runs are comparable only when profile,
variant set, CPU count, server settings and password hash match.

Validity is judged per question (:data:`loadtests.results.FAMILIES`): a cell whose timing
cannot be trusted (fakesmtp's timers fired late, the load generator fell behind) still
answers what it lost, so its delivery rules are checked and its timing rules skipped with the
reason (and likewise a rule whose right side names such a figure).

Exit codes: 0 pass; 1 a rule or comparison failed; 3 the run cannot be trusted at all (a cell
invalid for every question, cells missing, the run unfinished) or is not comparable; 2 usage
errors.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import cellfiles
from loadtests.cellfiles import CellKey
from loadtests.results import (
    FAMILIES,
    METRICS,
    VARIABLES,
    CellResult,
    Comparison,
    ComparisonReport,
    Family,
    GateReport,
    Results,
    RuleOutcome,
    Run,
    family,
    load_run,
    write_gate,
)
from loadtests.scenarios import SCENARIOS, SMTP_MODES, smtp_mode_for
from loadtests.stats import median
from loadtests.target import known_variants
from maillab.capacity import predicted_backlog_ms

PASS, FAIL, INVALID = 0, 1, 3
DEFAULT_RULES = Path(__file__).resolve().parent.parent / "loadtests" / "gates.toml"
TARGET_RULES = DEFAULT_RULES.with_name("target-gates.toml")
COMPARED = (cellfiles.REGISTER, cellfiles.VERIFY, cellfiles.TIME_TO_INBOX)
_RULE = re.compile(r"^\s*(?P<variant>[\w*]+)(?:\{(?P<filters>[^}]*)\})?\."
                   r"(?P<metric>\w+)(?:\.(?P<stat>\w+))?\s*(?P<op><=|>=|==|!=|<|>)"
                   r"\s*(?P<rhs>.+?)\s*$")
_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


class RuleError(ValueError):
    """A rule or rules file that cannot be used; the message quotes it."""


@dataclass(frozen=True)
class Rule:
    text: str
    variant: str
    filters: tuple[tuple[str, float | str], ...]
    metric: str
    stat: str | None
    op: str
    rhs: str

    def selects(self, cell: CellResult) -> bool:
        if self.variant not in ("*", cell.variant):
            return False
        load = cell.load
        keys: dict[str, float | str] = {"latency": cell.smtp_latency_ms, "users": load.users,
                                        "rate": load.rate, "scenario": cell.scenario,
                                        "smtp": cell.smtp}
        return all(keys[name] == value for name, value in self.filters)


# -- rules ---------------------------------------------------------------------------------

# Selector filters whose value is a name: what it names, and the names it may be.
_NAMED_FILTERS: dict[str, tuple[str, Collection[str]]] = {
    "scenario": ("scenario", SCENARIOS), "smtp": ("SMTP mode", SMTP_MODES)}

def _metric_name(text: str, where: str, metric: str, stat: str | None) -> None:
    """Raise a :class:`RuleError` unless ``metric`` (with ``stat``) is in the results model;
    ``where`` names a reference on the right side ("" for the rule's own metric)."""
    at = f" in {where}" if where else ""
    if metric not in METRICS:
        raise RuleError(f"rule {text!r}: unknown metric {metric!r}{at}"
                        f"{_suggest(metric, METRICS)}")
    stats = METRICS[metric]
    if stats and stat is None:
        raise RuleError(f"rule {text!r}: {metric}{at} needs a statistic; one of "
                        f"{', '.join(stats)}")
    if not stats and stat is not None:
        raise RuleError(f"rule {text!r}: {metric}{at} is a single number; write "
                        f"{metric} alone")
    if stat is not None and stat not in stats:
        raise RuleError(f"rule {text!r}: {metric}{at} has no {stat!r}{_suggest(stat, stats)}")


@dataclass(frozen=True)
class Reference:
    """``VARIANT.METRIC[.STAT]`` on a rule's right side: that variant's figure in the cell at
    the same SMTP latency and load as the cell being checked."""

    variant: str
    metric: str
    stat: str | None

    @classmethod
    def parse(cls, token: str, rule: str) -> Reference:
        parts = token.split(".")
        if len(parts) not in (2, 3):
            raise RuleError(f"rule {rule!r}: {token!r} is not VARIANT.METRIC.STAT")
        if parts[0] not in known_variants():
            raise RuleError(f"rule {rule!r}: unknown variant {parts[0]!r} in {token!r}"
                            f"{_suggest(parts[0], known_variants())}")
        reference = cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
        _metric_name(rule, repr(token), reference.metric, reference.stat)
        return reference


def parse_rule(text: str) -> Rule:
    match = _RULE.match(text)
    if not match:
        raise RuleError(f"rule {text!r} does not read as SELECTOR.METRIC.STAT OP EXPRESSION, "
                        "e.g. 'sync.register.p50_ms >= smtp_latency_ms'")
    metric, stat = match["metric"], match["stat"]
    if match["variant"] != "*" and match["variant"] not in known_variants():
        raise RuleError(f"rule {text!r}: unknown variant {match['variant']!r}"
                        f"{_suggest(match['variant'], known_variants())}")
    _metric_name(text, "", metric, stat)
    filters: list[tuple[str, float | str]] = []
    for part in filter(None, (p.strip() for p in (match["filters"] or "").split(","))):
        name, _, value = (s.strip() for s in part.partition("="))
        if name in _NAMED_FILTERS:
            what, known = _NAMED_FILTERS[name]
            if value not in known:
                raise RuleError(f"rule {text!r}: unknown {what} {value!r}"
                                f"{_suggest(value, known)}")
            filters.append((name, value))
            continue
        number = _filter_value(value)
        if name not in ("latency", "users", "rate") or number is None:
            raise RuleError(f"rule {text!r}: selector filter {part!r} must be latency=MS, "
                            "rate=R, users=N, scenario=NAME or smtp=MODE")
        filters.append((name, number))
    # Fails now on a bad expression or reference, before any cell is checked.
    def checked(token: str) -> float:
        Reference.parse(token, text)
        return 1.0

    evaluate(match["rhs"], {v: 1.0 for v in (*VARIABLES, *DERIVED)}, text, checked)
    return Rule(text.strip(), match["variant"], tuple(filters), metric, stat, match["op"],
                match["rhs"])


def _filter_value(text: str) -> float | None:
    if not re.fullmatch(r"\d+(\.\d+)?", text):
        return None
    return float(text)


def load_rules(path: Path, _seen: tuple[Path, ...] = ()) -> list[Rule]:
    """The rules of a TOML file: ``rules = [...]``, optionally on top of another file's
    (``extends = "gates.toml"``, relative to this one) less the ones named in ``without``
    (each must be one of the base's rules, word for word, so a renamed rule is not silently
    kept), so a profile's rules say only how they differ from the default."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuleError(f"{path}: no such rules file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"rules", "extends", "without"})
    if unknown:
        raise RuleError(f"{path}: unknown key {unknown[0]!r}; keys: extends, rules, without")
    texts = data.get("rules", [])
    without = data.get("without", [])
    for key, value in (("rules", texts), ("without", without)):
        if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
            raise RuleError(f"{path}: {key!r} must be a list of strings")
    base: list[Rule] = []
    if "extends" in data:
        if not isinstance(data["extends"], str):
            raise RuleError(f"{path}: 'extends' must be a rules file's path")
        parent = (path.parent / data["extends"]).resolve()
        if parent in _seen or parent == path.resolve():
            raise RuleError(f"{path}: 'extends' makes a loop through {parent}")
        base = load_rules(parent, (*_seen, path.resolve()))
        named = {rule.text for rule in base}
        for text in without:
            if text not in named:
                raise RuleError(f"{path}: 'without' names {text!r}, which {parent.name} does "
                                "not have")
        base = [rule for rule in base if rule.text not in without]
    elif without:
        raise RuleError(f"{path}: 'without' needs 'extends'")
    rules = base + [parse_rule(r) for r in texts]
    if not rules:
        raise RuleError(f"{path}: 'rules' must be a non-empty list of strings")
    return rules


def profile_rules(results: Results) -> list[Rule]:
    """The rules a run is gated by when none are given: for a target of one's own, its file's
    ``gate_rules``, else the rules every target shares (target-gates.toml); for maillab's own
    variants, the profile's ``gate_rules`` (a file in loadtests/), else the default."""
    target = results.target
    if target is not None and not target.built_in:
        return load_rules(Path(target.gate_rules) if target.gate_rules else TARGET_RULES)
    named = (results.profile_settings or {}).get("gate_rules")
    return load_rules(DEFAULT_RULES.parent / named if named else DEFAULT_RULES)


def _suggest(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"


def evaluate(expression: str, variables: dict[str, float], rule: str = "",
             reference: Callable[[str], float] | None = None) -> float:
    """Arithmetic over numbers and ``variables``: + - * / and parentheses, nothing else. A
    dotted name (``baseline.register.p95_ms``) is passed to ``reference`` for its value."""
    tokens = re.findall(r"\d+\.?\d*|\.\d+|[A-Za-z_]\w*(?:\.\w+)*|[-+*/()]|\S", expression)
    position = 0

    def fail(why: str) -> RuleError:
        return RuleError(f"rule {rule!r}: {why} in {expression!r}")

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        token = peek()
        if token is None:
            raise fail("unexpected end")
        position += 1
        return token

    def atom() -> float:
        token = take()
        if token == "(":
            value = sum_()
            if take() != ")":
                raise fail("missing ')'")
            return value
        if token == "-":
            return -atom()
        if re.fullmatch(r"\d+\.?\d*|\.\d+", token):
            return float(token)
        if token in variables:
            return float(variables[token])
        if "." in token and reference is not None:
            return reference(token)
        raise fail(f"unknown name {token!r} (names: {', '.join((*VARIABLES, *DERIVED))}, or "
                   "VARIANT.METRIC.STAT)")

    def product() -> float:
        value = atom()
        while peek() in ("*", "/"):
            op, right = take(), atom()
            value = value * right if op == "*" else value / right
        return value

    def sum_() -> float:
        value = product()
        while peek() in ("+", "-"):
            op, right = take(), product()
            value = value + right if op == "+" else value - right
        return value

    result = sum_()
    if peek() is not None:
        raise fail(f"unexpected {peek()!r}")
    return result


def check_rules(results: Results, rules: list[Rule]) -> list[RuleOutcome]:
    outcomes = []
    ran = {c.variant for c in results.cells}
    scenarios = {key.scenario for key in results.expected_cells} | {
        c.scenario for c in results.cells}
    modes = {key.smtp for key in results.expected_cells} | {c.smtp for c in results.cells}
    for rule in rules:
        cells = [c for c in results.cells if rule.selects(c)]
        numeric = [f for f in rule.filters if f[0] not in ("scenario", "smtp")]
        asked = dict(rule.filters).get("scenario")
        mode = dict(rule.filters).get("smtp")
        absent = None
        if rule.variant != "*" and rule.variant not in ran:
            absent = f"this run has no {rule.variant} cells"
        elif asked is not None and asked not in scenarios:
            absent = f"this run has no {asked} cells"  # a rule for a profile with it
        elif mode is not None and mode not in modes:
            absent = f"this run has no cells on {mode} SMTP"
        if not cells and absent and not numeric:
            outcomes.append(RuleOutcome(rule=rule.text, cell=None, measured=None,
                                        limit=rule.rhs, verdict="skipped", detail=absent))
            continue
        if not cells:
            outcomes.append(RuleOutcome(rule=rule.text, cell=None, measured=None,
                                        limit=rule.rhs, verdict="error",
                                        detail="no cell of this run matches the selector"))
        asks = family(rule.metric, rule.stat)
        for cell in cells:
            if asks in cell.untrusted:
                outcomes.append(RuleOutcome(rule=rule.text, cell=cell.label, measured=None,
                                            limit=rule.rhs, verdict="skipped",
                                            detail=_untrusted(cell, asks)))
                continue
            variables = _variables(results, cell)
            try:
                limit = evaluate(rule.rhs, variables, rule.text, _same_position(results, cell))
            except _Unmeasured as absent:
                outcomes.append(RuleOutcome(rule=rule.text, cell=cell.label, measured=None,
                                            limit=rule.rhs, verdict="error", detail=str(absent)))
                continue
            except _Untrusted as doubted:
                outcomes.append(RuleOutcome(rule=rule.text, cell=cell.label, measured=None,
                                            limit=rule.rhs, verdict="skipped",
                                            detail=str(doubted)))
                continue
            value = cell.metric(rule.metric, rule.stat)
            shown = f"{rule.op} {limit:g}"
            if value is None:
                name = rule.metric + (f".{rule.stat}" if rule.stat else "")
                outcomes.append(RuleOutcome(rule=rule.text, cell=cell.label, measured=None,
                                            limit=shown, verdict="error",
                                            detail=f"the run has no {name} here"))
                continue
            ok = _OPS[rule.op](value, limit)
            outcomes.append(RuleOutcome(rule=rule.text, cell=cell.label, measured=value,
                                        limit=shown, verdict="pass" if ok else "fail"))
    return outcomes


# Variables a rule may name that first principles derive from the cell and the run's settings
# (maillab.capacity): ``backlog_ms``, how much later than the SMTP time a consumer that cannot
# keep up delivers at p95.
DERIVED = ("backlog_ms",)


def _variables(results: Results, cell: CellResult) -> dict[str, float]:
    found = {name: float(getattr(cell, name) or 0) for name in VARIABLES}
    found["backlog_ms"] = predicted_backlog_ms(
        cell.variant, cell.smtp_latency_ms, cell.rate, cell.warmup_s or 0.0, cell.duration_s,
        results.environment.server.queue_consumer_threads)
    return found


class _Unmeasured(LookupError):
    """A rule's right side names a figure the run does not have; the message says which."""


class _Untrusted(LookupError):
    """A rule's right side names a figure that cannot judge it: of a cell invalid for that
    question, or of a capacity step left out on purpose."""


def _untrusted(cell: CellResult, asks: Family) -> str:
    return (f"{cell.label}'s {asks} figures cannot be trusted ({'; '.join(cell.warnings)}): "
            f"its {asks} rules are skipped, the others checked")


def _same_position(results: Results, cell: CellResult) -> Callable[[str], float]:
    """Resolve ``VARIANT.METRIC.STAT`` in the cell at ``cell``'s SMTP latency and load (and
    scenario and SMTP mode; a variant that sends nothing runs on plain SMTP only, and is the
    same floor whatever the mode)."""

    def value(token: str) -> float:
        reference = Reference.parse(token, token)
        key = CellKey(reference.variant, cell.smtp_latency_ms, cell.load, cell.scenario,
                      smtp_mode_for(reference.variant, cell.smtp))
        other = results.cell(key)
        if other is None and key in results.past_capacity:
            raise _Untrusted(f"{key.label} was not run: its capacity series ended below this "
                             "rate")
        if other is None:
            raise _Unmeasured(f"this run has no {reference.variant} cell at "
                              f"{cell.smtp_latency_ms} ms and {cell.load.title} for {token}")
        asks = family(reference.metric, reference.stat)
        if asks in other.untrusted:
            raise _Untrusted(_untrusted(other, asks))
        found = other.metric(reference.metric, reference.stat)
        if found is None:
            raise _Unmeasured(f"{other.label} has no {token.split('.', 1)[1]}")
        return found

    return value


# -- validity and comparability --------------------------------------------------------------

def invalid_reasons(results: Results) -> list[str]:
    reasons = []
    if not results.complete:
        reasons.append(f"the run did not finish: {results.stopped_reason or 'unknown'}")
    missing = results.missing_cells
    if missing:
        shown = ", ".join(key.label for key in missing[:5])
        reasons.append(f"{len(missing)} cells missing: {shown}")
    for cell in results.cells:
        if cell.untrusted == frozenset(FAMILIES):  # else its trusted rules still answer
            why = "; ".join(cell.warnings) or "marked invalid"
            reasons.append(f"{cell.label} is invalid: {why}")
    return reasons


def partly_invalid(results: Results) -> list[str]:
    """The cells invalid for some questions only: the gate skips those questions' rules on
    them (and says so) and checks the rest."""
    return [f"{cell.label}: {', '.join(sorted(cell.untrusted))} invalid; "
            f"{'; '.join(cell.warnings)}" for cell in results.cells
            if cell.untrusted and cell.untrusted != frozenset(FAMILIES)]


def comparability_key(results: Results) -> dict[str, Any]:
    env = results.environment
    server = env.server
    return {
        "profile": results.profile,
        "variants": sorted({c.variant for c in results.cells}),
        "cpu_count": env.cpu_count,
        "server": {"workers": server.workers, "threads": server.threads,
                   "queue_consumer_threads": server.queue_consumer_threads},
        "password_hash": env.password_hash,
    }


def compare(current: Run, baseline: Run, alpha: float, min_effect: float,
            min_samples: int = 20) -> ComparisonReport:
    """Each cell present in both runs, metric by metric, on their measured samples."""
    from scipy.stats import mannwhitneyu

    mine, theirs = comparability_key(current.results), comparability_key(baseline.results)
    differing = sorted(k for k in mine if mine[k] != theirs[k])
    if differing:
        return ComparisonReport(comparable=False, differing_keys={
            k: {"run": mine[k], "baseline": theirs[k]} for k in differing})
    rows = []
    for cell in current.cells:
        before_cell = baseline.results.cell(cell.key)
        if before_cell is None:
            continue
        now, before = current.samples(cell), baseline.samples(before_cell)
        for metric in COMPARED:
            a = now[metric].times if now is not None else []
            b = before[metric].times if before is not None else []
            if len(a) < min_samples or len(b) < min_samples:
                rows.append(Comparison(cell=cell.label, metric=metric, samples=[len(a), len(b)],
                                       verdict="skipped",
                                       detail=f"fewer than {min_samples} samples"))
                continue
            median_now, median_before = median(a) or 0.0, median(b) or 0.0
            change = median_now / median_before - 1 if median_before > 0 else 0.0
            p_value = float(mannwhitneyu(a, b, alternative="greater").pvalue)
            regressed = p_value < alpha and change > min_effect
            rows.append(Comparison(
                cell=cell.label, metric=metric, samples=[len(a), len(b)],
                median_ms=[round(median_now, 3), round(median_before, 3)],
                change=round(change, 4), p_value=p_value,
                verdict="fail" if regressed else "pass"))
    return ComparisonReport(comparable=True, alpha=alpha, min_effect=min_effect, metrics=rows)


# -- the whole gate ----------------------------------------------------------------------------

def run_gate(run_dir: Path, rules: list[Rule] | None = None, baseline_dir: Path | None = None,
             alpha: float = 0.01, min_effect: float = 0.10, history_dir: Path | None = None,
             any_machine: bool = False) -> GateReport:
    """Check the run against ``rules`` (None: its profile's, :func:`profile_rules`), write
    its gate.json, return it. Raises :class:`RunError` when a run cannot be read and
    :class:`RuleError` when its rules cannot be used."""
    run = load_run(run_dir)
    if rules is None:
        rules = profile_rules(run.results)
    report = GateReport(rules=check_rules(run.results, rules),
                        invalid=invalid_reasons(run.results),
                        partly_invalid=partly_invalid(run.results))
    if baseline_dir is not None:
        report.comparison = compare(run, load_run(baseline_dir), alpha, min_effect)
        if not report.comparison.comparable:
            keys = ", ".join(report.comparison.differing_keys)
            report.invalid.append(f"not comparable with {baseline_dir}: {keys} differ")
    if history_dir is not None:
        from loadtests.history import read_history
        from loadtests.historycheck import check_history

        report.history = check_history(run.results, read_history(history_dir), alpha,
                                       min_effect, any_machine)
    failed = any(o.verdict in ("fail", "error") for o in report.rules) or any(
        m.verdict == "fail" for m in (report.comparison.metrics if report.comparison else [])
    ) or any(c.verdict == "fail" for c in (report.history.checks if report.history else []))
    if report.invalid:
        report.verdict, report.exit_code = "invalid", INVALID
    elif failed:
        report.verdict, report.exit_code = "fail", FAIL
    write_gate(run_dir, report)
    return report
