"""The page's tables as plain values: verdict, seeds' claims, per-cell rows, environment, gate.

Every figure here is read from the run; the only constants are the seeds' own quoted figures
(in :data:`SEED_CLAIMS`), which select the cells that test them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.results import METRICS, CellResult, GateReport, HistoryCheck, RuleOutcome
from loadtests.scenarios import CLEAN, PLAIN, SCENARIOS, SMTP_MODES
from loadtests.target import Documented, built_in
from reports.data import Condition, ReportRun

NA = "–"


@dataclass(frozen=True)
class Value:
    """A table cell: the text shown, the number behind it, whether it is the column's best."""

    text: str
    raw: float | None = None
    best: bool = False


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    pick: Callable[[CellResult], float | None]
    fmt: Callable[[float | None], str]
    lower_is_better: bool = True


@dataclass(frozen=True)
class Claim:
    source: str      # the seed article (its file name without .txt)
    figure: str      # the figure the article states, quoted
    claim: str       # what it claims, in our words
    latency_ms: int  # the SMTP latency that stands for the article's figure


SEED_CLAIMS = (
    Claim("email-verification-pattern", "5 s",
          "Sending the verification email inside POST /register blocks the response for the "
          "SMTP time (the article simulates 5 s); one Thread per email answers at once.", 5000),
    Claim("async-email-sending", "500 ms+",
          "Flask-Mail's mail.send() inside the request blocks it for 500 ms+, depending on the "
          "SMTP server; a Thread with an app context answers at once.", 500),
)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return NA
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_number(value: float | None) -> str:
    """Any measured number: whole numbers without decimals, others like milliseconds."""
    if value is None:
        return NA
    return f"{value:,.0f}" if float(value).is_integer() else fmt_ms(value)


def fmt_count(value: float | None) -> str:
    return NA if value is None else f"{value:,.0f}"


def fmt_rate(value: float | None) -> str:
    return NA if value is None else f"{value:,.1f}"


def _get(metric: str, stat: str | None = None) -> Callable[[CellResult], float | None]:
    """A column's reader for one of the results model's metrics (checked now, not when a page
    is drawn, so a renamed metric fails at import)."""
    if metric not in METRICS or (stat is not None and stat not in METRICS[metric]):
        raise KeyError(f"the results model has no {metric}.{stat}")
    return lambda cell: cell.metric(metric, stat)


def _if_emailing(pick: Callable[[CellResult], float | None]) \
        -> Callable[[CellResult], float | None]:
    return lambda cell: pick(cell) if cell.sends_email else None


VERDICT_COLUMNS = (
    Column("register_p50", "register p50 (ms)", _get("register", "p50_ms"), fmt_ms),
    Column("register_p95", "register p95 (ms)", _get("register", "p95_ms"), fmt_ms),
    Column("inp_p75", "person waits p75 (ms)", lambda cell: cell.wait.p75_ms, fmt_ms),
    Column("inbox_p50", "time to inbox p50 (ms)",
           _if_emailing(_get("time_to_inbox", "p50_ms")), fmt_ms),
    Column("inbox_p95", "time to inbox p95 (ms)",
           _if_emailing(_get("time_to_inbox", "p95_ms")), fmt_ms),
    Column("throughput", "throughput (sign-ups/s)", _get("throughput_rps"), fmt_rate, False),
    Column("lost", "emails lost", _if_emailing(_get("delivery", "missing")), fmt_count),
    Column("threads", "peak threads", _get("resources", "peak_threads"), fmt_count),
    Column("queue", "peak queue depth", _get("resources", "peak_queue_depth"), fmt_count),
)


@dataclass
class VerdictRow:
    variant: str
    cell: str
    values: dict[str, Value] = field(default_factory=dict)
    rating: str | None = None
    lost_in_run: int | None = None
    wait_source: str | None = None  # loadtests.results.Wait.source


