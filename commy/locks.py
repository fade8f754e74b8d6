"""Cross-process byte-range locks on an open file (Linux open-file-description locks).

OFD locks belong to the open file description, not to the process: two opens in one
process exclude each other, closing an unrelated descriptor does not drop them, and a
process that dies releases them (so a crashed writer never leaves a lock behind).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from contextlib import contextmanager

_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_F_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)
# struct flock on Linux x86_64/aarch64: short type, short whence, off_t start, off_t len, pid_t pid
_FLOCK = "hhxxxxqqixxxx"


def _flock(kind: int, start: int, length: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0)


class RangeLock:
    """An exclusive lock on ``[start, start+length)`` of ``fd``, also safe across threads."""

    __slots__ = ("fd", "start", "length", "_thread_lock", "_lock_arg", "_unlock_arg")

    def __init__(self, fd: int, start: int, length: int = 1) -> None:
        self.fd = fd
        self.start = start
        self.length = length
        # OFD locks do not exclude threads sharing the descriptor.
        self._thread_lock = threading.Lock()
        self._lock_arg = _flock(fcntl.F_WRLCK, start, length)
        self._unlock_arg = _flock(fcntl.F_UNLCK, start, length)

    def acquire(self, blocking: bool = True) -> bool:
        if not self._thread_lock.acquire(blocking):
            return False
        try:
            fcntl.fcntl(self.fd, _F_OFD_SETLKW if blocking else _F_OFD_SETLK, self._lock_arg)
        except BlockingIOError:
            self._thread_lock.release()
            return False
        except OSError as exc:
            self._thread_lock.release()
            if exc.errno in (11, 13):  # EAGAIN / EACCES: held elsewhere
                return False
            raise
        return True

    def release(self) -> None:
        try:
            fcntl.fcntl(self.fd, _F_OFD_SETLK, self._unlock_arg)
        finally:
            self._thread_lock.release()

    def __enter__(self) -> RangeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def locked(fd: int, start: int, length: int = 1):
    lock = RangeLock(fd, start, length)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
