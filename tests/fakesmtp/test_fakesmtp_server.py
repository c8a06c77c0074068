"""FakeSMTP lifecycle: ports, start errors, stopping with work in flight."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from fakesmtp.config import Config, ConfigError
from fakesmtp.server import FakeSMTP, StartError
from maillab.ports import port_in_use


def _bindable(port: int) -> bool:
    return not port_in_use("127.0.0.1", port)


def test_context_manager_binds_free_ports_and_frees_them() -> None:
    with FakeSMTP(seed=1) as server:
        assert server.api_port is not None  # None only when asked for no HTTP API
        ports = (server.smtp_port, server.api_port)
        assert all(p > 0 for p in ports) and ports[0] != ports[1]
        assert server.api_url == f"http://127.0.0.1:{server.api_port}"
        assert not _bindable(server.smtp_port)
    assert _bindable(ports[0]) and _bindable(ports[1])
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="start"):
        server.start()  # a stopped server stays stopped
    with pytest.raises(RuntimeError, match="not running"):
        server.messages()


def test_port_in_use_raises_and_leaves_nothing_running() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(StartError, match=f"SMTP on 127.0.0.1:{taken}: Address already in use"):
            FakeSMTP(smtp_port=taken).start()
        free = FakeSMTP(api_port=taken)
        with pytest.raises(StartError, match="HTTP API"):
            free.start()
    assert free.smtp_port == 0 or _bindable(free.smtp_port)
    assert not any(t.name == "fakesmtp" for t in threading.enumerate())


def test_without_api() -> None:
    with FakeSMTP(api_port=None) as server:
        assert server.api_port is None and server.smtp_port > 0
        assert server.stats()["received"] == 0


def test_seed_is_kept_or_chosen() -> None:
    assert FakeSMTP(seed=5).initial_config.seed == 5
    assert FakeSMTP(config=Config.build(seed=9)).initial_config.seed == 9
    assert isinstance(FakeSMTP().initial_config.seed, int)


def test_patch_from_python_validates() -> None:
    with FakeSMTP(seed=1) as server:
        config = server.patch_config({"latency": {"eom": "500ms"}})
        assert str(config.latency["eom"]) == "500ms" and server.config is config
        with pytest.raises(ConfigError) as info:
            server.patch_config({"latency": {"eom": "slowly"}})
        assert info.value.field == "latency.eom"
        server.reset()
        assert server.config.latency == {}


def test_stop_is_prompt_with_a_hung_session_and_a_pending_long_poll(until) -> None:
    server = FakeSMTP(config=Config.build(faults=["id=h,phase=ehlo,action=hang"]), seed=1)
    server.start()
    hung = socket.create_connection(("127.0.0.1", server.smtp_port), timeout=10)
    hung.recv(100)
    hung.sendall(b"EHLO me\r\n")
    poll_result: list[object] = []

    def long_poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=30)
        try:
            conn.request("GET", "/api/messages?to=nobody@x.test&wait=60")
            poll_result.append(conn.getresponse().status)
        except (OSError, http.client.HTTPException) as err:
            poll_result.append(err)
        finally:
            conn.close()

    poller = threading.Thread(target=long_poll)
    poller.start()
    assert until(lambda: server.stats()["connections"]["open"] == 1)
    assert until(lambda: server.stats()["long_polls_waiting"] == 1)
    started = time.monotonic()
    server.stop()
    stopped_in = time.monotonic() - started
    poller.join(10)
    # The hang never ends and the poll would wait 60 s, so returning well inside that shows
    # stop waited for neither; 30 s is a ceiling against them, not a claim about speed.
    assert stopped_in < 30.0
    assert hung.recv(100) == b""  # the hung session was closed, not left dangling
    hung.close()
    assert poll_result == [200]  # answered (empty), not cut off