def verdict_rows(run: ReportRun) -> list[VerdictRow]:
    """One row per variant from :meth:`Run.verdict_cell`; ``best`` marks each column's best
    value among the variants that send email, and only where they do not all tie."""
    rows: list[VerdictRow] = []
    chosen: dict[str, CellResult] = {}
    for variant in run.variants:
        cell = run.verdict_cell(variant)
        if cell is None:
            rows.append(VerdictRow(variant, "not run"))
            continue
        chosen[variant] = cell
        mine = [c for c in run.cells if c.variant == variant]
        lost = sum(c.delivery.unseen for c in mine if c.sends_email)
        rows.append(VerdictRow(variant, f"{cell.smtp_latency_ms} ms · {cell.load.title}",
                               rating=cell.wait.rating, wait_source=cell.wait.source,
                               lost_in_run=lost if any(c.sends_email for c in mine) else None))
    for column in VERDICT_COLUMNS:
        contenders = {v: column.pick(c) for v, c in chosen.items() if c.sends_email}
        measured = [x for x in contenders.values() if x is not None]
        best = (min if column.lower_is_better else max)(measured) if measured else None
        tie = len(set(measured)) <= 1
        for row in rows:
            cell = chosen.get(row.variant)
            if cell is None:
                row.values[column.key] = Value(NA)
                continue
            raw = column.pick(cell)
            text = column.fmt(raw)
            if raw is None and not cell.sends_email and column.key in (
                    "inbox_p50", "inbox_p95", "lost"):
                text = "sends nothing"
            row.values[column.key] = Value(
                text, raw, best=not tie and raw is not None and raw == best
                and row.variant in contenders)
    return rows


def variant_lines(run: ReportRun) -> list[tuple[str, str]]:
    """(variant, what it is in one line) for the run's variants, from its target (maillab's
    own for runs older than target files); a variant it does not describe is named without
    one."""
    target = run.results.target
    described = target.variants if target is not None else built_in().variants
    return [(name, described[name].summary if name in described else "not described")
            for name in run.variants]


@dataclass(frozen=True)
class ClaimCheck:
    claim: Claim
    sync: CellResult | None
    threaded: CellResult | None
    baseline: CellResult | None
    finding: str


def claim_checks(run: ReportRun) -> list[ClaimCheck]:
    """Each seed claim beside the run's sync, threaded (and baseline) cells at its latency:
    at :attr:`ReportRun.focus_load` when the run has that cell, else at the heaviest load."""
    checks = []
    for claim in SEED_CLAIMS:
        found = {v: _cell_at(run, v, claim.latency_ms) for v in ("sync", "threaded", "baseline")}
        checks.append(ClaimCheck(claim, found["sync"], found["threaded"], found["baseline"],
                                 _finding(claim, found["sync"], found["threaded"])))
    return checks


INP_CLAIM = ("Both seeds: sending in the request gives poor INP; a Thread \"improves INP "
             "significantly\".")


@dataclass(frozen=True)
class InpCheck:
    claim: Claim
    sync: CellResult | None  # the cells with browser figures at the claim's latency
    threaded: CellResult | None
    finding: str


def inp_checks(run: ReportRun) -> list[InpCheck]:
    """The seeds' INP claim at each claim's latency, against what Chromium measured: the
    click's Event Timing (what INP is made of) and click to confirmation painted."""
    checks = []
    for claim in SEED_CLAIMS:
        found = {v: next((c for c in run.cells if c.variant == v and c.browser is not None
                          and c.smtp_latency_ms == claim.latency_ms and c.scenario == CLEAN
                          and c.smtp == PLAIN),
                         None) for v in ("sync", "threaded")}
        checks.append(InpCheck(claim, found["sync"], found["threaded"],
                               _inp_finding(claim.latency_ms, found["sync"], found["threaded"])))
    return checks


def _inp_finding(latency_ms: int, sync: CellResult | None,
                 threaded: CellResult | None) -> str:
    if sync is None or threaded is None or sync.browser is None or threaded.browser is None:
        return (f"Not measured in this run: no browser figures for sync and threaded at "
                f"{latency_ms} ms (maillab bench --browser N, or the browser profile).")
    s, t = sync.browser, threaded.browser
    parts = [f"Chromium's Event Timing for the click, what INP is made of, was p75 "
             f"{fmt_ms(s.event_p75_ms)} ms for sync and {fmt_ms(t.event_p75_ms)} ms for "
             "threaded"]
    if s.event_p75_ms is not None and t.event_p75_ms is not None:
        gap = s.event_p75_ms - t.event_p75_ms
        parts.append(f": sending in the request {'does' if gap > 16 else 'does not'} show in "
                     f"INP ({gap:+.0f} ms at p75)")
    parts.append(f". What the person waits, click to confirmation painted, was p75 "
                 f"{fmt_ms(s.click_to_confirmation_p75_ms)} ms against "
                 f"{fmt_ms(t.click_to_confirmation_p75_ms)} ms.")
    return "".join(parts)


