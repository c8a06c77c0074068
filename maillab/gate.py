"""``maillab gate``: pass/fail rules on a run, and a statistical comparison with a stored run.

Rules (TOML, ``rules = ["...", ...]``) read like k6 thresholds::

    *.delivery.missing == 0
    threaded.register.p95_ms < 50
    queued{latency=500}.time_to_inbox.p95_ms < smtp_latency_ms + 200
    sync.register.p50_ms >= smtp_latency_ms

``SELECTOR.METRIC.STAT OP EXPRESSION``: the selector is a variant or ``*``, optionally with
``{latency=MS,users=N}``; the right side is arithmetic over numbers and the cell's
``smtp_latency_ms``, ``users`` and ``duration_s``. A rule is checked on every cell it selects.
A metric name the schema does not know is a rule error (exit 2, with a suggestion); a known
metric the run lacks, or a selector no cell matches, fails the rule: never a silent pass.

Comparison with a baseline run: for each cell present in both, register, verify and time to
inbox are compared on their per-request samples with a one-sided Mann-Whitney U test; a
regression needs both p < ``alpha`` and a median slower by more than ``min_effect`` (10%), so
noise does not fail a build and a real slowdown does. Runs are comparable only when profile,
variant set, CPU count, server settings and password hash match.

Exit codes: 0 pass; 1 a rule or comparison failed; 3 the run is invalid (a cell marked
invalid, the load generator saturated, cells missing) or not comparable; 2 usage errors.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import json
import re
import statistics
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from apps.core.registry import VARIANTS

PASS, FAIL, INVALID = 0, 1, 3
DEFAULT_RULES = Path(__file__).resolve().parent.parent / "loadtests" / "gates.toml"

METRICS: dict[str, tuple[str, ...]] = {
    "register": ("count", "failures", "rps", "p50_ms", "p75_ms", "p95_ms", "p99_ms", "max_ms"),
    "verify": ("count", "failures", "rps", "p50_ms", "p75_ms", "p95_ms", "p99_ms", "max_ms"),
    "inp_proxy": ("p75_ms",),
    "time_to_inbox": ("count", "failures", "p50_ms", "p95_ms", "p99_ms"),
    "delivery": ("registered", "delivered", "missing", "duplicates", "verified"),
    "resources": ("peak_threads", "peak_queue_depth"),
    "load_generator": ("cpu_percent",),
    "throughput": ("rps",),
}
VARIABLES = ("smtp_latency_ms", "users", "duration_s")
COMPARED = ("register", "verify", "time_to_inbox")
_RULE = re.compile(r"^\s*(?P<variant>[\w*]+)(?:\{(?P<filters>[^}]*)\})?\."
                   r"(?P<metric>\w+)\.(?P<stat>\w+)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<rhs>.+?)\s*$")
_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


class RuleError(ValueError):
    """A rule or rules file that cannot be used; the message quotes it."""


class GateInputError(ValueError):
    """A run directory that cannot be read."""


@dataclass(frozen=True)
class Rule:
    text: str
    variant: str
    filters: tuple[tuple[str, int], ...]
    metric: str
    stat: str
    op: str
    rhs: str

    def selects(self, cell: dict[str, Any]) -> bool:
        if self.variant not in ("*", cell["variant"]):
            return False
        keys = {"latency": cell["smtp_latency_ms"], "users": cell["users"]}
        return all(keys[name] == value for name, value in self.filters)


@dataclass
class Outcome:
    rule: str
    cell: str
    measured: float | None
    limit: str
    verdict: str  # pass | fail | error | skipped (a variant the run did not include)
    detail: str = ""


@dataclass
class GateResult:
    verdict: str = "pass"  # pass | fail | invalid
    exit_code: int = PASS
    rules: list[Outcome] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    comparison: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code,
                "rules": [asdict(o) for o in self.rules], "invalid": self.invalid,
                "comparison": self.comparison}


# -- rules ---------------------------------------------------------------------------------

def parse_rule(text: str) -> Rule:
    match = _RULE.match(text)
    if not match:
        raise RuleError(f"rule {text!r} does not read as SELECTOR.METRIC.STAT OP EXPRESSION, "
                        "e.g. 'sync.register.p50_ms >= smtp_latency_ms'")
    metric, stat = match["metric"], match["stat"]
    if match["variant"] != "*" and match["variant"] not in VARIANTS:
        raise RuleError(f"rule {text!r}: unknown variant {match['variant']!r}"
                        f"{_suggest(match['variant'], VARIANTS)}")
    if metric not in METRICS:
        raise RuleError(f"rule {text!r}: unknown metric {metric!r}{_suggest(metric, METRICS)}")
    if stat not in METRICS[metric]:
        raise RuleError(f"rule {text!r}: {metric} has no {stat!r}"
                        f"{_suggest(stat, METRICS[metric])}")
    filters = []
    for part in filter(None, (p.strip() for p in (match["filters"] or "").split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in ("latency", "users") or not value.strip().isdigit():
            raise RuleError(f"rule {text!r}: selector filter {part!r} must be latency=MS or "
                            "users=N")
        filters.append((name.strip(), int(value)))
    evaluate(match["rhs"], {v: 1.0 for v in VARIABLES}, text)  # fails now on a bad expression
    return Rule(text.strip(), match["variant"], tuple(filters), metric, stat, match["op"],
                match["rhs"])


def load_rules(path: Path) -> list[Rule]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuleError(f"{path}: no such rules file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: not valid TOML: {exc}") from None
    rules = data.get("rules")
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules) or not rules:
        raise RuleError(f"{path}: 'rules' must be a non-empty list of strings")
    return [parse_rule(r) for r in rules]


def _suggest(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"


def evaluate(expression: str, variables: dict[str, float], rule: str = "") -> float:
    """Arithmetic over numbers and ``variables``: + - * / and parentheses, nothing else."""
    tokens = re.findall(r"\d+\.?\d*|\.\d+|[A-Za-z_]\w*|[-+*/()]|\S", expression)
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
        raise fail(f"unknown name {token!r} (names: {', '.join(VARIABLES)})")

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


def measured_value(cell: dict[str, Any], metric: str, stat: str) -> float | None:
    if metric == "throughput":
        value = cell.get("throughput_rps")
    else:
        value = (cell.get(metric) or {}).get(stat)
    return None if value is None else float(value)


def check_rules(document: dict[str, Any], rules: list[Rule]) -> list[Outcome]:
    outcomes = []
    for rule in rules:
        cells = [c for c in document["cells"] if rule.selects(c)]
        ran = {c["variant"] for c in document["cells"]}
        if not cells and rule.variant != "*" and rule.variant not in ran and not rule.filters:
            outcomes.append(Outcome(rule.text, "-", None, rule.rhs, "skipped",
                                    f"this run has no {rule.variant} cells"))
            continue
        if not cells:
            outcomes.append(Outcome(rule.text, "-", None, rule.rhs, "error",
                                    "no cell of this run matches the selector"))
        for cell in cells:
            limit = evaluate(rule.rhs, {"smtp_latency_ms": cell["smtp_latency_ms"],
                                        "users": cell["users"],
                                        "duration_s": cell["duration_s"]}, rule.text)
            value = measured_value(cell, rule.metric, rule.stat)
            label = cell_label(cell)
            if value is None:
                outcomes.append(Outcome(rule.text, label, None, f"{rule.op} {limit:g}", "error",
                                        f"the run has no {rule.metric}.{rule.stat} here"))
                continue
            ok = _OPS[rule.op](value, limit)
            outcomes.append(Outcome(rule.text, label, value, f"{rule.op} {limit:g}",
                                    "pass" if ok else "fail"))
    return outcomes


def cell_label(cell: dict[str, Any]) -> str:
    return f"{cell['variant']}@{cell['smtp_latency_ms']}ms/{cell['users']}u"


# -- validity and comparability --------------------------------------------------------------

def invalid_reasons(document: dict[str, Any]) -> list[str]:
    reasons = []
    if not document.get("complete", True):
        reasons.append(f"the run did not finish: {document.get('stopped_reason') or 'unknown'}")
    settings = document.get("profile_settings") or {}
    if settings:
        expected = {(v, lat, u) for v in settings["variants"] for lat in settings["latencies_ms"]
                    for u in settings["users"]}
        present = {(c["variant"], c["smtp_latency_ms"], c["users"]) for c in document["cells"]}
        missing = sorted(expected - present)
        if missing:
            shown = ", ".join(f"{v}@{lat}ms/{u}u" for v, lat, u in missing[:5])
            reasons.append(f"{len(missing)} cells missing: {shown}")
    for cell in document["cells"]:
        if not cell.get("valid", True):
            why = "; ".join(cell.get("warnings") or []) or "marked invalid"
            reasons.append(f"{cell_label(cell)} is invalid: {why}")
    return reasons


def comparability_key(document: dict[str, Any]) -> dict[str, Any]:
    env = document.get("environment", {})
    server = env.get("server", {})
    return {
        "profile": document.get("profile"),
        "variants": sorted({c["variant"] for c in document["cells"]}),
        "cpu_count": env.get("cpu_count"),
        "server": {k: server.get(k) for k in ("workers", "threads", "queue_consumer_threads")},
        "password_hash": env.get("password_hash"),
    }


def compare(current: dict[str, Any], current_dir: Path, baseline: dict[str, Any],
            baseline_dir: Path, alpha: float, min_effect: float,
            min_samples: int = 20) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu

    mine, theirs = comparability_key(current), comparability_key(baseline)
    differing = sorted(k for k in mine if mine[k] != theirs[k])
    if differing:
        return {"comparable": False, "differing_keys": {k: {"run": mine[k], "baseline": theirs[k]}
                                                        for k in differing}, "metrics": []}
    base_cells = {cell_label(c): c for c in baseline["cells"]}
    rows = []
    for cell in current["cells"]:
        label = cell_label(cell)
        if label not in base_cells:
            continue
        now = _samples(current_dir / cell["files"])
        before = _samples(baseline_dir / base_cells[label]["files"])
        for metric in COMPARED:
            a, b = now.get(metric, []), before.get(metric, [])
            row: dict[str, Any] = {"cell": label, "metric": metric, "samples": [len(a), len(b)]}
            if len(a) < min_samples or len(b) < min_samples:
                row.update(verdict="skipped", detail=f"fewer than {min_samples} samples")
                rows.append(row)
                continue
            median_now, median_before = statistics.median(a), statistics.median(b)
            change = median_now / median_before - 1 if median_before > 0 else 0.0
            p_value = float(mannwhitneyu(a, b, alternative="greater").pvalue)
            regressed = p_value < alpha and change > min_effect
            row.update(median_ms=[round(median_now, 3), round(median_before, 3)],
                       change=round(change, 4), p_value=p_value,
                       verdict="fail" if regressed else "pass")
            rows.append(row)
    return {"comparable": True, "alpha": alpha, "min_effect": min_effect, "metrics": rows}


def _samples(cell_dir: Path) -> dict[str, list[float]]:
    path = cell_dir / "samples.csv.gz"
    found: dict[str, list[float]] = {}
    if not path.exists():
        return found
    with gzip.open(path, "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["ok"] == "1" and row["warmup"] == "0":
                found.setdefault(row["name"], []).append(float(row["ms"]))
    return found


# -- the whole gate ----------------------------------------------------------------------------

def load_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "results.json"
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateInputError(f"{path}: no results.json in this run directory") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise GateInputError(f"{path}: not valid JSON: {exc}") from None
    if document.get("schema") != "maillab.results/1" or not isinstance(
            document.get("cells"), list):
        raise GateInputError(f"{path}: not a maillab.results/1 document")
    return document


def run_gate(run_dir: Path, rules: list[Rule], baseline_dir: Path | None = None,
             alpha: float = 0.01, min_effect: float = 0.10) -> GateResult:
    document = load_run(run_dir)
    result = GateResult(rules=check_rules(document, rules), invalid=invalid_reasons(document))
    if baseline_dir is not None:
        baseline = load_run(baseline_dir)
        result.comparison = compare(document, run_dir, baseline, baseline_dir, alpha,
                                    min_effect)
        if not result.comparison["comparable"]:
            keys = ", ".join(result.comparison["differing_keys"])
            result.invalid.append(f"not comparable with {baseline_dir}: {keys} differ")
    failed = any(o.verdict in ("fail", "error") for o in result.rules) or any(
        m["verdict"] == "fail" for m in (result.comparison or {}).get("metrics", []))
    if result.invalid:
        result.verdict, result.exit_code = "invalid", INVALID
    elif failed:
        result.verdict, result.exit_code = "fail", FAIL
    (run_dir / "gate.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result
