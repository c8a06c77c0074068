"""``maillab ui``: fakesmtp, every variant on its own port, and locust's web UI, to explore by hand.

The variant, the arrival rate, the SMTP latency and the scenario are chosen in the web UI's
start form; its Lab tab (loadtests/lab.py) shows what the test costs in email and sets
faults or crashes a process at a click. Each variant's processes are started from the same
recipes as a bench cell's (maillab/targetrun.py), and a small control server on loopback
lets the Lab tab see them (alive, live threads, queue depth) and signal one of them as the
bench's scenarios do: SIGKILL or SIGTERM, then started again a few seconds later.
Everything stops on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loadtests.lab import WEBUI_BUILD
from loadtests.target import Target, built_in
from maillab.bench import LOCUSTFILE
from maillab.ports import PortInUse, free_port, require_free
from maillab.processes import ManagedProcess, ProcessError, Supervisor, wait_http
from maillab.sampling import children_of, scraped, thread_count
from maillab.services import CellServices
from maillab.targetrun import Recipe, Sizing, Smtp, recipes
from maillab.targetrun import start as start_recipe

UI_PASSWORD_HASH = "pbkdf2:sha256:1000"


class UIError(RuntimeError):
    pass


def check_ports(smtp_port: int, api_port: int, web_port: int) -> None:
    plan = {"--smtp-port": smtp_port, "--smtp-api-port": api_port, "--web-port": web_port}
    try:
        for option, port in plan.items():
            require_free(option, port)
    except PortInUse as exc:
        raise UIError(str(exc)) from None


@dataclass
class Slot:
    """One process of a variant: how to start it, the running one, and what happened to it."""

    recipe: Recipe
    process: ManagedProcess | None = None
    state: str = "running"  # running, down (signalled), starting
    restarts: int = 0
    last: str = ""  # the last signal and when


@dataclass
class Variant:
    name: str
    url: str
    app: Slot
    consumers: list[Slot] = field(default_factory=list)


class Lab:
    """Every variant's processes under one supervisor, and the signals the Lab tab asks for."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.variants: dict[str, Variant] = {}
        self.lock = threading.RLock()  # the supervisor's list of children is shared
        self.due: list[tuple[float, Slot]] = []  # processes to start again, and when

    def start(self, slot: Slot) -> None:
        with self.lock:
            slot.state = "starting"
            slot.process = start_recipe(self.supervisor, slot.recipe)
            slot.state = "running"

    def check(self) -> None:
        """Raise when a process died that nobody signalled (the supervisor's check)."""
        with self.lock:
            self.supervisor.check()

    def tick(self) -> None:
        """Start again the processes whose time has come (in the main thread)."""
        now = time.monotonic()
        with self.lock:
            ready = [slot for due, slot in self.due if due <= now]
            self.due = [(due, slot) for due, slot in self.due if due > now]
        for slot in ready:
            try:
                self.start(slot)
                slot.restarts += 1
            except ProcessError as exc:
                slot.state = f"failed to start again: {exc}"

    def state(self, name: str) -> dict[str, Any]:
        variant = self.variants.get(name)
        if variant is None:
            raise LookupError(f"variant: {name!r} is not one of {', '.join(self.variants)}")
        with self.lock:
            app = _slot_state(variant.app)
            pid = variant.app.process.popen.pid if variant.app.process and \
                variant.app.state == "running" else None
            app["threads"] = (thread_count(pid) + sum(thread_count(c) for c in children_of(pid))
                              if pid else None)
            consumers = [_slot_state(c) for c in variant.consumers]
        queue = next((c.recipe for c in variant.consumers
                      if c.recipe.metrics_url and c.recipe.queue_depth), None)
        depth = scraped(queue.metrics_url, str(queue.queue_depth)) \
            if queue is not None and queue.metrics_url else None
        return {"variant": name, "url": variant.url, "app": app, "consumers": consumers,
                "queue_depth": depth}

    def signal(self, name: str, which: str, sig: int, restart_after_s: float) -> str:
        """Signal ``which`` of ``name`` (``app`` or ``consumer``: the first) and start it again
        after ``restart_after_s`` in a thread; the one-line detail for the log."""
        variant = self.variants.get(name)
        if variant is None:
            raise LookupError(f"variant: {name!r} is not one of {', '.join(self.variants)}")
        if which == "app":
            slot = variant.app
        elif which == "consumer":
            if not variant.consumers:
                raise LookupError(f"process: {name} has no consumer (its email is sent by the "
                                  "app itself)")
            slot = variant.consumers[0]
        else:
            raise ValueError(f"process: {which!r} is neither 'app' nor 'consumer'")
        with self.lock:
            if slot.state != "running" or slot.process is None:
                raise RuntimeError(f"{slot.recipe.name} is {slot.state}: wait until it runs "
                                   "again")
            pid = slot.process.popen.pid
            slot.state = "down"
            slot.last = f"{signal.Signals(sig).name} at {time.strftime('%H:%M:%S')}"
            self.supervisor.stop_with(slot.process, sig)
            slot.process = None

            # Started again by the main thread (tick): a child dies with the thread that
            # started it (the supervisor's parent-death signal), so not from this one.
            self.due.append((time.monotonic() + restart_after_s, slot))
        return (f"{signal.Signals(sig).name} to {name}'s {slot.recipe.name} (pid {pid}); "
                f"started again in {restart_after_s:g} s")


