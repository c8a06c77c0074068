"""The celery variant on real brokers: a private RabbitMQ and a private redis-server (skipped,
saying why, where the binary is missing), a real ``maillab celery-worker`` process killed with
SIGKILL while it is inside the SMTP conversation, as the consumer-crash scenario does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from maillab.brokers import Broker, BrokerUnavailable, celery_url, start_broker
from maillab.processes import ManagedProcess, Supervisor
from tests.conftest import wait_until
from tests.flow_helpers import path_of, register_json
from tests.smtp_sink import Sink

pytest.importorskip("celery", reason="the celery extra is not installed")
# One process for the module: each broker is started once, and the workers it kills are its own.
pytestmark = [pytest.mark.xdist_group("celery"), pytest.mark.slow]

VISIBILITY_TIMEOUT_S = 3.0


def _broker(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    folder = tmp_path_factory.mktemp(kind)
    with Supervisor(folder) as supervisor:
        try:
            broker = start_broker(kind, supervisor, folder / "server")
        except BrokerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            yield broker
        finally:
            broker.close()


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker("rabbitmq", tmp_path_factory)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker("redis", tmp_path_factory)


def _clear(broker: Broker) -> None:
    from maillab.brokers import clear

    clear(broker)


@pytest.fixture
def celery_app(make_app: Callable[..., Flask], sink: Sink,
               tmp_path: Path) -> Callable[..., tuple[Flask, dict[str, str]]]:
    """A celery app on ``broker`` with ``acks``, and the environment its worker needs."""

    def build(broker: Broker, acks: str, **config: Any) -> tuple[Flask, dict[str, str]]:
        _clear(broker)
        url = celery_url(broker)
        app = make_app("celery", CELERY_BROKER_URL=url, CELERY_ACKS=acks,
                       QUEUE_RETRY_DELAY=0.2, **config)
        env = {**os.environ, "MAILLAB_CELERY_BROKER_URL": url, "MAILLAB_CELERY_ACKS": acks,
               "MAILLAB_SMTP_PORT": str(sink.port), "MAILLAB_SMTP_TIMEOUT": "5",
               "MAILLAB_INSTANCE_DIR": str(tmp_path / "worker"),
               "MAILLAB_QUEUE_RETRY_DELAY": "0.2"}
        env.update({f"MAILLAB_{k}": str(v) for k, v in config.items()})
        return app, env

    return build


def _worker(spawn: Callable[..., ManagedProcess], env: dict[str, str]) -> ManagedProcess:
    return spawn(["celery-worker", "--threads", "2"], env, "consuming")


def _kill_mid_send(spawn: Callable[..., ManagedProcess], sink: Sink, app: Flask,
                   env: dict[str, str], to: str) -> float:
    """Sign ``to`` up, let a worker reach DATA, SIGKILL it there; the SMTP server then lets
    DATA through. Returns when the killed attempt began."""
    sink.handler.hold = threading.Event()
    worker = _worker(spawn, env)
    assert register_json(app.test_client(), to).status_code == 202
    wait_until(lambda: sink.handler.data_attempts == 1, timeout=20, what="the worker in DATA")
    began = time.time()
    worker.stop(timeout=0, sig=signal.SIGKILL)
    sink.handler.hold.set()
    return began


def test_early_acks_on_rabbitmq_lose_the_email_a_killed_worker_was_sending(
        rabbitmq: Broker, celery_app: Callable[..., Any], sink: Sink,
        spawn: Callable[..., ManagedProcess]) -> None:
    from apps.celery.worker import broker_depth

    app, env = celery_app(rabbitmq, "early")
    _kill_mid_send(spawn, sink, app, env, "early@maillab.test")
    _worker(spawn, env)
    # The task was acknowledged as it started: the broker has nothing to give the new worker.
    assert broker_depth(app.extensions["mailer"]) == 0
    with pytest.raises(AssertionError, match="no email for early@maillab.test"):
        sink.handler.wait_for("early@maillab.test", timeout=5)
    assert sink.handler.data_attempts == 1


def test_late_acks_on_rabbitmq_deliver_it_again_at_once(
        rabbitmq: Broker, celery_app: Callable[..., Any], sink: Sink,
        spawn: Callable[..., ManagedProcess]) -> None:
    app, env = celery_app(rabbitmq, "late")
    _kill_mid_send(spawn, sink, app, env, "late@maillab.test")
    _worker(spawn, env)
    # RabbitMQ gave the unacknowledged task out again when the connection died.
    [message] = sink.handler.wait_for("late@maillab.test", timeout=30)
    assert sink.handler.data_attempts == 2
    assert message.headers["X-Maillab-Id"]


def test_late_acks_on_redis_bring_it_back_after_the_visibility_timeout(
        redis: Broker, celery_app: Callable[..., Any], sink: Sink,
        spawn: Callable[..., ManagedProcess]) -> None:
    app, env = celery_app(redis, "late", CELERY_VISIBILITY_TIMEOUT=VISIBILITY_TIMEOUT_S)
    began = _kill_mid_send(spawn, sink, app, env, "vt@maillab.test")
    # A worker that starts at once finds the task still invisible (kombu gives out an
    # unacknowledged task only once it is older than the timeout): none is sent yet.
    early = _worker(spawn, env)
    time.sleep(1)
    assert sink.handler.data_attempts == 1
    early.stop(timeout=15, sig=signal.SIGTERM)
    # Past the timeout, the next worker's look at the unacknowledged tasks restores it.
    time.sleep(max(0.0, began + VISIBILITY_TIMEOUT_S + 0.5 - time.time()))
    _worker(spawn, env)
    [message] = sink.handler.wait_for("vt@maillab.test", timeout=30)
    assert message.received_at - began >= VISIBILITY_TIMEOUT_S
    assert sink.handler.data_attempts == 2


def test_a_transient_failure_is_retried_and_a_permanent_one_is_not(
        rabbitmq: Broker, celery_app: Callable[..., Any], sink: Sink,
        spawn: Callable[..., ManagedProcess]) -> None:
    app, env = celery_app(rabbitmq, "early")
    worker = _worker(spawn, env)
    sink.handler.replies.append("451 try again")
    client = app.test_client()
    assert register_json(client, "retry@maillab.test").status_code == 202
    [message] = sink.handler.wait_for("retry@maillab.test", timeout=30)  # 451, then accepted
    assert client.get(path_of(message.links[0])).status_code == 200  # the link verifies
    sink.handler.replies.append("550 no such user")
    assert register_json(client, "refused@maillab.test").status_code == 202
    wait_until(lambda: sink.handler.data_attempts >= 3, timeout=20, what="the 550 attempt")
    time.sleep(1)  # a retry of the 550 would come 0.2 s later
    assert sink.handler.data_attempts == 3
    worker.stop(timeout=15, sig=signal.SIGTERM)
    assert "1 delivered, 1 failed, 1 retries" in worker.log_path.read_text(encoding="utf-8")


def test_a_sign_up_the_broker_cannot_take_is_a_503(
        make_app: Callable[..., Flask]) -> None:
    from maillab.ports import free_port

    app = make_app("celery", CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    response = register_json(app.test_client(), "down@maillab.test")
    assert response.status_code == 503


def _run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILLAB_")}
    # The timeout only stops a regression that starts consuming instead of failing.
    return subprocess.run([sys.executable, "-m", "maillab", "celery-worker"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_the_worker_names_a_broker_it_cannot_reach_and_a_bad_setting(tmp_path: Path) -> None:
    from maillab.ports import free_port

    env = {"MAILLAB_INSTANCE_DIR": str(tmp_path),
           "MAILLAB_CELERY_BROKER_URL": f"amqp://guest:secret@127.0.0.1:{free_port()}//"}
    result = _run_worker(env)
    assert result.returncode != 0
    assert "MAILLAB_CELERY_BROKER_URL amqp://guest:***@127.0.0.1" in result.stderr
    assert "cannot reach the broker" in result.stderr and "Traceback" not in result.stderr
    result = _run_worker({**env, "MAILLAB_CELERY_ACKS": "sometimes"})
    assert "MAILLAB_CELERY_ACKS must be one of early, late, got 'sometimes'" in result.stderr
    result = _run_worker({**env, "MAILLAB_CELERY_BROKER_URL": "kafka://x"})
    assert "MAILLAB_CELERY_BROKER_URL must start with amqp:// or redis://" in result.stderr


def test_a_stopped_rabbitmq_leaves_no_process_behind(
        tmp_path: Path) -> None:
    with Supervisor(tmp_path) as supervisor:
        try:
            broker = start_broker("rabbitmq", supervisor, tmp_path / "server")
        except BrokerUnavailable as exc:
            pytest.skip(str(exc))
        # The Erlang VM under the script has the node's name in its environment.
        node = "RABBITMQ_NODENAME=" + broker.env["RABBITMQ_NODENAME"]
        [epmd] = [helper.popen.pid for helper in broker.helpers]
        assert set(_processes_with(node)) - {epmd}
        broker.stop()
        assert set(_processes_with(node)) == {epmd}  # the port mapper stays for the restart
        broker.start()  # again on the same port and folder: a restart keeps its data
        assert set(_processes_with(node)) - {epmd}
        broker.close()
        assert not _processes_with(node)
        assert not _processes_with(f"-port {broker.env['ERL_EPMD_PORT']}")


def _processes_with(text: str) -> list[int]:
    """Every process whose command line or environment holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            seen = b" ".join((entry / name).read_bytes().replace(b"\0", b" ")
                             for name in ("cmdline", "environ")).decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if text in seen:
            found.append(int(entry.name))
    return found