def _cell_at(run: ReportRun, variant: str, latency_ms: int) -> CellResult | None:
    at = [c for c in run.cells if c.variant == variant and c.smtp_latency_ms == latency_ms
          and c.scenario == CLEAN and c.smtp == PLAIN]
    focused = [c for c in at if c.load == run.focus_load]
    return max(focused or at, key=lambda c: c.load, default=None)


def _finding(claim: Claim, sync: CellResult | None, threaded: CellResult | None) -> str:
    lat = claim.latency_ms
    parts = []
    sync_p50 = _get("register", "p50_ms")(sync) if sync else None
    thread_p50 = _get("register", "p50_ms")(threaded) if threaded else None
    if sync_p50 is None:
        parts.append(f"This run has no sync measurement at {lat} ms SMTP latency, so the "
                     "blocking half is not tested.")
    else:
        verb = "holds" if sync_p50 >= lat else "does not hold"
        parts.append(f"Blocking {verb}: sync's median sign-up took {fmt_ms(sync_p50)} ms, "
                     f"{sync_p50 / lat:.2f}× the {lat} ms SMTP latency." if lat else
                     f"sync's median sign-up took {fmt_ms(sync_p50)} ms.")
    if thread_p50 is None:
        parts.append(f"No threaded measurement at {lat} ms, so 'answers at once' is not "
                     "tested.")
    else:
        verb = "holds" if thread_p50 < lat else "does not hold"
        parts.append(f"'Answers at once' {verb}: threaded's median was {fmt_ms(thread_p50)} ms, "
                     f"{'below' if thread_p50 < lat else 'not below'} the SMTP latency.")
    return " ".join(parts)


def cell_rows(run: ReportRun) -> list[dict[str, Any]]:
    """Every cell of the grid in order, run or not; a cell that did not run has ``cell=None``."""
    rows = []
    for cond in run.conditions:
        for variant in run.variants:
            cell = run.results.cell(cond.key(variant))
            if cell is None and not run.in_grid(variant, cond):
                continue
            rows.append({"variant": variant, "latency": cond.latency_ms, "load": cond.load,
                         "scenario": cond.scenario, "smtp": cond.smtp,
                         "cell": cell, "label": cell.label if cell else None,
                         "sends_email": cell.sends_email if cell else None})
    return rows


@dataclass(frozen=True)
class LossCell:
    """One variant's outcome counts in one condition: every measured sign-up in one bucket."""

    cell: CellResult | None
    applies: bool = True  # False: the scenario has nothing to do to this variant
    offered: int | None = None
    dropped: int | None = None
    failed_visibly: int | None = None
    delivered: int | None = None
    lost_silently: int | None = None
    duplicates: int | None = None
    refused: int | None = None
    refused_told: int | None = None
    delivered_anyway: int | None = None
    late: int | None = None
    late_inbox_p50_ms: float | None = None
    faults_injected: int | None = None
    delivery_attempts: int | None = None
    injected_share: float | None = None
    documented: DocumentedCheck | None = None  # what the variant's documentation says here

    @property
    def unseen(self) -> int:
        """What the table colours: :attr:`Delivery.unseen` of an emailing cell."""
        return self.cell.delivery.unseen if self.cell and self.lost_silently is not None else 0


@dataclass(frozen=True)
class DocumentedCheck:
    """A cell's counts held to what its variant's documentation says of the scenario (the
    target file's ``documented``): whether they match, and if not, how they differ."""

    says: str
    source: str | None
    matches: bool
    finding: str


def documented_check(claim: Documented, cell: CellResult) -> DocumentedCheck:
    d = cell.delivery
    differs = []
    if claim.lost == "none" and d.missing:
        differs.append(f"{d.missing} lost silently, where it says none would be")
    if claim.lost == "some" and not d.missing:
        differs.append("none lost silently, where it says some would be (the crash may have "
                       "caught no task running)")
    if claim.duplicates == "none" and d.duplicates:
        differs.append(f"{d.duplicates} duplicates, where it says none")
    if differs:
        return DocumentedCheck(claim.says, claim.source, False,
                               "Does not match the documentation: " + "; ".join(differs) + ".")
    seen = [f"{d.missing} lost silently", f"{d.duplicates} duplicates"]
    return DocumentedCheck(claim.says, claim.source, True,
                           "Matches the documentation (" + ", ".join(seen) + ").")


