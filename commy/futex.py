"""Futex wait/wake through ctypes: the built-in ``ctypes`` waiter (Linux; fast path).

A futex on a shared file mapping is keyed by inode + offset, so unrelated processes
mapping the same service file can wait on and wake the same word (never with
FUTEX_PRIVATE_FLAG). There are no 64-bit futexes: waiters watch the low 32 bits of the
u64 change sequence. Waits always carry a timeout and callers re-check the sequence,
since wake-ups can be spurious.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import time

from commy import fileformat as ff
from commy.errors import WatcherError
from commy.hookspecs import hookimpl

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine())
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_FUTEX_WAIT_BITSET = 9
_FUTEX_WAKE_BITSET = 10
_INT_MAX = 0x7FFFFFFF
#: a waiter with this bitset (plain FUTEX_WAIT) is woken by every wake
MATCH_ANY = 0xFFFFFFFF
#: the bit a commy server's own waiter sleeps on (`commy.server.wakeup`); the server's
#: own commits wake every waiter but it (``MATCH_ANY & ~SERVER_BIT``)
SERVER_BIT = 0x2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def available() -> bool:
    return _SYS_FUTEX is not None


class SeqFutex:
    """The change-sequence word of one service file, mapped for futex calls."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not available():
            raise WatcherError(f"futex wake-ups are not supported on {platform.machine()}")
        # Our own small read-write mapping of the header page: ctypes needs a writable
        # buffer to take an address, and the key (inode + offset) is the same as in
        # every other process's mapping.
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._map = mmap.mmap(fd, ff.PAGE, access=mmap.ACCESS_WRITE)
        finally:
            os.close(fd)
        self._word = ctypes.c_uint32.from_buffer(self._map, ff.OFF_CHANGE_SEQ)
        self._addr = ctypes.addressof(self._word)

    @property
    def value(self) -> int:
        return self._word.value

    def wait(self, expected: int, timeout: float, spin: float = 0.0, *, bits: int = MATCH_ANY) -> int:
        """Sleep while the word equals ``expected`` (≤ ``timeout`` s); the word afterwards.

        ``spin``: first poll the word for up to this many seconds (a busy core for a
        faster wake-up). ``bits``: only wakes whose bitset shares a bit with it end the
        sleep (a plain wake matches every bit).
        """
        word = self._word
        now = word.value
        if now != expected:
            return now
        if spin > 0:
            # sleep(0) drops the GIL on every poll, so the process's other threads go on.
            clock, nap = time.perf_counter, time.sleep
            end = clock() + spin
            while clock() < end:
                now = word.value
                if now != expected:
                    return now
                nap(0)
        if bits == MATCH_ANY:
            ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
            res = _syscall(_SYS_FUTEX, ctypes.c_void_p(self._addr), _FUTEX_WAIT, ctypes.c_uint32(expected),
                           ctypes.byref(ts), None, 0)
        else:
            # FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.
            deadline = time.monotonic() + timeout
            ts = _Timespec(int(deadline), int((deadline % 1) * 1e9))
            res = _syscall(_SYS_FUTEX, ctypes.c_void_p(self._addr), _FUTEX_WAIT_BITSET,
                           ctypes.c_uint32(expected), ctypes.byref(ts), None, ctypes.c_uint32(bits))
        if res == -1:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
                raise WatcherError(f"futex wait failed: {os.strerror(err)}")
        return word.value

    def wake(self, bits: int = MATCH_ANY) -> int:
        """Wake every process waiting on the word (with ``bits``: only the waiters whose
        bitset shares a bit with it); returns how many woke."""
        if bits == MATCH_ANY:
            return int(_syscall(_SYS_FUTEX, ctypes.c_void_p(self._addr), _FUTEX_WAKE, _INT_MAX, None, None, 0))
        return int(_syscall(_SYS_FUTEX, ctypes.c_void_p(self._addr), _FUTEX_WAKE_BITSET, _INT_MAX, None, None,
                            ctypes.c_uint32(bits)))

    def close(self) -> None:
        if self._map is not None:
            del self._word
            self._map.close()
            self._map = None  # type: ignore[assignment]


class CtypesWaiterProvider:
    """The built-in waiter: libc's ``syscall`` through ctypes (holds the GIL while it
    converts arguments; the ``cffi`` plugin's C helper outranks it)."""

    name = "ctypes"
    rank = 10

    def available(self) -> tuple[bool, str]:
        return (True, "") if available() else (False, f"no futex syscall number for {platform.machine()}")

    def open(self, path: str | os.PathLike[str]) -> SeqFutex:
        return SeqFutex(path)


@hookimpl
def commy_register_waiters(register):
    register("ctypes", CtypesWaiterProvider)
