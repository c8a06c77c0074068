"""The HTTP control API (aiohttp), served from the same event loop as the SMTP sessions.

    GET    /api/messages?to=ADDR&wait=S&since=T&limit=N
                 messages, newest first (a JSON list). ``to``: only those for ADDR
                 (case-insensitive); ``since``: only those with received_at > T (epoch s);
                 ``wait``: if none match yet, wait up to S seconds (capped at 120) for one,
                 answering the moment it lands, or [] at the deadline; ``limit``: default 100.
    GET    /api/recipients           per recipient, how many messages and when the first
                                     arrived: {"recipients": {ADDR: {"count": 2,
                                     "first_at": T}}, "kept": n} (n: messages kept, all of
                                     them counted; no page limit, unlike /api/messages)
    GET    /api/messages/{id}        one message (404 if unknown or evicted)
    GET    /api/messages/{id}/raw    the bytes as received (text/plain)
    DELETE /api/messages             forget all messages -> {"deleted": n}
    GET    /api/config               the active config (see fakesmtp.config)
    PATCH  /api/config               merge a patch (a JSON object) -> the new config
    POST   /api/reset                messages, stats and config back to start-up -> config
                                     (any body is ignored)
    GET    /api/stats                counters and per-phase latency percentiles
    GET    /api/faults               what each recipient met since the last reset:
                                     {"recipients": {ADDR: {"550": 1, "hang": 1}},
                                      "truncated": false} (reply codes and actions, counted;
                                     a fault before any RCPT names no recipient)
    GET    /metrics                  the same in Prometheus text format
    GET    /                         HTML inbox page

Bad input gets a 400 ``{"error": "...", "field": "..."}`` naming the parameter or config path.
A JSON body is at most ``MAX_BODY_BYTES`` (else 413) in UTF-8, UTF-16 or UTF-32 (another
declared charset is a 415), nested at most ``MAX_JSON_DEPTH`` deep, with finite numbers only
(``NaN`` and ``Infinity`` are not JSON, though Python's json module reads them).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from fakesmtp.config import ConfigError
from fakesmtp.engine import Engine
from fakesmtp.inbox import render_inbox
from fakesmtp.numbers import NumberError, finite, shown
from fakesmtp.store import parse_off_loop

ENGINE: Final = web.AppKey("engine", Engine)
MAX_WAIT_S: Final = 120.0
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 10_000
# A config with a hundred fault rules is ~10 KB; the cap keeps decoding a hostile body (on
# the event loop) to milliseconds, and is still room for JSON nested 100,000 deep to be
# refused as too deep rather than as too big.
MAX_BODY_BYTES: Final = 256 * 1024
MAX_JSON_DEPTH: Final = 32  # a config is 3 deep ({"faults": [{...}]})
# Decoding and checking a body costs up to ~0.3 ms per KB (objects and arrays are walked in
# Python): a bigger one is decoded in a worker thread, not on the loop that serves SMTP.
CHEAP_BODY_BYTES: Final = 16 * 1024
# JSON is UTF-8 (RFC 8259; UTF-16 and UTF-32 were allowed before). Other codecs are refused
# rather than tried: some are not text encodings at all, and punycode is quadratic.
JSON_CHARSETS: Final = frozenset(
    {"utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
     "utf-32-be", "ascii"}
)
_JSON_DUMPS = json.dumps


class _ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs a request it cannot even parse (a 100 KB URL, a broken header) with a
    traceback, as if the server had failed. It is the client's error, already answered with
    a 4xx: log it as one INFO line. Errors in handlers (500s) keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            record.msg = f"{record.msg} (answered {exc.code}): %s"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()),
                           shown(exc.message))
            record.exc_info = record.exc_text = None
            if record.levelno > logging.INFO:  # lower it, never raise it (aiohttp logs some
                record.levelno, record.levelname = logging.INFO, "INFO"  # at DEBUG)
        return True


#: The logger to give aiohttp's request handler (``AppRunner(..., logger=SERVER_LOG)``).
SERVER_LOG: Final = logging.getLogger("fakesmtp.api")
SERVER_LOG.addFilter(_ClientErrorsInOneLine())


def make_app(engine: Engine) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[ENGINE] = engine
    app.add_routes(
        [
            web.get("/", inbox),
            web.get("/api/messages", list_messages),
            web.delete("/api/messages", delete_messages),
            web.get("/api/recipients", list_recipients),
            web.get("/api/messages/{id}", get_message),
            web.get("/api/messages/{id}/raw", get_raw),
            web.get("/api/config", get_config),
            web.patch("/api/config", patch_config),
            web.post("/api/reset", reset),
            web.get("/api/stats", get_stats),
            web.get("/api/faults", get_faults),
            web.get("/api/attempts", get_attempts),
            web.get("/metrics", metrics),
        ]
    )
    return app


def bad_request(field: str, message: str) -> web.HTTPBadRequest:
    body = _JSON_DUMPS({"error": message, "field": field})
    return web.HTTPBadRequest(text=body, content_type="application/json")


def _error_body(field: str, message: str) -> dict[str, Any]:
    return {"text": _JSON_DUMPS({"error": message, "field": field}),
            "content_type": "application/json"}


def _number(request: web.Request, name: str, low: float, high: float | None) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = finite(raw, name)
    except NumberError as err:
        raise bad_request(name, str(err)) from None
    if value < low:
        raise bad_request(name, f"{name}={shown(raw)} must be a finite number >= {low:g}")
    return value if high is None else min(value, high)


class _NonFinite:
    """What a ``NaN``/``Infinity`` literal decodes to: no number, and no type any config
    parser accepts, so it cannot slip through; :func:`_check_json` reports where it is."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