def _documented(run: ReportRun, variant: str, scenario: str) -> Documented | None:
    target = run.results.target
    described = target.variants if target is not None else built_in().variants
    info = described.get(variant)
    return info.documented.get(scenario) if info is not None else None


@dataclass(frozen=True)
class LossRow:
    condition: Condition
    summary: str
    cells: dict[str, LossCell]


def loss_rows(run: ReportRun) -> list[LossRow]:
    """What each variant loses, condition by condition (a scenario at its latency and load):
    the buckets every measured sign-up lands in, from the cells' delivery and arrivals."""
    rows = []
    for cond in run.conditions:
        cells: dict[str, LossCell] = {}
        for variant in run.variants:
            cell = run.results.cell(cond.key(variant))
            if cell is None:
                known = SCENARIOS.get(cond.scenario)
                cells[variant] = LossCell(None, applies=known is None
                                          or known.applies_to(variant))
                continue
            d, a, f = cell.delivery, cell.arrivals, cell.smtp_faults
            emailing = cell.sends_email
            cells[variant] = LossCell(
                cell, offered=a.offered if a else None, dropped=a.dropped if a else None,
                failed_visibly=d.failed_visibly,
                delivered=d.delivered if emailing else None,
                lost_silently=d.missing if emailing else None,
                duplicates=d.duplicates if emailing else None,
                refused=d.refused if emailing else None, refused_told=d.refused_told,
                delivered_anyway=d.delivered_anyway, late=d.late,
                late_inbox_p50_ms=d.late_inbox_p50_ms,
                faults_injected=f.injected if f and emailing else None,
                delivery_attempts=f.attempts if f and emailing else None,
                injected_share=f.injected_share if f and emailing else None,
                documented=documented_check(claim, cell) if emailing and (
                    claim := _documented(run, variant, cond.scenario)) else None)
        if any(c.cell for c in cells.values()):
            known = SCENARIOS.get(cond.scenario)
            summary = known.summary if known else cond.scenario
            if cond.smtp != PLAIN:
                summary += f" The server asks for {SMTP_MODES.get(cond.smtp, cond.smtp)} first."
            rows.append(LossRow(cond, summary, cells))
    return rows


@dataclass(frozen=True)
class SmtpModeRow:
    """One emailing variant at one condition on plain SMTP and on another mode: what the
    mode's handshake (STARTTLS, AUTH) adds to what the person waits and to time to inbox."""

    plain: CellResult
    other: CellResult

    def delta(self, metric: str, stat: str) -> float | None:
        a, b = self.plain.metric(metric, stat), self.other.metric(metric, stat)
        return None if a is None or b is None else b - a


def smtp_mode_rows(run: ReportRun) -> list[SmtpModeRow]:
    """Every cell on a mode other than plain SMTP, beside its plain twin (same variant,
    latency, load and scenario)."""
    rows = []
    for cell in run.cells:
        if cell.smtp == PLAIN:
            continue
        twin = run.cell(cell.variant, cell.smtp_latency_ms, cell.load, cell.scenario)
        if twin is not None:
            rows.append(SmtpModeRow(twin, cell))
    return rows


@dataclass(frozen=True)
class BrowserRow:
    """One cell's browser probe beside the lab's INP proxy for the load's sign-ups, as
    assumed (one frame) and as calibrated on the run's baseline."""

    cell: CellResult
    proxy_error: float | None  # (the lab's proxy p75 - click to confirmation p75) / the latter
    calibrated_error: float | None  # the same for the calibrated proxy
    reference: bool  # a cell the calibration was measured on: its error is 0 by construction


def _error(estimate: float | None, seen: float | None) -> float | None:
    return (estimate - seen) / seen if seen and estimate is not None else None


def browser_rows(run: ReportRun) -> list[BrowserRow]:
    rows = []
    calibration = run.results.inp_calibration
    reference = set(calibration.reference) if calibration else set()
    for cell in run.cells:
        b = cell.browser
        if b is None:
            continue
        seen = b.click_to_confirmation_p75_ms
        rows.append(BrowserRow(cell, _error(cell.inp_proxy.p75_ms, seen),
                               _error(cell.inp_proxy.calibrated_p75_ms, seen),
                               cell.label in reference))
    return rows


