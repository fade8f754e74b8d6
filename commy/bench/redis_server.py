"""A throw-away ``redis-server`` on a free loopback port, for side-by-side benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(extra_args: tuple[str, ...] = ()) -> Iterator[tuple[int | None, str | None]]:
    """Yield ``(port, None)`` with a running server, or ``(None, reason)`` if impossible."""
    exe = shutil.which("redis-server")
    if exe is None:
        yield None, "redis-server is not installed"
        return
    try:
        import redis  # noqa: F401
    except ImportError:
        yield None, "redis-py is not installed"
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="commy-redis-") as tmp:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp, *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        yield None, "redis-server did not start"
                        return
                    time.sleep(0.05)
            yield port, None
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
