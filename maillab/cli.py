"""The ``maillab`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from apps.core.config import ConfigError
from apps.core.registry import VARIANTS, UnknownVariantError
from fakesmtp.bench import smtp_bench
from fakesmtp.cli import smtp
from loadtests.results import GATE_FILE, RESULTS_FILE, WAIT_MARKS, RunError
from loadtests.scenarios import PLAIN
from maillab.ports import PortInUse, require_free
from reports.cli import report

if TYPE_CHECKING:
    from loadtests.results import Results


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """maillab: measure what sending the verification email costs a Flask sign-up."""


def _build_app(variant: str, config: dict[str, Any] | None = None) -> Any:
    from apps.core import create_app

    try:
        return create_app(variant, config)
    except (ConfigError, UnknownVariantError) as exc:
        raise click.ClickException(str(exc)) from None


def _check_port(host: str, port: int, option: str) -> None:
    try:
        require_free(option, port, host)
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.argument("variant", type=click.Choice(list(VARIANTS)))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 1024),
              help="Threads per worker (gthread).")
@click.option("--timeout", default=60, show_default=True, type=click.IntRange(1, 3600),
              help="gunicorn worker timeout, seconds.")
def serve(variant: str, host: str, port: int, workers: int, threads: int, timeout: int) -> None:
    """Serve the sign-up flow with VARIANT's way of sending email, under gunicorn."""
    from maillab.server import GunicornServer, gunicorn_options

    _check_port(host, port, "--port")
    url = f"http://{host}:{port}"
    # Links in emails point here unless MAILLAB_PUBLIC_URL says otherwise (never at the
    # request's Host header).
    config = {"PUBLIC_URL": os.environ.get("MAILLAB_PUBLIC_URL") or url}
    # Build once here: a bad setting fails now with one line, and the tables and the
    # instance secret exist before several workers race to create them.
    app = _build_app(variant, config)
    app.extensions["maillab.db"].engine.dispose()

    def on_ready(_arbiter: Any) -> None:
        click.echo(f"maillab {variant} listening on {url} "
                   f"({workers} workers x {threads} threads, database "
                   f"{app.config['DATABASE_URL']}, SMTP {app.config['SMTP_HOST']}:"
                   f"{app.config['SMTP_PORT']})", err=False)
        sys.stdout.flush()

    GunicornServer(variant, gunicorn_options(host, port, workers, threads, timeout,
                                             on_ready), config).run()


@cli.command()
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="Consumer threads [default: MAILLAB_WORKER_THREADS, 4].")
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535),
              help="Serve the consumer's Prometheus metrics on 127.0.0.1:PORT (0: off).")
@click.option("-v", "--verbose", is_flag=True, help="Log every task.")
def worker(threads: int | None, metrics_port: int, verbose: bool) -> None:
    """Consume the queued variant's email tasks (Huey)."""
    from apps.queued.queue import shown
    from apps.queued.worker import build_consumer

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port:
        _check_port("127.0.0.1", metrics_port, "--metrics-port")
    app = _build_app("queued")
    try:
        consumer, stats = build_consumer(app, threads)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    cfg = app.config
    _serve_metrics(metrics_port, stats)
    click.echo(f"maillab worker consuming {shown(cfg['QUEUE_URL'])} with {consumer.workers} "
               "threads "
               f"(poll every {cfg['WORKER_POLL_DELAY'] * 1000:g}.."
               f"{cfg['WORKER_MAX_POLL_DELAY'] * 1000:g} ms when idle), SMTP "
               f"{cfg['SMTP_HOST']}:{cfg['SMTP_PORT']}"
               + (f", metrics on http://127.0.0.1:{metrics_port}/metrics" if metrics_port else ""))
    sys.stdout.flush()
    consumer.run()
    _say_stopped("worker", stats.stats(), "the queue")


@cli.command("celery-worker")
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="Threads running tasks [default: MAILLAB_WORKER_THREADS, 4].")
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535),
              help="Serve the worker's Prometheus metrics on 127.0.0.1:PORT (0: off).")
@click.option("-v", "--verbose", is_flag=True, help="Log every task.")
def celery_worker(threads: int | None, metrics_port: int, verbose: bool) -> None:
    """Consume the celery variant's email tasks (a Celery worker, threads pool).

    SIGINT or SIGTERM is Celery's warm shutdown: running tasks finish, nothing more is taken."""
    from apps.celery.worker import build_worker
    from apps.queued.queue import shown

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port:
        _check_port("127.0.0.1", metrics_port, "--metrics-port")
    app = _build_app("celery")
    cfg = app.config
    count = threads or cfg["WORKER_THREADS"]
    timeout = cfg["CELERY_VISIBILITY_TIMEOUT"]

    def ready() -> None:
        click.echo(f"maillab celery-worker consuming {shown(cfg['CELERY_BROKER_URL'])} with "
                   f"{count} threads, {cfg['CELERY_ACKS']} acks"
                   + (f", visibility timeout {timeout:g} s" if timeout else "")
                   + f", SMTP {cfg['SMTP_HOST']}:{cfg['SMTP_PORT']}"
                   + (f", metrics on http://127.0.0.1:{metrics_port}/metrics"
                      if metrics_port else ""))
        sys.stdout.flush()

    try:
        worker, stats = build_worker(app, count, ready, "INFO" if verbose else "WARNING")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _serve_metrics(metrics_port, stats)
    try:
        worker.start()  # Celery ends a warm shutdown with SystemExit
    finally:
        _say_stopped("celery-worker", stats.stats(), "the broker")