def calibration_line(run: ReportRun) -> str:
    """What the proxy's render allowance is in this run, and where it came from."""
    found = run.results.inp_calibration
    if found is None:
        allowances = sorted({c.inp_proxy.render_allowance_ms for c in run.cells
                             if c.inp_proxy.render_allowance_ms is not None})
        return ("Not calibrated in this run: no baseline cell had browser sign-ups, so the "
                "INP proxy adds its assumed render allowance ("
                + (", ".join(f"{fmt_ms(a)} ms" for a in allowances) or "none recorded")
                + "). In Chromium on a loaded machine the confirmation takes longer than one "
                "frame to paint; the browser profile measures by how much.")
    assumed = f" (it replaces the assumed {fmt_ms(found.assumed_ms)} ms)" \
        if found.assumed_ms is not None else ""
    return (f"Calibrated in this run: the browser adds {fmt_ms(found.allowance_ms)} ms to the "
            f"load's response time before the confirmation is painted{assumed}, measured on "
            f"{', '.join(found.reference)} ({found.signups} browser sign-ups: click to "
            "confirmation p75 minus the load's response p75). Baseline sends no email, so the "
            "errors on the other variants below are measured, not fitted.")


def warnings(run: ReportRun) -> list[tuple[str, str]]:
    """(where, what) for every warning the runner recorded, invalid cells and missing cells."""
    found = []
    for cell in run.cells:
        for text in cell.warnings:
            found.append((cell.label, text))
        if not cell.valid and not cell.warnings:
            found.append((cell.label, "marked invalid"))
    for variant, cond in run.missing:
        found.append((cond.key(variant).label,
                      "this cell of the profile did not run"))
    return found


def environment(run: ReportRun) -> list[tuple[str, str]]:
    results = run.results
    env = results.environment
    settings = results.profile_settings or {}
    allowances = sorted({c.inp_proxy.render_allowance_ms for c in results.cells
                         if c.inp_proxy.render_allowance_ms is not None})
    pairs = [
        ("run", results.run_id),
        ("profile", results.profile + (f" ({settings['source']})" if settings.get("source")
                                       else "")),
        ("started / finished",
         f"{results.started_at} / {results.finished_at or 'not finished'}"),
        ("complete", str(results.complete).lower()),
        ("machine", f"{env.cpu_model or 'CPU model not recorded'}, "
                    f"{env.cpu_count} CPUs; {env.platform}"),
        ("python", env.python + (f" ({env.executable})" if env.executable else "")),
        ("commit", env.git_sha or "not recorded"),
        ("packages", ", ".join(f"{k} {v or 'not installed'}"
                               for k, v in sorted(env.packages.items()))),
        ("server", ", ".join(f"{k.replace('_', ' ')} {v}"
                             for k, v in asdict(env.server).items() if v is not None)),
        ("password hash", env.password_hash),
    ]
    pairs.extend((name, what) for name, what in env.services.items())
    if settings:
        pairs.append(("profile settings", ", ".join(
            f"{k.replace('_', ' ')} {_plain(v)}" for k, v in settings.items() if k != "source")))
    if allowances:
        calibration = results.inp_calibration
        pairs.append(("INP proxy render allowance",
                      ", ".join(f"{fmt_ms(a)} ms" for a in allowances)
                      + (f" assumed; {fmt_ms(calibration.allowance_ms)} ms measured in "
                         "Chromium (calibrated)" if calibration else " assumed")))
    return pairs


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def headlines(run: ReportRun, rows: list[VerdictRow]) -> list[str]:
    """Sentences that answer the page's questions from the verdict rows and all cells: under
    what load, how fast, how soon in the inbox, how much was lost."""
    lines = []
    load = _load_sentence(run)
    if load:
        lines.append(load)
    emailing = [r for r in rows if r.lost_in_run is not None and r.values]
    if emailing:
        good = [r.variant for r in emailing if r.rating == "good"]
        fastest = min(emailing, key=lambda r: _or_inf(r.values["register_p95"].raw))
        lines.append(
            f"Sign-up stays fast (what the person waits, rated good at p75 on INP's "
            f"thresholds) with: {', '.join(good) or 'none'}; "
            f"the lowest register p95 is {fastest.variant}'s "
            f"({fastest.values['register_p95'].text} ms), in the cells of the table below.")
        lines.append("Time to inbox, median: " + "; ".join(
            f"{r.variant} {r.values['inbox_p50'].text} ms" for r in emailing) + ".")
    trade_off = _speed_beside_loss(run, rows)
    if trade_off:
        lines.append(trade_off)
    lost = sum(r.lost_in_run or 0 for r in rows)
    emailing_cells = [c for c in run.cells if c.sends_email]
    if not emailing_cells:
        lines.append("No cell sent email, so delivery was not tested.")
    elif lost:
        where = [f"{c.label}: {c.delivery.unseen}" for c in emailing_cells if c.delivery.unseen]
        lines.append(f"{lost} emails the person was told to expect never came, lost "
                     f"silently or refused unseen ({'; '.join(where)}).")
    else:
        dups = sum(c.delivery.duplicates for c in emailing_cells)
        sent = sum(c.delivery.registered for c in emailing_cells)
        lines.append(f"No email was lost: all {sent:,} accepted registrations in "
                     f"{len(emailing_cells)} cells got their email"
                     + (f" ({dups} duplicates)." if dups else ", none twice."))
    return lines