async def json_body(request: web.Request) -> Any:
    """The request body as JSON, or an HTTP error with a JSON body naming the problem: 413
    too big, 415 a charset that is not UTF-8/16/32, 400 anything else (bytes that are not
    in the charset, bad JSON, too deep, a non-finite number)."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        message = f"body is larger than {MAX_BODY_BYTES} bytes"
        raise web.HTTPRequestEntityTooLarge(
            MAX_BODY_BYTES, **_error_body("body", message)
        ) from None
    declared = request.charset
    try:
        charset = codecs.lookup(declared or "utf-8").name
    except (LookupError, ValueError):  # unknown, or a NUL in the name
        charset = ""
    if charset not in JSON_CHARSETS:
        message = f"charset {shown(declared)} is not supported; send JSON as UTF-8"
        raise web.HTTPUnsupportedMediaType(**_error_body("charset", message))
    if len(body) <= CHEAP_BODY_BYTES:
        return _decode_json(body, charset)
    return await asyncio.get_running_loop().run_in_executor(None, _decode_json, body, charset)


def _decode_json(body: bytes, charset: str) -> Any:
    """Decode and check a body (see :func:`json_body`); raises a 400 if it will not do."""
    try:
        text = body.decode(charset)
    except UnicodeDecodeError as err:
        raise bad_request("body", f"body is not valid {charset}: {err}") from None
    try:
        value = json.loads(text, parse_constant=_NonFinite)
    except RecursionError:
        raise bad_request("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as err:
        raise bad_request("body", f"body is not valid JSON: {err}") from None
    _check_json(value)
    return value


_Where = tuple["_Where", str | int] | None  # (the parent's place, key or index); None: the body


def _check_json(value: Any) -> None:
    """Raise a 400 for nesting deeper than MAX_JSON_DEPTH or a non-finite number, naming its
    place as config errors do (``faults[0].prob``). Iterative, since the depth is unchecked
    yet; a place is spelled out only for the error, as most bodies have none."""
    wanted = (dict, list, _NonFinite)  # scalars need no look, and most items are scalars
    stack: list[tuple[Any, int, _Where]] = [(value, 1, None)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, _NonFinite):
            field = _spell(where)
            raise bad_request(field, f"{field}: {item.literal} is not a finite number")
        if depth > MAX_JSON_DEPTH:
            raise bad_request("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict | list):
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((v, depth + 1, (where, k)) for k, v in pairs if isinstance(v, wanted))


def _spell(where: _Where) -> str:
    keys: list[str | int] = []
    while where is not None:
        where, key = where
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path = f"{path or 'body'}[{key}]" if isinstance(key, int) else (
            f"{path}.{key}" if path else key)
    return path or "body"


async def list_messages(request: web.Request) -> web.Response:
    store = request.app[ENGINE].store
    to = request.query.get("to") or None
    wait = _number(request, "wait", 0.0, MAX_WAIT_S) or 0.0
    since = _number(request, "since", 0.0, None)
    limit_f = _number(request, "limit", 1.0, MAX_LIMIT)
    limit = DEFAULT_LIMIT if limit_f is None else int(limit_f)
    if wait > 0:
        found = await store.wait(to, since, wait, limit)
    else:
        found = store.query(to, since, limit)
    await parse_off_loop(found)
    return web.json_response([m.to_json() for m in found])


async def list_recipients(request: web.Request) -> web.Response:
    store = request.app[ENGINE].store
    recipients = {address: {"count": count, "first_at": first}
                  for address, (count, first) in store.recipients().items()}
    return web.json_response({"recipients": recipients, "kept": len(store)})


def _message(request: web.Request) -> Any:
    msg = request.app[ENGINE].store.get(request.match_info["id"])
    if msg is None:
        body = _JSON_DUMPS({"error": "no such message (never received, deleted or evicted)",
                            "field": "id"})
        raise web.HTTPNotFound(text=body, content_type="application/json")
    return msg


async def get_message(request: web.Request) -> web.Response:
    msg = _message(request)
    await parse_off_loop((msg,))
    return web.json_response(msg.to_json())


async def get_raw(request: web.Request) -> web.Response:
    return web.Response(body=_message(request).raw, content_type="text/plain", charset="utf-8")


async def delete_messages(request: web.Request) -> web.Response:
    return web.json_response({"deleted": request.app[ENGINE].store.clear()})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[ENGINE].config.to_json())


async def patch_config(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    patch = await json_body(request)
    try:
        config = engine.patch(patch)
    except ConfigError as err:
        raise bad_request(err.field, str(err)) from None
    return web.json_response(config.to_json())


async def reset(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    engine.reset()
    return web.json_response(engine.config.to_json())


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[ENGINE].snapshot())


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[ENGINE].stats.faults_by_recipient())


async def get_attempts(request: web.Request) -> web.Response:
    """Every SMTP transaction kept (fakesmtp/ledger.py), oldest first; ``to`` filters by a
    recipient, accepted or refused."""
    to = request.query.get("to") or None
    return web.json_response(request.app[ENGINE].ledger.query(to))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[ENGINE].prometheus().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def inbox(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    recent = engine.store.query(limit=50)
    await parse_off_loop(recent)
    page = render_inbox(recent, engine.config, engine.snapshot(), len(engine.store))
    return web.Response(text=page, content_type="text/html", charset="utf-8")