@cli.command()
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="Sending threads [default: MAILLAB_WORKER_THREADS, 4].")
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535),
              help="Serve the relay's Prometheus metrics on 127.0.0.1:PORT (0: off).")
@click.option("--name", default=None,
              help="A stable name for this relay (unique among those running), such as the "
                   "process manager's unit name: started again under it, the relay takes back "
                   "at once the rows its crashed run held, instead of waiting out their lease "
                   "[default: host:pid, which never takes anything back].")
@click.option("-v", "--verbose", is_flag=True, help="Log every email.")
def relay(threads: int | None, metrics_port: int, name: str | None, verbose: bool) -> None:
    """Deliver the outbox variant's emails (rows written with the account), at least once.

    SIGINT or SIGTERM stops it gracefully: it claims nothing more and finishes what it holds."""
    import signal

    from sqlalchemy.engine import make_url

    from apps.outbox.relay import Relay

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port:
        _check_port("127.0.0.1", metrics_port, "--metrics-port")
    app = _build_app("outbox")
    sender = Relay(app, threads, name)
    taken_back = sender.take_back() if name else 0
    cfg = app.config
    _serve_metrics(metrics_port, sender)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signo, _frame: sender.stop())
    store = make_url(cfg['DATABASE_URL']).render_as_string(hide_password=True)
    click.echo(f"maillab relay consuming the outbox in {store} with "
               f"{sender.threads} threads (poll every {sender.poll_delay * 1000:g} ms when "
               f"idle, lease {sender.lease:g} s), SMTP {cfg['SMTP_HOST']}:{cfg['SMTP_PORT']}"
               + (f", {taken_back} rows taken back from its last run" if taken_back else "")
               + (f", metrics on http://127.0.0.1:{metrics_port}/metrics" if metrics_port else ""))
    sys.stdout.flush()
    sender.run()
    _say_stopped("relay", sender.stats(), "the outbox")


def _say_stopped(command: str, s: dict[str, float], where: str) -> None:
    """A consumer's last line: what it did, and what it left (queue_depth is absent when the
    queue or store could not be reached, say Redis went away)."""
    left = f"{s['queue_depth']:g}" if "queue_depth" in s else "unknown (unreachable)"
    click.echo(f"maillab {command} stopped: {s['emails_delivered_total']:g} delivered, "
               f"{s['emails_failed_total']:g} failed, {s['emails_retried_total']:g} retries, "
               f"{left} left in {where}")


def _serve_metrics(port: int, source: Any) -> None:
    """A consumer's counters (``source.stats()``) on 127.0.0.1:PORT/metrics; 0: none."""
    if not port:
        return
    from prometheus_client import start_http_server

    from apps.core.metrics import registry_for

    start_http_server(port, addr="127.0.0.1", registry=registry_for(source))


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers",
                                 ctx, param) from None


def _rate_list(ctx: click.Context, param: click.Parameter,
               value: str | None) -> list[float] | None:
    if value is None:
        return None
    from loadtests.arrivals import MAX_RATE, valid_rate

    rates = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            rate = float(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number of sign-ups per second",
                                     ctx, param) from None
        if not valid_rate(rate):
            raise click.BadParameter(f"{part!r}: a rate must be sign-ups per second above 0 "
                                     f"and at most {MAX_RATE}", ctx, param)
        rates.append(rate)
    if not rates:
        raise click.BadParameter("give at least one rate, e.g. 10,20", ctx, param)
    return rates


def _add_to_history(console: Any, folder: Path | None, results: Results) -> None:
    """Append the finished run to the history; a history that cannot take it is said, and the
    run stands."""
    from loadtests.history import DEFAULT_DIR, HistoryError, append, entry_for

    where = folder or DEFAULT_DIR
    try:
        path = append(where, entry_for(results))
    except (HistoryError, OSError, ValueError) as exc:
        console.print(f"[yellow]not added to the history:[/] {exc}")
        return
    console.print(f"history: {path}")


def _check_running_app(source: str, base_url: str, smtp_port: int) -> None:
    """An app that runs elsewhere (app.base_url) is loaded only on this machine (the lab's
    load and fault tests target loopback addresses only), and its mail must already point at
    the fakesmtp the run starts, so the port is the user's to give."""
    from maillab.probe import check_url

    try:
        check_url(base_url)
    except ValueError as exc:
        raise click.ClickException(f"{source}: app.base_url: {exc}") from None
    if not smtp_port:
        raise click.ClickException(
            f"{source}: app.base_url: the app runs elsewhere, so its SMTP settings already "
            "point somewhere: give that port with --smtp-port (fakesmtp listens there, on "
            "127.0.0.1)")


def _check_server_url(flag: str, url: str | None, schemes: tuple[str, ...]) -> None:
    """A server URL flag's scheme, checked before anything starts."""
    if url is None:
        return
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in schemes:
        raise click.BadParameter(f"must be a {' or '.join(s + '://' for s in schemes)} URL, "
                                 f"got {url.split('@')[-1]!r}", param_hint=flag)


@cli.command()
@click.option("--profile", "profile_name", default="quick", show_default=True,
              help="A profile in loadtests/profiles (smoke, quick, full) or a .toml path.")
