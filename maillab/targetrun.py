"""Starting a target's processes for one cell: the app (its command, or the URL it already
runs at) and the processes its variant runs (a queue consumer, an outbox relay), each with
its placeholders filled from the cell (ports, fakesmtp, a fresh database and instance folder,
the profile's sizing), in its own process group owned by the run's Supervisor.

Used by ``maillab bench`` for every target, the lab's own first (apps/target.toml), and by
``maillab target check``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.target import Target, TargetError, fill
from maillab.ports import free_port
from maillab.processes import ManagedProcess, ProcessError, Supervisor
from maillab.services import CellServices

LOG_LINES = 15  # of a process that was not ready, in the error


@dataclass(frozen=True)
class Smtp:
    """Where the target's mail goes (fakesmtp) and how it logs in."""

    host: str
    port: int
    tls: bool = False
    username: str = ""
    password: str = ""
    ca_file: str = ""


@dataclass(frozen=True)
class Sizing:
    """The profile's sizing, for the ${workers}-like placeholders."""

    workers: int = 2
    threads: int = 8
    worker_threads: int = 8
    consumers: int = 1
    password_hash: str = "pbkdf2:sha256:1000"


@dataclass
class Recipe:
    """How one process of a cell is started and when it is ready, so a scenario can start it
    again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    ready_url: str | None = None  # GET until it answers below 500 (the app)
    ready_line: str | None = None  # a regex its output matches (a consumer)
    ready_timeout_s: float = 30.0
    metrics_url: str | None = None
    queue_depth: str | None = None


@dataclass
class Started:
    url: str  # the app's base URL
    recipes: list[Recipe] = field(default_factory=list)  # the app's first where it is started


def values_for(target: Target, variant: str, sizing: Sizing, smtp: Smtp, folder: Path,
               services: CellServices, port: int) -> dict[str, str]:
    """Every placeholder the lab fills for ``variant``'s processes in the cell in ``folder``."""
    instance = folder / "instance"
    return {
        "port": str(port), "variant": variant, "number": "1",
        "workers": str(sizing.workers), "threads": str(sizing.threads),
        "worker_threads": str(sizing.worker_threads), "metrics_port": "",
        "smtp_host": smtp.host, "smtp_port": str(smtp.port), "smtp_tls": "1" if smtp.tls else "0",
        "smtp_username": smtp.username, "smtp_password": smtp.password,
        "smtp_ca_file": smtp.ca_file,
        "database_url": services.database_url or f"sqlite:///{instance / 'app.db'}",
        "instance_dir": str(instance), "queue_url": services.queue_url or "",
        "redis_url": services.redis_url or "", "rabbitmq_url": services.rabbitmq_url or "",
        "password_hash": sizing.password_hash, "python": sys.executable,
    }


def program(argv: list[str], env: dict[str, str], where: str) -> list[str]:
    """``argv`` with its program found: the lab's own environment first (its gunicorn, its
    maillab), then the PATH the process gets."""
    if not argv:
        raise TargetError(f"{where}: the command is empty")
    if os.sep in argv[0]:
        return argv
    search = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    found = shutil.which(argv[0], path=search)
    if found is None:
        raise TargetError(f"{where}: program {argv[0]!r} not found in the lab's environment "
                          "or on PATH")
    return [found, *argv[1:]]


def _argv(command: str, values: dict[str, str], where: str) -> list[str]:
    # Split first, then fill each word: a value with a space (a folder) stays one word.
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise TargetError(f"{where}: cannot split the command: {exc}") from None
    return [fill(word, values, where) for word in words]


