"""Free TCP ports on the loopback interface for test services.

The kernel picks the ports (bind to port 0), so they come from the ephemeral
range and never clash with well-known defaults (5432, 8020, 9866, 9870, ...).
Between closing the probe socket and the service binding the port another
process could grab it: services retry with fresh ports when a bind fails.
Ports handed out by this process are remembered so that two services started
by one test session never get the same port.
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct TCP ports that are free on ``host`` right now."""
    if count < 1:
        raise ValueError("count must be >= 1")
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _lock:
            attempts = 0
            while len(ports) < count:
                attempts += 1
                if attempts > count * 50:
                    raise RuntimeError(f"could not find {count} free ports on {host}")
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # No SO_REUSEADDR: the probe must fail if anything holds the port.
                s.bind((host, 0))
                port = s.getsockname()[1]
                socks.append(s)  # keep it bound so the next probe gets another port
                if port in _handed_out:
                    continue
                ports.append(port)
            _handed_out.update(ports)
    finally:
        for s in socks:
            s.close()
    return ports


def free_port(host: str = LOOPBACK) -> int:
    """Return one TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if nothing listens on (and nothing holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_is_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
