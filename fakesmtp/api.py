"""The HTTP control API (aiohttp), served from the same event loop as the SMTP sessions.

    GET    /api/messages?to=ADDR&wait=S&since=T&limit=N
                 messages, newest first (a JSON list). ``to``: only those for ADDR
                 (case-insensitive); ``since``: only those with received_at > T (epoch s);
                 ``wait``: if none match yet, wait up to S seconds (capped at 120) for one,
                 answering the moment it lands, or [] at the deadline; ``limit``: default 100.
    GET    /api/messages/{id}        one message (404 if unknown or evicted)
    GET    /api/messages/{id}/raw    the bytes as received (text/plain)
    DELETE /api/messages             forget all messages -> {"deleted": n}
    GET    /api/config               the active config (see fakesmtp.config)
    PATCH  /api/config               merge a patch -> the new config
    POST   /api/reset                messages, stats and config back to start-up -> config
    GET    /api/stats                counters and per-phase latency percentiles
    GET    /metrics                  the same in Prometheus text format
    GET    /                         HTML inbox page

Bad input gets a 400 ``{"error": "...", "field": "..."}`` naming the parameter or config path.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from aiohttp import web

from fakesmtp.config import ConfigError
from fakesmtp.engine import Engine
from fakesmtp.inbox import render_inbox

ENGINE: Final = web.AppKey("engine", Engine)
MAX_WAIT_S: Final = 120.0
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 10_000
_JSON_DUMPS = json.dumps


def make_app(engine: Engine) -> web.Application:
    app = web.Application()
    app[ENGINE] = engine
    app.add_routes(
        [
            web.get("/", inbox),
            web.get("/api/messages", list_messages),
            web.delete("/api/messages", delete_messages),
            web.get("/api/messages/{id}", get_message),
            web.get("/api/messages/{id}/raw", get_raw),
            web.get("/api/config", get_config),
            web.patch("/api/config", patch_config),
            web.post("/api/reset", reset),
            web.get("/api/stats", get_stats),
            web.get("/metrics", metrics),
        ]
    )
    return app


def bad_request(field: str, message: str) -> web.HTTPBadRequest:
    body = _JSON_DUMPS({"error": message, "field": field})
    return web.HTTPBadRequest(text=body, content_type="application/json")


def _number(request: web.Request, name: str, low: float, high: float | None) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(name, f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < low:
        raise bad_request(name, f"{name}={raw!r} must be a finite number >= {low:g}")
    return value if high is None else min(value, high)


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
    return web.json_response([m.to_json() for m in found])


def _message(request: web.Request) -> Any:
    msg = request.app[ENGINE].store.get(request.match_info["id"])
    if msg is None:
        body = _JSON_DUMPS({"error": "no such message (never received, deleted or evicted)",
                            "field": "id"})
        raise web.HTTPNotFound(text=body, content_type="application/json")
    return msg


async def get_message(request: web.Request) -> web.Response:
    return web.json_response(_message(request).to_json())


async def get_raw(request: web.Request) -> web.Response:
    return web.Response(body=_message(request).raw, content_type="text/plain", charset="utf-8")


async def delete_messages(request: web.Request) -> web.Response:
    return web.json_response({"deleted": request.app[ENGINE].store.clear()})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[ENGINE].config.to_json())


async def patch_config(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    try:
        patch = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError) as err:
        raise bad_request("body", f"body is not valid JSON: {err}") from None
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


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[ENGINE].prometheus().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def inbox(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    page = render_inbox(
        engine.store.query(limit=50), engine.config, engine.snapshot(), len(engine.store)
    )
    return web.Response(text=page, content_type="text/html", charset="utf-8")
