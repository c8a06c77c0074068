"""``smtp-bench``: a lean SMTP load client for measuring an SMTP server on loopback.

Three modes, each printing one JSON object:

    ingest   send ``--messages`` small messages over ``--concurrency`` connections, reusing
             each connection (``--reuse``, default) or one connection per message
             (``--new-connection``); reports messages per second.
    latency  the same, but times each message from writing the final dot to reading the
             reply (what the ``eom`` latency delays); reports p50/p99/max in ms.
    wakeup   for each of ``--messages`` messages: start a long-poll
             ``GET /api/messages?to=ADDR&wait=..`` on ``--api-port``, send the message, and
             time from writing the final dot to the poll's response; reports p50/p99 in ms.

The client speaks just enough SMTP (HELO, MAIL, RCPT, DATA, QUIT; one reply line each) on
asyncio streams, so on a multi-core machine it costs the server's core little: run it in its
own process (``python -m fakesmtp.bench ...``) when measuring.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Sequence
from typing import Any

import click

from fakesmtp.server import new_loop
from fakesmtp.stats import percentile

BODY = (
    b"From: bench@example.test\r\nTo: {to}\r\nSubject: bench {n}\r\n\r\n"
    b"Verify: https://app.test/verify/{n}\r\n.\r\n"
)


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Session:
        reader, writer = await asyncio.open_connection(host, port)
        session = cls(reader, writer)
        await session.expect(b"220")
        await session.command(b"HELO bench.test\r\n", b"250")
        return session

    async def expect(self, code: bytes) -> None:
        line = await self.reader.readline()
        if not line.startswith(code):
            raise RuntimeError(f"expected {code!r}, got {line!r}")

    async def command(self, line: bytes, code: bytes) -> None:
        self.writer.write(line)
        await self.expect(code)

    async def send(self, n: int, to: str) -> float:
        """One message; returns seconds from writing the final dot to reading the 250."""
        await self.command(b"MAIL FROM:<bench@example.test>\r\n", b"250")
        await self.command(f"RCPT TO:<{to}>\r\n".encode(), b"250")
        await self.command(b"DATA\r\n", b"354")
        started = time.perf_counter()
        await self.command(BODY.replace(b"{to}", to.encode()).replace(b"{n}", b"%d" % n), b"250")
        return time.perf_counter() - started

    async def close(self) -> None:
        try:
            await self.command(b"QUIT\r\n", b"221")
        finally:
            self.writer.close()
            await self.writer.wait_closed()


async def run_ingest(
    host: str, port: int, messages: int, concurrency: int, reuse: bool, ramp: float = 0.0
) -> dict[str, Any]:
    """Send ``messages``; returns rate, wall time and per-message eom times. ``ramp`` spreads
    the connections' starts evenly over that many seconds (no thundering herd)."""
    counter = iter(range(messages))
    eom: list[float] = []

    async def worker(i: int) -> None:
        await asyncio.sleep(ramp * i / concurrency)
        session = await _Session.open(host, port) if reuse else None
        for n in counter:
            if session is None:
                one = await _Session.open(host, port)
                eom.append(await one.send(n, f"user{n}@bench.test"))
                await one.close()
            else:
                eom.append(await session.send(n, f"user{n}@bench.test"))
        if session is not None:
            await session.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    seconds = time.perf_counter() - started
    return {"messages": len(eom), "seconds": seconds, "rate": len(eom) / seconds,
            **_summary(eom)}


async def run_wakeup(host: str, port: int, api_port: int, messages: int) -> dict[str, Any]:
    """Time from the final dot to a waiting long-poll's response, one message at a time."""
    import aiohttp  # only this mode needs it

    samples: list[float] = []
    stamp = time.time_ns()
    async with aiohttp.ClientSession() as http:
        session = await _Session.open(host, port)
        try:
            for n in range(messages):
                to = f"wake{stamp}-{n}@bench.test"
                url = f"http://{host}:{api_port}/api/messages?to={to}&wait=10"
                poll = asyncio.ensure_future(http.get(url))
                await asyncio.sleep(0.02)  # let the poll reach the server and start waiting
                await session.command(b"MAIL FROM:<bench@example.test>\r\n", b"250")
                await session.command(f"RCPT TO:<{to}>\r\n".encode(), b"250")
                await session.command(b"DATA\r\n", b"354")
                dot = time.perf_counter()
                session.writer.write(BODY.replace(b"{to}", to.encode()).replace(b"{n}", b"0"))
                async with await poll as resp:
                    found = await resp.json()
                samples.append(time.perf_counter() - dot)
                await session.expect(b"250")
                if not found:
                    raise RuntimeError(f"long-poll for {to} came back empty")
        finally:
            await session.close()
    return _summary(samples)


def _summary(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)

    def ms(q: float) -> float | None:
        value = percentile(ordered, q)
        return None if value is None else round(value * 1000, 3)

    return {"count": len(ordered), "p50_ms": ms(50), "p99_ms": ms(99),
            "max_ms": round(ordered[-1] * 1000, 3) if ordered else None}


def _loopback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Load is only ever sent to this machine: refuse any host that is not loopback."""
    try:
        address = ipaddress.ip_address(socket.gethostbyname(value))
    except (OSError, ValueError):
        raise click.BadParameter(f"cannot resolve {value!r}", ctx, param) from None
    if not address.is_loopback:
        raise click.BadParameter(f"{value!r} ({address}) is not a loopback address; "
                                 "smtp-bench only loads servers on this machine", ctx, param)
    return value


@click.command("smtp-bench")
@click.option("--mode", type=click.Choice(["ingest", "latency", "wakeup"]), default="ingest",
              show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, callback=_loopback,
              help="A loopback address.")
@click.option("--port", type=click.IntRange(1, 65535), default=8025, show_default=True)
@click.option("--api-port", type=click.IntRange(1, 65535), default=8026, show_default=True,
              help="HTTP API port (wakeup mode).")
@click.option("--messages", type=click.IntRange(1, 1_000_000), default=5000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 5000), default=8, show_default=True)
@click.option("--reuse/--new-connection", default=True, show_default=True,
              help="Many messages per connection, or one connection per message.")
@click.option("--ramp", type=click.FloatRange(0, 60), default=0.0, show_default=True,
              help="Spread the connections' starts over this many seconds.")
def smtp_bench(
    mode: str, host: str, port: int, api_port: int, messages: int, concurrency: int,
    reuse: bool, ramp: float,
) -> None:
    """Load an SMTP server on loopback and print what was measured, as JSON."""
    # On the server's loop (uvloop where installed): the client's own lag is in what it
    # measures, so it should be no slower than the server it measures.
    with asyncio.Runner(loop_factory=new_loop) as runner:
        if mode == "wakeup":
            result = runner.run(run_wakeup(host, port, api_port, messages))
        else:
            result = runner.run(run_ingest(host, port, messages, concurrency, reuse, ramp))
        if mode == "latency":
            result = {k: result[k] for k in ("messages", "count", "p50_ms", "p99_ms", "max_ms")}
    click.echo(json.dumps({"mode": mode, "reuse": reuse, "concurrency": concurrency, **result}))


if __name__ == "__main__":
    smtp_bench(prog_name="python -m fakesmtp.bench")
