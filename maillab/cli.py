"""The ``maillab`` command line."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from apps.core.config import ConfigError
from apps.core.registry import VARIANTS, UnknownVariantError
from fakesmtp.bench import smtp_bench
from fakesmtp.cli import smtp
from maillab.ports import port_in_use


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """maillab: measure what sending the verification email costs a Flask sign-up."""


def _build_app(variant: str) -> Any:
    from apps.core import create_app

    try:
        return create_app(variant)
    except (ConfigError, UnknownVariantError) as exc:
        raise click.ClickException(str(exc)) from None


def _check_port(host: str, port: int, option: str) -> None:
    if port_in_use(host, port):
        raise click.ClickException(f"{option} {port}: {host}:{port} is already in use")


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
    # Build once here: a bad setting fails now with one line, and the tables and the
    # instance secret exist before several workers race to create them.
    app = _build_app(variant)
    app.extensions["maillab.db"].engine.dispose()
    url = f"http://{host}:{port}"

    def on_ready(_arbiter: Any) -> None:
        click.echo(f"maillab {variant} listening on {url} "
                   f"({workers} workers x {threads} threads, database "
                   f"{app.config['DATABASE_URL']}, SMTP {app.config['SMTP_HOST']}:"
                   f"{app.config['SMTP_PORT']})", err=False)
        sys.stdout.flush()

    GunicornServer(variant, gunicorn_options(host, port, workers, threads, timeout,
                                             on_ready)).run()


@cli.command()
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="Consumer threads [default: MAILLAB_WORKER_THREADS, 4].")
@click.option("--metrics-port", default=0, type=click.IntRange(0, 65535),
              help="Serve the consumer's Prometheus metrics on 127.0.0.1:PORT (0: off).")
@click.option("-v", "--verbose", is_flag=True, help="Log every task.")
def worker(threads: int | None, metrics_port: int, verbose: bool) -> None:
    """Consume the queued variant's email tasks (Huey)."""
    from apps.queued.worker import build_consumer

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if metrics_port:
        _check_port("127.0.0.1", metrics_port, "--metrics-port")
    app = _build_app("queued")
    consumer, stats = build_consumer(app, threads)
    cfg = app.config
    if metrics_port:
        from prometheus_client import CollectorRegistry, start_http_server

        from apps.core.metrics import MailerCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(MailerCollector(stats))
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    click.echo(f"maillab worker consuming {cfg['QUEUE_URL']} with {consumer.workers} threads "
               f"(poll every {cfg['WORKER_POLL_DELAY'] * 1000:g}.."
               f"{cfg['WORKER_MAX_POLL_DELAY'] * 1000:g} ms when idle), SMTP "
               f"{cfg['SMTP_HOST']}:{cfg['SMTP_PORT']}"
               + (f", metrics on http://127.0.0.1:{metrics_port}/metrics" if metrics_port else ""))
    sys.stdout.flush()
    consumer.run()
    s = stats.stats()
    click.echo(f"maillab worker stopped: {s['emails_delivered_total']:g} delivered, "
               f"{s['emails_failed_total']:g} failed, {s['emails_retried_total']:g} retries, "
               f"{s['queue_depth']:g} left in the queue")


@cli.command()
@click.option("--latency", default="500ms", show_default=True,
              help="SMTP latency after the final dot (a fakesmtp spec, e.g. 5s).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory [default: results/demo-<time>].")
def demo(latency: str, out: Path | None) -> None:
    """One sign-up per variant in real processes, against a slow fake SMTP server."""
    from rich.console import Console
    from rich.table import Table

    from fakesmtp.latency import LatencyError, parse_latency
    from maillab.demo import DEMO_PASSWORD_HASH, ProcessError, run_demo

    try:
        parse_latency(latency)
    except LatencyError as exc:
        raise click.BadParameter(str(exc), param_hint="'--latency'") from None
    out = out or Path("results") / time.strftime("demo-%Y%m%d-%H%M%S")
    console = Console()
    console.print(f"maillab demo: SMTP answers the final dot after {latency}; passwords hashed "
                  f"with {DEMO_PASSWORD_HASH} (cheap, so hashing does not hide the email cost)")
    try:
        rows = run_demo(latency, out, say=console.print)
    except ProcessError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"One sign-up per variant, SMTP latency {latency} "
                        "(a single sample each: a demonstration, not a benchmark)")
    for column in ("variant", "register", "time to inbox", "verify", "note"):
        table.add_column(column, justify="left" if column in ("variant", "note") else "right")
    for row in rows:
        table.add_row(row.variant, f"{row.register_status} in {row.register_ms:.1f} ms",
                      "-" if row.time_to_inbox_ms is None else f"{row.time_to_inbox_ms:.1f} ms",
                      "-" if row.verify_status is None else str(row.verify_status), row.note)
    console.print(table)
    console.print(f"logs and demo.json in {out}")


cli.add_command(smtp)
cli.add_command(smtp_bench)


def main() -> None:
    cli(auto_envvar_prefix="MAILLAB")