@click.option("--target", "target_path", type=click.Path(path_type=Path), default=None,
              help="A target file (maillab.toml, a pyproject.toml with [tool.maillab], or "
                   "their folder): measure that app's sign-up (default: maillab's own "
                   "variants, apps/target.toml).")
@click.option("--variants", default=None, help="Comma-separated, e.g. sync,threaded (default: "
                                               "the profile's, or every variant of --target).")
@click.option("--latencies", callback=_int_list, default=None,
              help="SMTP latencies in ms, comma-separated, e.g. 0,500,5000.")
@click.option("--rates", callback=_rate_list, default=None,
              help="Open loop: sign-ups per second, comma-separated, e.g. 10,20.")
@click.option("--users", callback=_int_list, default=None,
              help="Closed loop: locust users, comma-separated, e.g. 1,10 (implies --mode "
                   "closed).")
@click.option("--mode", type=click.Choice(["open", "closed"]), default=None,
              help="open: arrivals on a schedule, the same for every variant; closed: users "
                   "with no think time [default: the profile's].")
@click.option("--capacity", "capacity", is_flag=True, default=None,
              help="Step each variant up the rates until the SLO breaks; report the knee.")
@click.option("--duration", type=click.FloatRange(1, 3600), default=None,
              help="Measured seconds per cell.")
@click.option("--warmup", type=click.FloatRange(0, 600), default=None,
              help="Warm-up seconds per cell, left out of the stats.")
@click.option("--browser", "browser_signups", type=click.IntRange(0, 1000), default=None,
              help="Sign-ups per cell in real headless Chromium during the load (what the "
                   "person sees) [default: the profile's browser_signups].")
@click.option("--load-processes", type=click.IntRange(1, 16), default=None,
              help="locust processes: above 1, a master and this many workers, each taking "
                   "its share of the schedule [default: the profile's load_processes].")
@click.option("--consumers", type=click.IntRange(1, 16), default=None,
              help="queued's workers or outbox's relays, each a process [default: the "
                   "profile's consumers].")
@click.option("--database-url", default=None, metavar="URL",
              help="A PostgreSQL server (postgresql+psycopg://user@host/db) on which the run "
                   "makes a fresh database per cell [default: SQLite, or with the profile's "
                   "database = \"postgresql\", $MAILLAB_POSTGRES_URL or the local server].")
@click.option("--queue-url", default=None, metavar="URL",
              help="A Redis server (redis://host:port/db) for queued's Huey [default: SQLite, "
                   "or with the profile's queue = \"redis\", a private redis-server].")
@click.option("--broker-url", default=None, metavar="URL",
              help="A RabbitMQ (amqp://) or Redis (redis://host:port/db) server for the "
                   "celery variants on that broker [default: a private one for the run, which "
                   "broker-restart can restart; a given one it cannot].")
@click.option("--smtp", "smtp_modes", default=None, metavar="MODES",
              help="fakesmtp's modes, comma-separated: plain, starttls+auth (a provider's "
                   "port 587: STARTTLS and AUTH before every message) [default: the "
                   "profile's smtp].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory [default: results/<run-id>].")
@click.option("--smtp-port", type=click.IntRange(0, 65535), default=0,
              help="fakesmtp's SMTP port (0: a free one).")
@click.option("--smtp-api-port", type=click.IntRange(0, 65535), default=0,
              help="fakesmtp's HTTP API port (0: a free one).")
@click.option("--gate", "gate_after", is_flag=True,
              help="Run `maillab gate` on the results and exit with its code.")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Rules for --gate [default: the profile's gate_rules, else "
                                 "loadtests/gates.toml].")
@click.option("--baseline", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="A stored run for --gate to compare with.")
@click.option("--history", "history_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Append the finished run to this history [default: "
                                 "results/history]; with --gate, judge it against it too.")
@click.option("--no-history", is_flag=True, help="Do not append the run to the history.")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="With --gate: also write its verdict as JUnit XML.")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="With --gate: also write it as Markdown (and to "
                                 "$GITHUB_STEP_SUMMARY when set).")