def _env(values: dict[str, str], where: str, *tables: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for table in tables:
        env.update({key: fill(text, values, f"{where}.{key}") for key, text in table.items()})
    return env


def recipes(target: Target, variant: str, sizing: Sizing, smtp: Smtp, folder: Path,
            services: CellServices) -> Started:
    """What to start for ``variant`` in the cell in ``folder``: the app, then each process
    its variant runs (``sizing.consumers`` copies of the one that delivers its email)."""
    info = target.variant(variant)
    source = Path(target.source).name
    folder = folder.resolve()  # the target's processes run in its own folder
    if target.app.base_url is not None:
        return Started(target.app.base_url.rstrip("/"))
    port = free_port()
    (folder / "instance").mkdir(parents=True, exist_ok=True)  # ${instance_dir}, fresh per cell
    values = values_for(target, variant, sizing, smtp, folder, services, port)
    command = info.command or str(target.app.command)
    where = f"{source}: variants.{variant}.command" if info.command else f"{source}: app.command"
    env = _env(values, f"{source}: app.env", target.app.env, info.env)
    argv = program(_argv(command, values, where), env, where)
    url = f"http://127.0.0.1:{port}"
    app = Recipe(variant, argv, env, _cwd(target, target.app.cwd), folder / "app.log",
                 ready_url=url + target.app.ready,
                 ready_timeout_s=target.app.ready_timeout_s)
    started = Started(url, [app])
    for name in info.runs:
        process = target.processes[name]
        copies = sizing.consumers if name == info.delivered_by else 1
        for number in range(1, copies + 1):
            mine = {**values, "number": str(number), "metrics_port": str(free_port())}
            where = f"{source}: processes.{name}"
            penv = _env(mine, f"{where}.env", target.app.env, info.env, process.env)
            label = f"{name}-{number}" if copies > 1 else name
            started.recipes.append(Recipe(
                label, program(_argv(process.command, mine, f"{where}.command"), penv, where),
                penv, _cwd(target, process.cwd), folder / f"{label}.log",
                ready_line=process.ready_line, ready_timeout_s=process.ready_timeout_s,
                metrics_url=fill(process.metrics, mine, f"{where}.metrics")
                if process.metrics else None, queue_depth=process.queue_depth))
    return started


def _cwd(target: Target, cwd: str | None) -> Path:
    return (target.folder / cwd).resolve() if cwd else target.folder


def reset_database(target: Target, started: Started, folder: Path, timeout_s: float = 120.0,
                   ) -> None:
    """Run the target's ``database.reset`` command (with the app's environment) before the
    cell's app starts; a failure names the command and its last lines."""
    if not target.database.reset or not started.recipes:
        return
    app = started.recipes[0]
    where = f"{Path(target.source).name}: database.reset"
    argv = program(shlex.split(target.database.reset), app.env, where)
    log = folder / "database-reset.log"
    with open(log, "w", encoding="utf-8") as out:
        try:
            done = subprocess.run(argv, env=app.env, cwd=app.cwd, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{where}: still running after {timeout_s:g} s; see {log}") from None
    if done.returncode != 0:
        raise TargetError(f"{where}: exited {done.returncode}: {last_lines(log)}")


def start(supervisor: Supervisor, recipe: Recipe) -> ManagedProcess:
    """Start ``recipe`` as a child of the run and wait until it is ready."""
    process = supervisor.spawn_program(recipe.name, recipe.argv, recipe.env, recipe.log,
                                       recipe.cwd)
    try:
        ready(process, recipe)
    except BaseException:
        supervisor.stop(process)
        raise
    return process


def ready(process: ManagedProcess, recipe: Recipe) -> None:
    if recipe.ready_line is not None:
        try:
            process.wait_for_line(recipe.ready_line, timeout=recipe.ready_timeout_s)
        except ProcessError:
            raise ProcessError(_not_ready(process, f"printed no line matching "
                                          f"{recipe.ready_line!r}")) from None
    if recipe.ready_url is not None:
        wait_ready(recipe.ready_url, recipe.ready_timeout_s, process)


def wait_ready(url: str, timeout_s: float, process: ManagedProcess | None = None) -> None:
    """Until ``url`` answers anything below 500 (a redirect to a login page is an app that is
    up), or raise with the process's last log lines."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    opener = urllib.request.build_opener(_NoRedirect)
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise ProcessError(_not_ready(process, f"exited with {process.popen.returncode}"))
        try:
            with opener.open(url, timeout=2) as response:
                if response.status < 500:
                    return
                last = f"answered {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = f"answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.05)
    if process is None:
        raise ProcessError(f"{url} did not answer below 500 within {timeout_s:g} s ({last})")
    raise ProcessError(_not_ready(process, f"{url} did not answer below 500 within "
                                  f"{timeout_s:g} s ({last})"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kw: object) -> None:
        return None


def _not_ready(process: ManagedProcess, what: str) -> str:
    return f"{process.name} was not ready: {what}; its last lines ({process.log_path}): " \
           f"{last_lines(process.log_path)}"


def last_lines(log: Path, count: int = LOG_LINES) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    kept = [re.sub(r"\s+", " ", line).strip() for line in lines[-count:] if line.strip()]
    return " | ".join(kept) or "(empty)"
