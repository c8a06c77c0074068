"""``maillab ui``: fakesmtp, every variant on its own port, and locust's web UI, to explore by hand.

The variant is chosen in the locust UI (the "variant" field), as are the SMTP latency and
faults, which locust applies to fakesmtp at every start. Everything stops on Ctrl-C.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from loadtests.target import built_in
from maillab.bench import LOCUSTFILE
from maillab.ports import PortInUse, require_free
from maillab.processes import ManagedProcess, ProcessError, Supervisor, wait_http

UI_PASSWORD_HASH = "pbkdf2:sha256:1000"


class UIError(RuntimeError):
    pass


def check_ports(smtp_port: int, api_port: int, app_port: int, web_port: int) -> None:
    plan = {"--smtp-port": smtp_port, "--smtp-api-port": api_port, "--web-port": web_port}
    for offset, variant in enumerate(built_in().variants):
        plan[f"--app-port (+{offset}, {variant})"] = app_port + offset
    try:
        for option, port in plan.items():
            require_free(option, port)
    except PortInUse as exc:
        raise UIError(str(exc)) from None


def run_ui(run_dir: Path, smtp_port: int, api_port: int, app_port: int, web_port: int,
           say: Callable[[str], None]) -> None:
    """Start everything and keep it running until a child dies (:class:`UIError`) or
    SIGINT/SIGTERM arrives (:class:`~maillab.processes.Stopped`); every child is stopped
    either way."""
    check_ports(smtp_port, api_port, app_port, web_port)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "MAILLAB_SMTP_PORT": str(smtp_port),
            "MAILLAB_PASSWORD_HASH": UI_PASSWORD_HASH}
    try:
        with Supervisor(run_dir) as supervisor:
            def spawn(name: str, args: list[str], env: dict[str, str],
                      module: str = "maillab") -> ManagedProcess:
                return supervisor.spawn(name, args, env, run_dir / f"{name}.log", module)

            spawn("fakesmtp", ["smtp", "--port", str(smtp_port), "--api-port", str(api_port)],
                  base).wait_for_line("HTTP API")
            hosts = {}
            for offset, (name, variant) in enumerate(built_in().variants.items()):
                port = app_port + offset
                env = {**base, "MAILLAB_INSTANCE_DIR": str(run_dir / name)}
                server = spawn(name, ["serve", name, "--port", str(port)], env)
                if variant.consumer is not None:
                    spawn(variant.consumer, [variant.consumer], env).wait_for_line("consuming")
                hosts[name] = f"http://127.0.0.1:{port}"
                wait_http(f"{hosts[name]}/healthz", process=server)
            pairs = ",".join(f"{name}={url}" for name, url in hosts.items())
            locust = spawn("locust", ["-f", str(LOCUSTFILE), "--web-host", "127.0.0.1",
                                      "--web-port", str(web_port), "--host", hosts["threaded"],
                                      "--variant", "threaded", "--variant-hosts", pairs,
                                      "--smtp-api", f"http://127.0.0.1:{api_port}"],
                           base, module="locust")
            wait_http(f"http://127.0.0.1:{web_port}/", process=locust)
            say(f"locust web UI   http://127.0.0.1:{web_port}/  (pick the variant there)")
            say(f"fakesmtp inbox  http://127.0.0.1:{api_port}/  (SMTP on 127.0.0.1:{smtp_port})")
            for name, url in hosts.items():
                say(f"{name:<15} {url}/register")
            say(f"logs in {run_dir}; Ctrl-C stops everything")
            while True:
                supervisor.check()
                time.sleep(0.5)
    except ProcessError as exc:
        raise UIError(str(exc)) from None
