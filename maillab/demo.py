"""One sign-up per variant against a slow fake SMTP server, all in real processes.

This is what ``make bench`` runs until the load-test runner lands: it starts ``maillab smtp``
with the given latency, then each variant under ``maillab serve`` (and ``maillab worker`` for
``queued``), registers one new address over HTTP, waits for the email at the fake server,
follows its link, and prints what one person would have experienced. One sample per variant
is a demonstration, not a benchmark: the table says so.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from apps.core.registry import VARIANTS
from maillab.ports import free_port
from maillab.processes import ManagedProcess, ProcessError, wait_http

DEMO_PASSWORD_HASH = "pbkdf2:sha256:1000"  # cheap on purpose: the lab measures email, not hashing


@dataclass
class DemoRow:
    variant: str
    register_status: int
    register_ms: float
    time_to_inbox_ms: float | None
    verify_status: int | None
    note: str = ""


def _request(method: str, url: str, body: dict | None = None,
             timeout: float = 60) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Accept": "application/json", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), _json(response.headers, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), _json(exc.headers, exc.read())


def _json(headers: object, body: bytes) -> dict:
    if "json" not in str(getattr(headers, "get", lambda _k: "")("Content-Type")):
        return {}
    loaded = json.loads(body or b"null")
    return loaded if isinstance(loaded, dict) else {"items": loaded}


def _one_signup(variant: str, app_url: str, api_url: str, inbox_wait: float) -> DemoRow:
    to = f"demo-{variant}-{time.time_ns()}@maillab.test"
    _request("GET", f"{app_url}/register")  # warm the worker, as a person loads the form first
    sent_at = time.time()
    started = time.perf_counter()
    status, _ = _request("POST", f"{app_url}/register", {"email": to, "password": "demo pass 1"})
    register_ms = (time.perf_counter() - started) * 1000
    if variant == "baseline":
        return DemoRow(variant, status, register_ms, None, None, "sends nothing (the floor)")
    query = urllib.parse.urlencode({"to": to, "wait": inbox_wait})
    _, found = _request("GET", f"{api_url}/api/messages?{query}", timeout=inbox_wait + 10)
    messages = found.get("items", [])
    if not messages:
        return DemoRow(variant, status, register_ms, None, None,
                       f"no email within {inbox_wait:g} s")
    message = messages[0]
    inbox_ms = (message["received_at"] - sent_at) * 1000
    links = [link for link in message["links"] if "/verify/" in link]
    verify_status, _ = _request("GET", links[0]) if links else (None, None)
    return DemoRow(variant, status, register_ms, inbox_ms, verify_status)


def run_demo(latency: str, out_dir: Path, inbox_wait: float = 30.0,
             say: object = print) -> list[DemoRow]:
    """Run the demo; logs and ``demo.json`` go to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    smtp_port, api_port = free_port(), free_port()
    base_env = {**os.environ, "MAILLAB_SMTP_PORT": str(smtp_port),
                "MAILLAB_PASSWORD_HASH": DEMO_PASSWORD_HASH}
    processes: list[ManagedProcess] = []
    rows: list[DemoRow] = []
    try:
        smtp = ManagedProcess.maillab(
            "fakesmtp", ["smtp", "--port", str(smtp_port), "--api-port", str(api_port),
                         "--latency", latency, "--seed", "1"], base_env, out_dir / "smtp.log")
        processes.append(smtp)
        smtp.wait_for_line("HTTP API")
        api_url = f"http://127.0.0.1:{api_port}"
        for variant in VARIANTS:
            port = free_port()
            env = {**base_env, "MAILLAB_INSTANCE_DIR": str(out_dir / variant)}
            server = ManagedProcess.maillab(
                variant, ["serve", variant, "--port", str(port), "--workers", "1"], env,
                out_dir / f"{variant}.log")
            group = [server]
            if variant == "queued":
                group.append(ManagedProcess.maillab("worker", ["worker"], env,
                                                    out_dir / "worker.log"))
            processes.extend(group)
            app_url = f"http://127.0.0.1:{port}"
            wait_http(f"{app_url}/healthz", process=server)
            if variant == "queued":
                group[1].wait_for_line("consuming")
            say(f"{variant}: signing up one address ...")
            rows.append(_one_signup(variant, app_url, api_url, inbox_wait))
            for process in group:
                process.stop()
    finally:
        for process in processes:
            process.stop()
    (out_dir / "demo.json").write_text(json.dumps(
        {"smtp_latency": latency, "password_hash": DEMO_PASSWORD_HASH,
         "rows": [asdict(row) for row in rows]}, indent=2))
    return rows


__all__ = ["DemoRow", "ProcessError", "run_demo"]