def _slot_state(slot: Slot) -> dict[str, Any]:
    process = slot.process
    return {"name": slot.recipe.name, "state": slot.state,
            "alive": bool(process and process.alive()),
            "pid": process.popen.pid if process else None,
            "restarts": slot.restarts, "last_signal": slot.last}


def control_server(lab: Lab) -> ThreadingHTTPServer:
    """The Lab tab's window on the processes, on a free loopback port."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:  # the tab polls every 2 s: keep logs quiet
            return

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/state":
                self._answer(404, {"error": f"no such path: {parts.path}"})
                return
            name = (parse_qs(parts.query).get("variant") or [""])[0]
            try:
                self._answer(200, lab.state(name))
            except LookupError as exc:
                self._answer(404, {"error": str(exc)})

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/signal":
                self._answer(404, {"error": f"no such path: {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(min(length, 10_000)) or b"{}")
                sig = int(body.get("signal", signal.SIGKILL))
                if sig not in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                    raise ValueError(f"signal: {sig} is not SIGKILL, SIGTERM or SIGINT")
                after = float(body.get("restart_after_s", 3.0))
                if not 0 <= after <= 60:
                    raise ValueError(f"restart_after_s: {after:g} is not within 0..60")
                detail = lab.signal(str(body.get("variant", "")), str(body.get("process", "")),
                                    sig, after)
            except LookupError as exc:
                self._answer(404, {"error": str(exc)})
            except RuntimeError as exc:
                self._answer(409, {"error": str(exc)})
            except (ValueError, TypeError, AttributeError) as exc:
                self._answer(400, {"error": str(exc)})
            else:
                self._answer(200, {"detail": detail})

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="lab-control", daemon=True).start()
    return server


def ui_variants(target: Target) -> list[str]:
    """The variants the UI runs side by side: those that need no private broker (the Celery
    variants need a RabbitMQ or a Redis each; ``maillab bench`` starts them)."""
    return [name for name, info in target.variants.items()
            if info.broker not in ("redis", "rabbitmq")]


def run_ui(run_dir: Path, smtp_port: int, api_port: int, web_port: int,
           say: Callable[[str], None], workers: int = 2, threads: int = 8,
           locust_args: list[str] | None = None) -> None:
    """Start everything and keep it running until a child dies that nobody signalled
    (:class:`UIError`) or SIGINT/SIGTERM arrives (:class:`~maillab.processes.Stopped`);
    every child is stopped either way."""
    check_ports(smtp_port, api_port, web_port)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "MAILLAB_SMTP_PORT": str(smtp_port)}
    target = built_in()
    sizing = Sizing(workers=workers, threads=threads, worker_threads=threads,
                    password_hash=UI_PASSWORD_HASH)
    smtp = Smtp("127.0.0.1", smtp_port)
    server = None
    try:
        with Supervisor(run_dir) as supervisor:
            lab = Lab(supervisor)
            supervisor.spawn("fakesmtp", ["smtp", "--port", str(smtp_port), "--api-port",
                                          str(api_port)], base, run_dir / "fakesmtp.log",
                             ).wait_for_line("HTTP API")
            for name in ui_variants(target):
                started = recipes(target, name, sizing, smtp, run_dir / name,
                                  CellServices(None, None))
                slots = [Slot(recipe) for recipe in started.recipes]
                lab.variants[name] = Variant(name, started.url, slots[0], slots[1:])
                for slot in slots:
                    lab.start(slot)
            server = control_server(lab)
            control = f"http://127.0.0.1:{server.server_address[1]}"
            pairs = ",".join(f"{v.name}={v.url}" for v in lab.variants.values())
            locust = supervisor.spawn("locust", [
                "-f", str(LOCUSTFILE), "--web-host", "127.0.0.1", "--web-port", str(web_port),
                "--host", lab.variants["threaded"].url, "--variant", "threaded",
                "--variant-hosts", pairs, "--smtp-api", f"http://127.0.0.1:{api_port}",
                "--lab-control", control, "--lab-dir", str(run_dir / "tests"),
                "--users", "1", "--spawn-rate", "1", "--arrival-rate", "10",
                *(locust_args or [])],
                base, run_dir / "locust.log", module="locust")
            wait_http(f"http://127.0.0.1:{web_port}/", process=locust)
            built = "" if (WEBUI_BUILD / "index.html").is_file() else \
                " (stock UI: make webui builds the Lab tab's charts and controls)"
            say(f"locust web UI   http://127.0.0.1:{web_port}/  (the Lab tab{built})")
            say(f"fakesmtp inbox  http://127.0.0.1:{api_port}/  (SMTP on 127.0.0.1:{smtp_port})")
            for variant in lab.variants.values():
                say(f"{variant.name:<15} {variant.url}/register")
            say(f"logs in {run_dir}; Ctrl-C stops everything")
            while True:
                lab.check()
                lab.tick()
                time.sleep(0.25)
    except ProcessError as exc:
        raise UIError(str(exc)) from None
    finally:
        if server is not None:
            server.shutdown()
