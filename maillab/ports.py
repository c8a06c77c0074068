"""Small helpers about local TCP ports."""

from __future__ import annotations

import socket


class PortInUse(RuntimeError):
    """A port the user asked for is taken; the message names the option and the address."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True if ``host:port`` cannot be bound right now (TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def require_free(option: str, port: int, host: str = "127.0.0.1") -> None:
    """Raise :class:`PortInUse` ("--port 8000: 127.0.0.1:8000 is already in use") if taken."""
    if port and port_in_use(host, port):
        raise PortInUse(f"{option} {port}: {host}:{port} is already in use")
