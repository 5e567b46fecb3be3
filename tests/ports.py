"""Loopback ports for the servers tests start, chosen outside the kernel's ephemeral range.

A port the kernel hands out for port 0 can be handed out again, to any process (a client's own
end of a connection included), between the moment a test reads it and the moment its server
binds it. Ports below the ephemeral range (32768-60999 on Linux) are never handed out that way:
here one is picked at random from 20000-32767 (a worker's own slice of it under pytest-xdist),
checked free, and not given twice by this process.
"""

from __future__ import annotations

import os
import random
import socket
import threading

_RANGE = (20000, 32767)
# Under pytest-xdist each worker ("gw0", "gw1", ...) takes its own slice of the range, so two
# workers never pick the same port between its check and its bind.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    _SLICES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _WIDTH = (_RANGE[1] - _RANGE[0] + 1) // max(_SLICES, 1)
    _FIRST = _RANGE[0] + int(_WORKER[2:]) * _WIDTH
    _RANGE = (_FIRST, _FIRST + _WIDTH - 1)
_given: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on `host` (loopback), outside the ephemeral range."""
    with _lock:
        for _ in range(1000):
            port = random.randint(*_RANGE)
            if port in _given:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port in {_RANGE[0]}-{_RANGE[1]} on {host}")
