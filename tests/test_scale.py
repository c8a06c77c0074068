"""Beyond one process: /metrics summed over gunicorn's workers, locust distributed with every
sample kept, and the bench on PostgreSQL and Redis with several consumers."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from maillab.cli import cli
from maillab.ports import free_port
from maillab.processes import ManagedProcess
from tests.conftest import FAST_HASH, wait_until
from tests.services import postgres_admin
from tests.test_bench import processes_of, tiny_profile


def _post_json(url: str, body: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json",
                                              "Connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def _register_requests(base: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    return sum(float(value) for value in re.findall(
        r"^maillab_register_requests_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.mark.slow
def test_metrics_sum_over_every_gunicorn_worker(
        spawn: Callable[..., ManagedProcess], tmp_path: Path) -> None:
    """Whichever worker answers the scrape, it counts every worker's sign-ups; the folder
    the workers share is made at start and gone at exit."""
    port, instance = free_port(), tmp_path / "instance"
    env = {**os.environ, "MAILLAB_INSTANCE_DIR": str(instance),
           "MAILLAB_PASSWORD_HASH": FAST_HASH, "MAILLAB_SMTP_PORT": str(free_port())}
    server = spawn(["serve", "baseline", "--port", str(port), "--workers", "2"], env,
                   "listening on")
    base = f"http://127.0.0.1:{port}"
    # Which worker accepts a connection is the kernel's choice, and one idle worker can take
    # them all: sign-ups go eight at a time (so both workers are asked) until each worker
    # has counted some, bounded.
    made, writers = 0, set[str]()
    with ThreadPoolExecutor(8) as pool:
        while len(writers) < 2 and made < 400:
            statuses = list(pool.map(lambda i: _post_json(f"{base}/register", {
                "email": f"w{i}@maillab.test", "password": "correct horse battery"}),
                range(made, made + 40)))
            assert statuses == [202] * 40  # accepted: the email is on its way
            made += 40
            [folder] = instance.glob("metrics-*")
            # Each worker that counted wrote its own file.
            writers = {re.sub(r"\D", "", f.name) for f in folder.glob("counter_*.db")}
    assert len(writers) == 2, sorted(f.name for f in folder.iterdir())
    # Made before the app's own check of its instance folder: still private (it holds the
    # secret key and the password hashes).
    assert stat.S_IMODE(instance.stat().st_mode) == stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [_register_requests(base) for _ in range(6)] == [float(made)] * 6
    # A graceful reload (SIGHUP): new workers replace the old ones, which exit; the folder
    # and the old workers' counts stay (an exit hook inherited by the workers once removed
    # the folder, and every request that touched a gauge answered 500).
    old = _workers(server.popen.pid)
    server.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: len(_workers(server.popen.pid)) == 2
               and not old & _workers(server.popen.pid), what="the old workers replaced")
    statuses = [_post_json(f"{base}/register", {"email": f"r{i}@maillab.test",
                                                "password": "correct horse battery"})
                for i in range(10)]
    assert statuses == [202] * 10 and folder.is_dir()
    assert _register_requests(base) == made + 10.0
    server.stop()
    wait_until(lambda: not folder.exists(), what="the metrics folder removed at exit")


def _workers(pid: int) -> set[int]:
    """gunicorn's worker processes: the master's children."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


@pytest.mark.slow
def test_a_distributed_load_keeps_every_sample_and_the_app_agrees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two locust workers share one schedule: every arrival counted once, every timing
    kept (the merge's count equals the workers' own), and the app's /metrics, summed over
    its two workers, saw as many POST /register as the load recorded answered."""
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "two.toml", variants='["threaded"]', load_processes=2,
                           max_start_lag_ms=200)  # counting is the point here, not timing
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out",
                                      str(run_dir)])
    assert result.exit_code == 0, result.output
    [cell] = json.loads((run_dir / "results.json").read_text())["cells"]
    assert cell["valid"], cell["warnings"]
    load = cell["load_generator"]
    assert load["processes"] == 3  # the master and two workers
    assert load["samples"] == load["requests"] > 0
    assert cell["arrivals"]["dropped"] == 0 and cell["arrivals"]["offered"] >= 20
    assert cell["delivery"]["missing"] == 0
    from loadtests.cellfiles import read_registrations

    registrations = read_registrations(run_dir / cell["files"])
    assert len({r.email for r in registrations}) == len(registrations)
    assert cell["resources"]["register_requests"] == sum(
        1 for r in registrations if r.status is not None)
    assert not list((run_dir / cell["files"]).glob("*.part-*"))
    assert processes_of(run_dir) == []


def _bench_databases() -> list[str]:
    _, admin = postgres_admin()
    with admin:
        rows = admin.execute("SELECT datname FROM pg_database "
                             "WHERE datname LIKE 'maillab_bench_%'").fetchall()
    return [row[0] for row in rows]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_the_bench_runs_on_postgresql_and_redis_with_two_consumers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh PostgreSQL database per cell (dropped after), a private redis-server for the
    run (stopped after), two workers and two relays: every email delivered once."""
    admin, connection = postgres_admin()
    connection.close()
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    monkeypatch.setenv("MAILLAB_POSTGRES_URL", admin)
    monkeypatch.chdir(tmp_path)
    before = set(_bench_databases())
    profile = tiny_profile(tmp_path / "scale.toml", variants='["queued", "outbox"]',
                           database='"postgresql"', queue='"redis"', consumers=2,
                           # Seven processes on two cores: this test is about counting and
                           # clean-up, not the schedule's timing (the start lag bound).
                           max_start_lag_ms=200)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--out",
                                      str(run_dir)])
    assert result.exit_code == 0, result.output
    document = json.loads((run_dir / "results.json").read_text())
    services = document["environment"]["services"]
    assert services["database"].startswith("PostgreSQL ")
    assert "private redis-server" in services["queue"]
    for cell in document["cells"]:
        assert cell["valid"], cell["warnings"]
        delivery = cell["delivery"]
        assert delivery["delivered"] == delivery["registered"] > 0
        assert delivery["duplicates"] == 0
    logs = sorted(p.name for p in (run_dir / document["cells"][0]["files"]).glob("*.log"))
    assert "worker-1.log" in logs and "worker-2.log" in logs
    assert set(_bench_databases()) == before  # every cell's database dropped
    assert processes_of(run_dir) == []  # redis-server too


def test_a_server_that_is_not_there_is_named_before_any_cell(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    profile = tiny_profile(tmp_path / "p.toml", variants='["queued"]')
    closed = free_port()
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--database-url",
                                      f"postgresql+psycopg://nobody@127.0.0.1:{closed}/x",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"no PostgreSQL at postgresql+psycopg://nobody@127.0.0.1:{closed}/x" in result.output
    assert "--database-url" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["bench", "--profile", str(profile), "--queue-url",
                                      "amqp://127.0.0.1/", "--out", str(tmp_path / "run2")])
    assert result.exit_code == 2 and "--queue-url" in result.output
    assert "must be a redis:// or rediss:// or unix:// URL" in result.output
