"""``maillab smtp`` / ``python -m fakesmtp``: run the fake SMTP server until SIGINT or SIGTERM.

The click command object is :data:`smtp`; register it in a group with ``group.add_command(smtp)``.
"""

from __future__ import annotations

import gc
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click

from fakesmtp.config import Config, ConfigError
from fakesmtp.faults import FaultError, FaultRule, parse_fault
from fakesmtp.latency import (
    ACCEPTED_FORMS,
    DEFAULT_PHASE,
    PHASES,
    LatencyError,
    LatencySpec,
    parse_latency,
    parse_phase_latency,
)
from fakesmtp.server import FakeSMTP, StartError
from fakesmtp.store import DEFAULT_CAPACITY
from fakesmtp.tls import AUTH_MECHANISMS, Credentials, TlsError, self_signed, server_context

_EPILOG = f"""
\b
Latency specs: {ACCEPTED_FORMS}
Phases: {", ".join(PHASES)} (--latency alone means {DEFAULT_PHASE})

\b
Fault rules: comma-separated key=value, e.g.
  --fault id=r1,phase=rcpt,reply=550,prob=0.1,to=*@fail.test
  --fault id=slow,phase=mail,rate=50            (421 above 50 messages/s)
  --fault id=cut,phase=data,action=drop,every=10
keys: id, phase, action (reply|disconnect|hang|drop), reply (4xx/5xx), text, to (glob, |-separated),
and at most one trigger: prob=P, every=N, first=N, rate=N (per second), conns=N (open).
The rule id is in the reply text: "550 Mailbox unavailable [fakesmtp rule=r1]".
"""


def _latency(ctx: click.Context, param: click.Parameter, value: str | None) -> LatencySpec | None:
    if value is None:
        return None
    try:
        return parse_latency(value)
    except LatencyError as err:
        raise click.BadParameter(str(err), ctx, param) from None


def _phase_latency(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, LatencySpec]:
    out: dict[str, LatencySpec] = {}
    for value in values:
        try:
            phase, spec = parse_phase_latency(value)
        except LatencyError as err:
            raise click.BadParameter(str(err), ctx, param) from None
        out[phase] = spec
    return out


def _credentials(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> Credentials | None:
    if value is None:
        return None
    try:
        return Credentials.parse(value)
    except TlsError as err:
        raise click.BadParameter(str(err), ctx, param) from None


def _faults(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> list[FaultRule]:
    rules = []
    for i, value in enumerate(values):
        try:
            rules.append(parse_fault(value, f"r{i + 1}"))
        except FaultError as err:
            raise click.BadParameter(f"{value!r}: {err}", ctx, param) from None
    return rules


@click.command("smtp", epilog=_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True,
              help="SMTP port (0: any free port).")
@click.option("--api-port", type=click.IntRange(0, 65535), default=8026, show_default=True,
              help="HTTP API port (0: any free port).")
@click.option("--latency", metavar="SPEC", callback=_latency,
              help=f"Latency of the {DEFAULT_PHASE} phase (after the final dot).")
@click.option("--phase-latency", metavar="PHASE=SPEC", multiple=True, callback=_phase_latency,
              help="Latency of one phase; repeatable.")
@click.option("--fault", "faults", metavar="RULE", multiple=True, callback=_faults,
              help="A fault rule (syntax below); repeatable, checked in order.")
@click.option("--seed", type=int, help="RNG seed, so a run repeats (default: random, printed).")
@click.option("--max-messages", type=click.IntRange(min=1), default=DEFAULT_CAPACITY,
              show_default=True, help="Messages kept in memory; the oldest are evicted.")
@click.option("--tls", is_flag=True,
              help="Offer STARTTLS and refuse mail before it (530), as a provider's port 587 "
                   "does; with a self-signed certificate for localhost, 127.0.0.1 and ::1 "
                   "unless --tls-cert is given.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM certificate (chain) for --tls; needs --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM private key of --tls-cert.")
@click.option("--auth", "credentials", metavar="USER:PASSWORD", callback=_credentials,
              envvar="FAKESMTP_AUTH", show_envvar=True,
              help=f"Refuse mail before AUTH ({' or '.join(AUTH_MECHANISMS)}) with these "
                   "credentials (530); a wrong password gets 535. Needs --tls. From the "
                   "environment, the password stays out of the process list.")
def smtp(
    host: str,
    port: int,
    api_port: int,
    latency: LatencySpec | None,
    phase_latency: dict[str, LatencySpec],
    faults: list[FaultRule],
    seed: int | None,
    max_messages: int,
    tls: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    credentials: Credentials | None,
) -> None:
    """Run a fake SMTP server that injects latency and faults and captures mail,
    controlled over an HTTP API. Stops on SIGINT or SIGTERM."""
    specs = dict(phase_latency)
    if latency is not None:
        specs[DEFAULT_PHASE] = latency
    try:
        config = Config.build(specs, faults, seed)
    except ConfigError as err:  # e.g. the same rule id twice
        raise click.BadParameter(str(err), param_hint="'--fault'") from None
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = tls or tls_cert is not None
    if credentials is not None and not tls:
        raise click.UsageError("--auth needs --tls: credentials are only taken over STARTTLS")
    with tempfile.TemporaryDirectory(prefix="fakesmtp-tls-") as scratch:
        context, certificate = None, None
        if tls:
            if tls_cert is None or tls_key is None:
                tls_cert, tls_key = self_signed(Path(scratch))
                certificate = f"{tls_cert} (self-signed for localhost, 127.0.0.1, ::1)"
            else:
                certificate = str(tls_cert)
            try:
                context = server_context(tls_cert, tls_key)
            except TlsError as err:
                raise click.BadParameter(str(err), param_hint="'--tls-cert'") from None
        server = FakeSMTP(host, port, api_port, config, max_messages=max_messages,
                          tls=context, credentials=credentials)
        _serve(server, host, certificate, credentials)


def _serve(server: FakeSMTP, host: str, certificate: str | None,
           credentials: Credentials | None) -> None:
    """Start ``server``, say where it listens, and stop it on SIGINT or SIGTERM."""
    # Block the signals before the server thread starts (it inherits the mask), then wait
    # for them synchronously: no handler can run in the middle of anything.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        try:
            server.start()
        except StartError as err:
            raise click.ClickException(str(err)) from None
        # What start-up made (modules, the app) lives as long as the process: frozen, the
        # cyclic collector no longer walks it. Each full collection walked ~38,000 objects
        # for ~9 ms with the GIL held, a pause every sleeping session's timer shares.
        gc.collect()
        gc.freeze()
        try:
            click.echo(f"fakesmtp SMTP     smtp://{host}:{server.smtp_port}")
            click.echo(f"fakesmtp HTTP API {server.api_url}/")
            click.echo(f"fakesmtp {server.config.describe()}")
            if certificate is not None:
                click.echo(f"fakesmtp STARTTLS required; certificate {certificate}")
            if credentials is not None:
                click.echo(f"fakesmtp AUTH required ({' or '.join(AUTH_MECHANISMS)}); "
                           f"user {credentials.user}")
            sys.stdout.flush()
            received = signal.sigwait(stop_signals)
        finally:
            server.stop()
        click.echo(f"fakesmtp stopped on {signal.Signals(received).name}")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