def _speed_beside_loss(run: ReportRun, rows: list[VerdictRow]) -> str | None:
    """The verdict never rests on speed alone: each emailing variant's speed rating beside
    what it lost silently over every scenario the run put it through."""
    parts, lossless_fast = [], []
    for row in rows:
        mine = [c for c in run.cells if c.variant == row.variant and c.sends_email]
        if not mine or row.rating is None:
            continue
        where = Counter[str]()
        for cell in mine:
            where[cell.scenario] += cell.delivery.unseen
        unseen = sum(where.values())
        shown = sum(c.delivery.failed_visibly or 0 for c in mine if c.scenario != CLEAN)
        scenarios = sorted({c.scenario for c in mine})
        speed = f"{row.wait_source}: {row.rating}"
        if unseen:
            detail = ", ".join(f"{name} {n}" for name, n in where.most_common() if n)
            parts.append(f"{row.variant} ({speed}) lost {unseen} silently ({detail})")
        else:
            parts.append(f"{row.variant} ({speed}) lost none silently in "
                         f"{len(scenarios)} scenario{'s' if len(scenarios) != 1 else ''}"
                         + (f", showing {shown} failures to the person instead"
                            if shown else ""))
            if row.rating == "good":
                lossless_fast.append(row.variant)
    if not parts:
        return None
    if all(c.scenario == CLEAN for c in run.cells):
        ending = ("This run put nothing in the way (only the clean scenario), so it says "
                  "nothing about what a variant loses when SMTP or a process fails.")
    elif lossless_fast:
        ending = f"Fast and losing nothing silently in this run: {', '.join(lossless_fast)}."
    else:
        ending = "No variant was both fast and free of silent loss in this run."
    return "Speed beside loss: " + "; ".join(parts) + ". " + ending


def _load_sentence(run: ReportRun) -> str | None:
    """How the variants were loaded: the same schedule for all (open loop), or not."""
    if not run.cells:
        return None
    if all(c.mode == "open" for c in run.cells):
        rates = ", ".join(f"{r:g}" for r in run.rates)
        settings = run.results.profile_settings or {}
        how = settings.get("arrivals", "constant")
        return (f"Every variant was offered the same load, {rates} sign-ups/s on a {how} "
                "schedule (open loop); response times count from when each sign-up should "
                "have started.")
    return ("Closed loop: each variant was loaded by users signing up again as soon as they "
            "were done, so a faster variant was given more work; compare latencies with care.")


def _or_inf(value: float | None) -> float:
    return float("inf") if value is None else value


def gate_rules(gate: GateReport) -> list[RuleOutcome]:
    """gate.json's rule outcomes, failures and errors first, otherwise in file order."""
    return sorted(gate.rules, key=lambda r: r.verdict == "pass")


def history_rows(gate: GateReport | None) -> list[HistoryCheck]:
    """gate.json's history checks that were judged, failures first, then by q value."""
    if gate is None or gate.history is None:
        return []
    judged = [c for c in gate.history.checks if c.q_value is not None]
    return sorted(judged, key=lambda c: (c.verdict != "fail", c.q_value))
