"""``maillab ui``: fakesmtp, every variant on its own port, and locust's web UI, to explore by hand.

The variant is chosen in the locust UI (the "variant" field), as are the SMTP latency and
faults, which locust applies to fakesmtp at every start. Everything stops on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from apps.core.registry import VARIANTS
from maillab.bench import LOCUSTFILE
from maillab.ports import PortInUse, require_free
from maillab.processes import ManagedProcess, ProcessError, wait_http

UI_PASSWORD_HASH = "pbkdf2:sha256:1000"


class UIError(RuntimeError):
    pass


def check_ports(smtp_port: int, api_port: int, app_port: int, web_port: int) -> None:
    plan = {"--smtp-port": smtp_port, "--smtp-api-port": api_port, "--web-port": web_port}
    for offset, variant in enumerate(VARIANTS):
        plan[f"--app-port (+{offset}, {variant})"] = app_port + offset
    try:
        for option, port in plan.items():
            require_free(option, port)
    except PortInUse as exc:
        raise UIError(str(exc)) from None


def run_ui(run_dir: Path, smtp_port: int, api_port: int, app_port: int, web_port: int,
           say: Callable[[str], None]) -> None:
    check_ports(smtp_port, api_port, app_port, web_port)
    run_dir.mkdir(parents=True, exist_ok=True)
    tag = {"MAILLAB_RUN_DIR": str(run_dir.resolve())}
    base = {**os.environ, **tag, "MAILLAB_SMTP_PORT": str(smtp_port),
            "MAILLAB_PASSWORD_HASH": UI_PASSWORD_HASH}
    children: list[ManagedProcess] = []

    def spawn(name: str, args: list[str], env: dict[str, str], module: str = "maillab") \
            -> ManagedProcess:
        process = ManagedProcess(name, [sys.executable, "-m", module, *args], env,
                                 run_dir / f"{name}.log")
        children.append(process)
        return process

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in stop_signals}
    try:
        spawn("fakesmtp", ["smtp", "--port", str(smtp_port), "--api-port", str(api_port)],
              base).wait_for_line("HTTP API")
        hosts = {}
        for offset, variant in enumerate(VARIANTS):
            port = app_port + offset
            env = {**base, "MAILLAB_INSTANCE_DIR": str(run_dir / variant)}
            server = spawn(variant, ["serve", variant, "--port", str(port)], env)
            if variant == "queued":
                spawn("worker", ["worker"], env).wait_for_line("consuming")
            hosts[variant] = f"http://127.0.0.1:{port}"
            wait_http(f"{hosts[variant]}/healthz", process=server)
        pairs = ",".join(f"{name}={url}" for name, url in hosts.items())
        locust = spawn("locust", ["-f", str(LOCUSTFILE), "--web-host", "127.0.0.1",
                                  "--web-port", str(web_port), "--host", hosts["threaded"],
                                  "--variant", "threaded", "--variant-hosts", pairs,
                                  "--smtp-api", f"http://127.0.0.1:{api_port}"],
                       base, module="locust")
        wait_http(f"http://127.0.0.1:{web_port}/", process=locust)
        say(f"locust web UI   http://127.0.0.1:{web_port}/  (pick the variant there)")
        say(f"fakesmtp inbox  http://127.0.0.1:{api_port}/  (SMTP on 127.0.0.1:{smtp_port})")
        for variant, url in hosts.items():
            say(f"{variant:<15} {url}/register")
        say(f"logs in {run_dir}; Ctrl-C stops everything")
        while all(child.alive() for child in children):
            time.sleep(0.5)
        dead = next(child for child in children if not child.alive())
        raise UIError(f"{dead.name} exited with {dead.popen.returncode}; see {dead.log_path}")
    except ProcessError as exc:
        raise UIError(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in reversed(children):
            child.stop()


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