def bench(profile_name: str, target_path: Path | None, variants: str | None,
          latencies: list[int] | None,
          rates: list[float] | None, users: list[int] | None, mode: str | None,
          capacity: bool | None, duration: float | None, warmup: float | None,
          browser_signups: int | None, load_processes: int | None, consumers: int | None,
          database_url: str | None, queue_url: str | None, broker_url: str | None,
          smtp_modes: str | None,
          out: Path | None, smtp_port: int, smtp_api_port: int,
          gate_after: bool, rules_file: Path | None, baseline: Path | None,
          history_dir: Path | None, no_history: bool,
          junit_file: Path | None, summary_file: Path | None) -> None:
    """Measure every variant under the profile's SMTP latencies and loads; write results.json."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from loadtests.cellfiles import CellKey
    from loadtests.profiles import ProfileError, load_profile
    from loadtests.scenarios import scenario as scenario_of
    from loadtests.target import TargetError, activate, load_target
    from maillab.bench import Bench, BenchError, Stopped, new_run_dir

    results_root = Path("results")
    if rates and users:
        raise click.UsageError("--rates (open loop) and --users (closed loop) exclude each "
                               "other")
    if (junit_file or summary_file) and not gate_after:
        raise click.UsageError("--junit and --summary write the gate's verdict: add --gate")
    if mode is None and (rates or users):
        mode = "open" if rates else "closed"
    try:
        activate(None)
        base = load_profile(profile_name)  # its variants are maillab's own
        target = load_target(target_path) if target_path else None
        asked = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
        if target is not None and target.app.base_url is not None:
            _check_running_app(target.source, target.app.base_url, smtp_port)
        if target is not None:
            activate(target.variants)  # the profile's grid is of the target's variants
            asked = asked or list(target.variants)
        skipped = {}
        if target is not None and target.app.base_url is not None:
            # The lab cannot stop or signal an app it did not start (kept in skipped).
            skipped = {s: f"not run: the app at {target.app.base_url} runs elsewhere, so the "
                       "lab cannot stop or signal it" for s in base.scenarios
                       if scenario_of(s).kill is not None}
        profile = base.with_overrides(
            variants=asked,
            scenarios=[s for s in base.scenarios if s not in skipped] if skipped else None,
            latencies_ms=latencies, rates=rates, users=users, mode=mode, capacity=capacity,
            duration_s=duration, warmup_s=warmup, browser_signups=browser_signups,
            load_processes=load_processes, consumers=consumers,
            database="postgresql" if database_url else None,
            queue="redis" if queue_url else None,
            smtp=[m.strip() for m in smtp_modes.split(",")] if smtp_modes else None)
        _check_server_url("--database-url", database_url, ("postgresql",))
        _check_server_url("--queue-url", queue_url, ("redis", "rediss", "unix"))
        _check_server_url("--broker-url", broker_url, ("amqp", "pyamqp", "redis", "rediss"))
        require_free("--smtp-port", smtp_port)
        require_free("--smtp-api-port", smtp_api_port)
        run_dir = new_run_dir(results_root, profile, out)
    except (ProfileError, BenchError, PortInUse, TargetError) as exc:
        raise click.ClickException(str(exc)) from None
    console = Console(width=None if sys.stdout.isatty() else 160)
    cells = profile.cells()
    load = (f"open loop, {profile.arrivals} arrivals, the same rate for every variant, "
            f"{profile.min_signups}+ measured sign-ups" if profile.open_loop
            else f"closed loop, {profile.duration_s:g} s measured")
    whose = (f"target {target.name} ({target_path}: {', '.join(profile.variants)}), "
             if target is not None else "")
    if target is None or target.built_in:
        sizing = (f"gunicorn {profile.workers}x{profile.threads} gthread, queue consumer "
                  f"{profile.worker_threads} threads x {profile.consumers}, ")
        stores = (f"{profile.database} database, {profile.queue} queue, ")
        hashing = f", passwords hashed with {profile.password_hash} (cheap on purpose)"
    else:  # what the lab fills in: the target's own file says how it uses them
        sizing = (f"${{workers}} {profile.workers}, ${{threads}} {profile.threads}, "
                  f"${{worker_threads}} {profile.worker_threads}, ")
        stores, hashing = f"{profile.database} ${{database_url}}, ", ""
    console.print(f"maillab bench: {whose}profile {profile.name} ({len(cells)} cells, {load}, "
                  f"{profile.warmup_s:g} s warm-up each), {sizing}"
                  f"{profile.load_processes} load process"
                  f"{'es' if profile.load_processes > 1 else ''}, {stores}"
                  f"{' and '.join(profile.smtp)} SMTP{hashing}, results in {run_dir}")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                        console=console, transient=False)
    task = progress.add_task("starting", total=len(cells))

    def on_cell(index: int, key: CellKey) -> None:
        progress.update(task, completed=index, description=key.title)

    def on_stage(text: str) -> None:
        progress.update(task, description=text)

    runner = Bench(profile, run_dir, results_root, smtp_port, smtp_api_port, on_cell, on_stage,
                   database_url=database_url, queue_url=queue_url, broker_url=broker_url,
                   on_note=lambda text: progress.console.print(f"[yellow]{text}"),
                   target=target, skipped=skipped)
    for what, why in runner.results.skipped.items():
        console.print(f"[yellow]{what}:[/] {why}")
    kept = f"finished cells kept in {run_dir / RESULTS_FILE}"
    try:
        with progress:
            results = runner.run()
            progress.update(task, completed=len(cells), description="done")
    except Stopped as stop:
        console.print(f"[yellow]stopped by {stop}: every child process stopped; "
                      f"{len(runner.results.cells)} {kept} (maillab report {run_dir} draws "
                      "them)")
        sys.exit(130)
    except BenchError as exc:
        raise click.ClickException(f"{exc} ({len(runner.results.cells)} {kept})") from None
    _print_summary(console, results)
    console.print(f"results: {run_dir / RESULTS_FILE}")
    if not no_history:
        _add_to_history(console, history_dir, results)
    # The gate runs first so that its verdict (gate.json) is in the report; a history named
    # on the command line is judged against too.
    code = (_gate(run_dir, rules_file, baseline, junit_file=junit_file,
                  summary_file=summary_file,
                  history_dir=None if no_history else history_dir) if gate_after else 0)
    from loadtests.history import DEFAULT_DIR, HistoryError
    from reports import build_report

    try:
        shown = None if no_history else (history_dir or DEFAULT_DIR)
        console.print(f"report: {build_report(run_dir, shown)}")
    except (RunError, HistoryError) as exc:
        console.print(f"[red]report not written:[/] {exc}")
        code = code or 1
    sys.exit(code)


@cli.command()
@click.option("--runs", type=click.IntRange(2, 500), default=20, show_default=True,
              help="How many times to run the same build.")
@click.option("--profile", "profile_name", default="smoke", show_default=True,
              help="The profile each run measures (a name in loadtests/profiles or a file).")
@click.option("--target", "target_path", type=click.Path(path_type=Path), default=None,
              help="Calibrate on this target's sign-up (a target file or its folder).")
@click.option("--bench-args", default="", metavar="ARGS",
              help="More flags for every run's bench, e.g. '--variants sync,threaded'.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The calibration folder [default: results/calibrate-<time>].")
@click.option("--judge", "judge_dir", type=click.Path(file_okay=False, exists=True,
                                                       path_type=Path), default=None,
              help="Judge the runs of this calibration folder again (runs added to it "
                   "later too), running nothing.")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Rules TOML [default: each run's own, as the gate's].")
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True,
              help="The history check's false discovery rate.")
@click.option("--min-effect", type=click.FloatRange(0, 10), default=0.10, show_default=True,
              help="The history check's smallest slowdown that fails.")
def calibrate(runs: int, profile_name: str, target_path: Path | None, bench_args: str,
              out: Path | None, judge_dir: Path | None, rules_file: Path | None,
              alpha: float, min_effect: float) -> None:
    """Run the same build RUNS times and count the gate's false alarms on this machine: the
    rules' and the history check's (each run judged against the runs before it)."""
    import shlex

    from rich.console import Console

    from loadtests.profiles import ProfileError, load_profile
    from loadtests.target import TargetError, load_target
    from maillab import calibrate as cal
    from maillab.gate import RuleError, load_rules

    console = Console(width=None if sys.stdout.isatty() else 160)

    def said(verdict: cal.RunVerdict) -> None:
        wrong = [*verdict.invalid, *verdict.rules_failed, *verdict.history_failed]
        history = (f"history {len(verdict.history_failed)} of {verdict.history_judged} checks "
                   f"failed" if verdict.history_judged else
                   f"history: {verdict.history_runs} earlier runs, not judged yet")
        console.print(f"{Path(verdict.run_dir).name} ({verdict.run_id}): rules "
                      f"{len(verdict.rules_failed)} of {verdict.rules_checked} failed, "
                      f"{history}" + ("".join(f"\n  [red]{w}[/]" for w in wrong)))

    try:
        rules = load_rules(rules_file) if rules_file else None
        if judge_dir is not None:
            found = cal.judge_folder(judge_dir, rules, alpha, min_effect, said)
            folder = judge_dir
        else:
            extra = shlex.split(bench_args)
            taken = {"--out", "--history", "--no-history", "--profile", "--target", "--gate"}
            clash = [a.split("=", 1)[0] for a in extra if a.split("=", 1)[0] in taken]
            if clash:
                raise click.BadParameter(f"{clash[0]} is set by calibrate itself",
                                         param_hint="--bench-args")
            profile = load_profile(profile_name)
            target_name = load_target(target_path).name if target_path is not None \
                else "maillab"
            folder = out or Path("results") / time.strftime("calibrate-%Y%m%d-%H%M%S")
            if folder.exists() and any(folder.iterdir()):
                raise click.BadParameter(f"{folder} exists and is not empty",
                                         param_hint="--out")
            (folder / cal.RUNS).mkdir(parents=True)
            found = _calibrate(console, folder, runs, profile.name, profile_name, target_path,
                               target_name, extra, rules, alpha, min_effect, said)
    except (ProfileError, TargetError, RuleError, RunError, cal.CalibrationError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in cal.summary(found):
        console.print(line)
    console.print(f"calibration: {cal.write(folder, found)}")


def _calibrate(console: Any, folder: Path, runs: int, name: str, profile: str,
               target_path: Path | None, target_name: str, extra: list[str], rules: Any,
               alpha: float, min_effect: float, said: Any) -> Any:
    from loadtests.history import read_history
    from maillab import calibrate as cal

    found = cal.Calibration(folder=str(folder), profile=name,
                            target=target_name, alpha=alpha,
                            min_effect=min_effect)
    started = time.monotonic()
    for index in range(1, runs + 1):
        run_dir = folder / cal.RUNS / f"{index:03d}"
        took = time.monotonic() - started
        left = f", about {took / (index - 1) * (runs - index + 1) / 60:.0f} min left" \
            if index > 1 else ""
        console.print(f"run {index} of {runs}{left} (its output: {run_dir}.log)")
        try:
            cal.run_bench(cal.bench_command(profile, run_dir, folder / cal.HISTORY,
                                            target_path, extra), Path(f"{run_dir}.log"))
        except KeyboardInterrupt:
            console.print(f"[yellow]stopped after {len(found.runs)} runs: the bench stopped "
                          "every process it started")
            cal.write(folder, found)
            sys.exit(130)
        run_id = json.loads((run_dir / RESULTS_FILE).read_text())["run_id"]
        earlier = cal.earlier_than(read_history(folder / cal.HISTORY), run_id)
        verdict = cal.judge(run_dir, earlier, rules, alpha, min_effect)
        found.runs.append(verdict)
        said(verdict)
        cal.write(folder, found)  # what is done survives a stop
    return found


@cli.command()
@click.option("--smtp-port", type=click.IntRange(1, 65535), default=8025, show_default=True)
@click.option("--smtp-api-port", type=click.IntRange(1, 65535), default=8026, show_default=True)
@click.option("--web-port", type=click.IntRange(1, 65535), default=8089, show_default=True,
              help="locust's web UI.")
@click.option("--inbox-deadline", type=click.FloatRange(1, 600), default=10.0,
              show_default=True, help="Seconds a sign-up waits for its email before the Lab "
                                      "tab counts it lost.")
def ui(smtp_port: int, smtp_api_port: int, web_port: int, inbox_deadline: float) -> None:
    """fakesmtp, every variant on its own port, and locust's web UI with the Lab tab, until
    Ctrl-C."""
    from maillab.processes import Stopped
    from maillab.ui import UIError, run_ui

    run_dir = Path("results") / time.strftime("ui-%Y%m%d-%H%M%S")
    try:
        run_ui(run_dir, smtp_port, smtp_api_port, web_port, click.echo,
               locust_args=["--inbox-deadline", f"{inbox_deadline:g}"])
    except UIError as exc:
        raise click.ClickException(str(exc)) from None
    except (Stopped, KeyboardInterrupt):
        click.echo("maillab ui stopped; every process it started is stopped")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Rules TOML [default: the profile's gate_rules, else "
                                 "loadtests/gates.toml].")
@click.option("--baseline", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="A stored run to compare with, sample by sample.")
@click.option("--alpha", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True,
              help="Significance level of the one-sided Mann-Whitney U test.")
@click.option("--min-effect", type=click.FloatRange(0, 10), default=0.10, show_default=True,
              help="Smallest median slowdown that fails, as a fraction (0.10 = 10%).")
@click.option("--history", "history_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Also judge every cell x figure against this history of runs "
                                 "(change points, exact tests of counts, Benjamini-Hochberg).")
@click.option("--any-machine", is_flag=True,
              help="With --history: compare with runs of other machines too (warned).")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the verdict as JUnit XML (each check a test case).")
@click.option("--summary", "summary_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write it as Markdown (appended to $GITHUB_STEP_SUMMARY "
                                 "too when GitHub Actions sets it).")
def gate(run_dir: Path, rules_file: Path | None, baseline: Path | None, alpha: float,
         min_effect: float, history_dir: Path | None, any_machine: bool,
         junit_file: Path | None, summary_file: Path | None) -> None:
    """Check a run against rules (and a baseline run, or a history of runs); exit 0 pass,
    1 fail, 3 invalid."""
    sys.exit(_gate(run_dir, rules_file, baseline, alpha, min_effect, junit_file, summary_file,
                   history_dir, any_machine))


def _gate(run_dir: Path, rules_file: Path | None, baseline: Path | None, alpha: float = 0.01,
          min_effect: float = 0.10, junit_file: Path | None = None,
          summary_file: Path | None = None, history_dir: Path | None = None,
          any_machine: bool = False) -> int:
    from rich.console import Console
    from rich.table import Table

    from loadtests.history import HistoryError
    from loadtests.historycheck import HistoryMismatch
    from loadtests.results import load_run
    from maillab.gate import RuleError, load_rules, run_gate

    try:
        load_run(run_dir)  # the run's target answers which variants the rules may name
        rules = load_rules(rules_file) if rules_file else None  # None: the profile's
        result = run_gate(run_dir, rules, baseline, alpha, min_effect, history_dir, any_machine)
    except (RuleError, RunError, HistoryError, HistoryMismatch) as exc:
        raise click.UsageError(str(exc)) from None
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"maillab gate: {run_dir}")
    for column in ("rule", "cell", "measured", "limit", "verdict"):
        table.add_column(column, justify="right" if column in ("measured",) else "left")
    colour = {"pass": "green", "fail": "red", "error": "red", "skipped": "yellow"}
    for o in result.rules:
        table.add_row(o.rule, o.cell or "-", "-" if o.measured is None else f"{o.measured:g}",
                      o.limit,
                      f"[{colour[o.verdict]}]{o.verdict}[/] {o.detail}".strip())
    console.print(table)
    comparison = result.comparison
    if comparison and comparison.comparable:
        compared = Table(title=f"compared with {baseline} (Mann-Whitney U, one-sided, "
                               f"alpha {alpha:g}, fail above +{min_effect:.0%} median)")
        for column in ("cell", "metric", "median now / before", "change", "p", "verdict"):
            compared.add_column(column)
        for m in comparison.metrics:
            medians = m.median_ms
            compared.add_row(
                m.cell, m.metric, f"{medians[0]:g} / {medians[1]:g} ms" if medians else "-",
                "-" if m.change is None else f"{m.change:+.1%}",
                "-" if m.p_value is None else f"{m.p_value:.2g}",
                f"[{colour[m.verdict]}]{m.verdict}[/] {m.detail}".strip())
        console.print(compared)
    if result.history is not None:
        _print_history(console, result.history, colour)
    for reason in result.invalid:
        console.print(f"[red]invalid:[/] {reason}")
    for reason in result.partly_invalid:
        console.print(f"[yellow]partly invalid:[/] {reason}")
    console.print(f"gate verdict: {result.verdict} (exit {result.exit_code}); "
                  f"written to {run_dir / GATE_FILE}")
    from maillab.ci import write_junit, write_summary

    run_name = run_dir.resolve().name  # results/latest is a link to the run

    try:
        if junit_file is not None:
            console.print(f"JUnit XML: {write_junit(junit_file, result, run_name)}")
        for written in write_summary(summary_file, result, run_name):
            console.print(f"Markdown summary: {written}")
    except OSError as exc:  # the verdict stands; the file that could not be written is named
        console.print(f"[red]could not write the CI output:[/] {exc}")
        return result.exit_code or 1
    return result.exit_code


def _print_history(console: Any, report: Any, colour: dict[str, str]) -> None:
    from rich.table import Table

    checks = report.checks
    judged = [c for c in checks if c.verdict != "skipped"]
    console.print(f"history: {len(judged)} of {len(checks)} cell x figure checks judged "
                  f"against {report.runs} earlier runs; expected false alarms "
                  f"{report.expected_false_alarms}")
    if report.warning:
        console.print(f"[yellow]warning:[/] {report.warning}")
    shown = [c for c in checks if c.verdict == "fail"]
    if shown:
        table = Table(title="regressions against the history")
        for column in ("cell", "figure", "now", "expected", "change", "q", "segment since"):
            table.add_column(column)
        for c in shown:
            table.add_row(c.cell, c.figure, f"{c.value:g}", f"{c.expected:g}",
                          "-" if c.change is None else f"{c.change:+.1%}",
                          f"{c.q_value:.2g}", c.segment_since or "-")
        console.print(table)
    skipped = {c.detail for c in checks if c.verdict == "skipped"}
    for detail in sorted(skipped)[:3]:
        console.print(f"[{colour['skipped']}]skipped:[/] {detail}")


def _print_summary(console: Any, results: Results) -> None:
    from rich.table import Table

    table = Table(title=f"maillab {results.profile}: medians and p95 from every sample")
    for column in ("variant", "SMTP", "load", "scenario", "register p50", "p95",
                   "waits p75", "inbox p50", "done/s", "delivered", "lost silently",
                   "refused", "failed visibly", "dup", "peak thr", "peak q", "valid"):
        table.add_column(column, justify="left" if column == "variant" else "right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    def count(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    table.caption = ("waits p75: what the person waits for a sign-up, rated like INP; "
                     + "; ".join(f"{mark} {source}" for source, mark in WAIT_MARKS.items())
                     + " (maillab report says which is which and why)")
    for cell in results.cells:
        d = cell.delivery
        wait = cell.wait
        table.add_row(
            cell.variant, f"{cell.smtp_latency_ms} ms", cell.load.short,
            cell.scenario + ("" if cell.smtp == PLAIN else f" +{cell.smtp}"),
            ms(cell.metric("register", "p50_ms")), ms(cell.metric("register", "p95_ms")),
            f"{ms(wait.p75_ms)} {wait.rating or ''} {WAIT_MARKS[wait.source]}",
            ms(cell.metric("time_to_inbox", "p50_ms")), ms(cell.metric("throughput_rps")),
            f"{d.delivered}/{d.registered}" if cell.sends_email else "n/a",
            str(d.missing), count(d.refused), count(d.failed_visibly), str(d.duplicates),
            count(cell.metric("resources", "peak_threads")),
            count(cell.metric("resources", "peak_queue_depth")),
            "yes" if cell.valid else f"[red]no: {', '.join(sorted(cell.untrusted))}")
    console.print(table)
    if results.capacity:
        knees = Table(title=f"Capacity: the highest offered rate that held the SLO "
                            f"({results.capacity[0].slo})")
        for column in ("variant", "SMTP", "knee", "broke at", "why", "predicted", "threads",
                       "email threads (Little)", "queue", "app CPU"):
            knees.add_column(column, justify="left" if column in ("variant", "why") else "right")

        def rate(value: float | None) -> str:
            return "-" if value is None else f"{value:g}/s"

        for row in results.capacity:
            knees.add_row(
                row.variant, f"{row.smtp_latency_ms} ms",
                rate(row.knee_rps) if row.knee_rps is not None else "below the lowest step",
                rate(row.broke_at_rps) if row.broke_at_rps is not None else "none broke",
                f"{row.ended_by}: {row.broke_because}" if row.ended_by else
                (row.broke_because or ""), rate(row.predicted_rps), count(row.peak_threads),
                "-" if row.predicted_email_threads is None else
                f"{count(row.email_threads)} (predicted {row.predicted_email_threads:g})",
                count(row.peak_queue_depth),
                "-" if row.app_cpu_percent is None else f"{row.app_cpu_percent:.0f}%")
        console.print(knees)
    if results.enumeration:
        checks = Table(title="Account enumeration by timing: known vs unknown address "
                             "(two-sided Mann-Whitney U)")
        for column in ("variant", "endpoint", "samples", "known p50", "unknown p50", "gap",
                       "p", "verdict"):
            checks.add_column(column, justify="left" if column in ("variant", "endpoint",
                                                                   "verdict") else "right")
        for check in results.enumeration:
            checks.add_row(check.variant, check.endpoint, "/".join(map(str, check.samples)),
                           ms(check.known_p50_ms), ms(check.unknown_p50_ms),
                           f"{check.gap_ms:+.2f}", f"{check.p_value:.2g}",
                           "[red]distinguishable" if check.distinguishable
                           else "indistinguishable")
        console.print(checks)
    for cell in results.cells:
        for warning in cell.warnings:
            console.print(f"[yellow]warning[/] {cell.key.title}: {warning}")


@cli.command()
@click.argument("url")
@click.option("--count", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Sign-ups to make in the browser.")
@click.option("--json", "as_json", is_flag=True, help="Print every sign-up and the summary "
              "as JSON.")
def probe(url: str, count: int, as_json: bool) -> None:
    """Sign up COUNT times at URL (a running variant, on a loopback address) in real headless
    Chromium, and say what the person saw: click to confirmation painted, the click's Event
    Timing (what INP is made of) and the lab's INP proxy for the same sign-ups."""
    from dataclasses import asdict

    from maillab.probe import ProbeFailed, ProbeUnavailable, check_url, summarize
    from maillab.probe import probe as run_probe

    try:
        check_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    try:
        signups = run_probe(url, count)
    except (ProbeUnavailable, ProbeFailed) as exc:
        raise click.ClickException(str(exc)) from None
    summary = summarize(signups)
    if as_json:
        click.echo(json.dumps({"signups": [asdict(s) for s in signups],
                               "summary": asdict(summary)}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    def ms(value: float | None) -> str:
        return "under 16" if value is None else f"{value:.1f}"

    table = Table(title=f"maillab probe {url}: {count} sign-ups in Chromium (ms)")
    for column in ("email", "trusted", "click to confirmation", "response", "render",
                   "Event Timing", "processing", "presentation", "INP proxy"):
        table.add_column(column, justify="left" if column == "email" else "right")
    for s in signups:
        table.add_row(s.email, "yes" if s.trusted else "[red]no", ms(s.click_to_confirmation_ms),
                      ms(s.response_ms), ms(s.render_ms), ms(s.event_ms), ms(s.processing_ms),
                      ms(s.presentation_ms), ms(s.proxy_ms))
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(
        f"click to confirmation p50 {ms(summary.click_to_confirmation_p50_ms)}, p75 "
        f"{ms(summary.click_to_confirmation_p75_ms)}, p95 "
        f"{ms(summary.click_to_confirmation_p95_ms)}; Event Timing p75 "
        f"{ms(summary.event_p75_ms)} ({summary.events_reported} of {summary.count} clicks "
        f"reported an entry of 16 ms or more); response p75 {ms(summary.response_p75_ms)}, "
        f"render p50 {ms(summary.render_p50_ms)} (the confirmation's last byte to its first "
        f"paint; the INP proxy assumes one 60 Hz frame); INP proxy p75 "
        f"{ms(summary.proxy_p75_ms)}; "
        f"{summary.trusted} of {summary.count} clicks trusted")


@cli.command()
def schema() -> None:
    """Print the JSON schema of results.json, derived from the results model."""
    from loadtests.results import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@cli.group()
def target() -> None:
    """Target files: an app's sign-up described for the lab (README: "Your own app")."""


@target.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--variant", "variants", multiple=True,
              help="Walk this variant only; repeat for more (default: each).")
def target_check(path: Path, variants: tuple[str, ...]) -> None:
    """Start the target in PATH (a maillab.toml, a pyproject.toml with [tool.maillab], or
    their folder) once per variant, walk one sign-up step by step and print what each step
    got, then stop everything. Exit 1 when a sign-up did not go through."""
    from loadtests.target import TargetError, load_target
    from maillab.processes import Stopped
    from maillab.targetcheck import CheckFailed, run_check

    try:
        found = load_target(path)
        ok = run_check(found, list(variants), click.echo)
    except (TargetError, CheckFailed) as exc:
        raise click.ClickException(str(exc)) from None
    except Stopped as exc:
        raise click.ClickException(f"stopped by {exc}") from None
    if not ok:
        raise click.ClickException("a sign-up did not go through (see above)")
    click.echo("every step answered as the target says")


@cli.group(invoke_without_command=True)
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="The history folder [default: results/history].")
@click.pass_context
def history(ctx: click.Context, folder: Path | None) -> None:
    """The history of runs (one JSON line each in DIR/history.jsonl): list it, or add a run.
    A line that cannot be read is reported and skipped."""
    from loadtests.history import DEFAULT_DIR, HistoryError, read_history

    ctx.obj = folder or DEFAULT_DIR
    if ctx.invoked_subcommand is not None:
        return
    try:
        found = read_history(ctx.obj)
    except HistoryError as exc:
        raise click.ClickException(str(exc)) from None
    for problem in found.problems:
        click.echo(f"warning: {problem}", err=True)
    if not found.entries:
        click.echo(f"{found.path}: no runs yet")
        return
    click.echo(f"{found.path}: {len(found.entries)} runs")
    for e in found.entries:
        source = e.get("source") or {}
        commit = (source.get("commit") or "-")[:10] + ("+dirty" if source.get("dirty") else "")
        cells = e["cells"]
        valid = sum(1 for c in cells if c.get("valid"))
        click.echo(f"{e['run_id']}  {e['target']['name']}/{e['profile']}  {commit}  "
                   f"{source.get('branch') or '-'}  machine {e['fingerprint'].get('id')}  "
                   f"{valid}/{len(cells)} cells valid"
                   + ("" if e.get("complete", True) else "  (unfinished)"))


@history.command("add")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.pass_obj
def history_add(folder: Path, run_dir: Path) -> None:
    """Add an existing run (its results.json) to the history."""
    from loadtests.history import HistoryError, add_run

    try:
        entry = add_run(folder, run_dir)
    except (HistoryError, RunError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {entry['run_id']} ({len(entry['cells'])} cells) to "
               f"{folder / 'history.jsonl'}")


cli.add_command(smtp)
cli.add_command(smtp_bench)
cli.add_command(report)


def main() -> None:
    cli(auto_envvar_prefix="MAILLAB")
