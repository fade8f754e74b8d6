"""Futex wake-ups for the server (``server.wakeup = "futex"``): notice local mmap writes
in well under a poll interval.

By default the server finds local mmap writes by polling each tracked service's change
sequence every ``server.poll_interval``. An asyncio loop cannot sleep for less than about
a millisecond (epoll's timeout is in milliseconds), so a change waits up to a tick before
it is scanned, and with a backplane before it leaves for the other nodes.

With ``"futex"``, one thread per tracked service sleeps on the futex of the file's change
sequence (the same fast path local readers use, `commy.futex`) and, when the sequence
moves, hands the service to the event loop, which scans it exactly as the poller would.
The poll loop keeps running as the backstop (a replaced file, a missed wake-up).

The price: while the server waits on a file, every local write to it makes one
``FUTEX_WAKE`` system call (writers skip it when nobody waits), so it is opt-in.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.lowlevel

from commy import fileformat as ff
from commy.errors import CommyError

if TYPE_CHECKING:
    from commy.server.core import Server, ServiceHandle

log = logging.getLogger(__name__)

#: a waiter re-checks its stop flag at least this often (s)
_WAIT_TIMEOUT = 0.05
#: how often the set of waiters is matched to the set of tracked services (s)
_SYNC_INTERVAL = 0.05

Key = tuple[str, str]


class _Waiter:
    """One thread sleeping on one service file's change-sequence futex."""

    def __init__(self, wakeups: FutexWakeups, handle: ServiceHandle) -> None:
        self.key = handle.key
        self.vf = handle.vf  # the mapping this waiter registered on (a reopened file is another)
        self.handle = handle
        self.stop = threading.Event()
        self.registered = False
        self.thread = threading.Thread(
            target=wakeups._wait, args=(self,), name=f"commy-server-futex-{handle.vf.service_id[:8]}", daemon=True
        )


class FutexWakeups:
    """Keeps a futex waiter per tracked service of ``server`` and scans on each wake-up."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._waiters: dict[Key, _Waiter] = {}
        self._token: object = None
        #: for tests: wake-ups handed to the loop
        self.pokes = 0

    async def run(self) -> None:
        from commy import futex

        if not futex.available():
            log.warning("server.wakeup = \"futex\" is not supported here; polling only")
            return
        self._token = anyio.lowlevel.current_token()
        try:
            while True:
                self._sync()
                await anyio.sleep(_SYNC_INTERVAL)
        finally:
            for waiter in list(self._waiters.values()):
                self._stop(waiter)
            self._waiters.clear()

    def _sync(self) -> None:
        services = self.server._services
        for key, waiter in list(self._waiters.items()):
            handle = services.get(key)
            if handle is not waiter.handle or handle.vf is not waiter.vf or not handle.tracking:
                del self._waiters[key]
                self._stop(waiter)
        for key, handle in list(services.items()):
            if key in self._waiters or not handle.tracking or handle.vf.path is None:
                continue
            waiter = _Waiter(self, handle)
            # Writers only make the FUTEX_WAKE call when the waiters counter is non-zero.
            waiter.registered = handle.vf.adjust_listener_count(ff.OFF_WAITERS, +1)
            if not waiter.registered:
                continue  # polled only
            self._waiters[key] = waiter
            waiter.thread.start()

    def _stop(self, waiter: _Waiter) -> None:
        waiter.stop.set()
        # Not joined: the thread may be handing a wake-up to this very loop; it sees the
        # flag within _WAIT_TIMEOUT and ends.
        if waiter.registered:
            waiter.registered = False
            try:
                waiter.vf.adjust_listener_count(ff.OFF_WAITERS, -1)
            except (OSError, ValueError, CommyError):
                pass  # the file is gone: nobody is left to skip the wake-up for

    def _wait(self, waiter: _Waiter) -> None:
        from commy.futex import SeqFutex

        try:
            futex = SeqFutex(waiter.vf.path)
        except Exception as exc:  # a file deleted meanwhile: the poller still covers it
            log.warning("futex wake-ups unavailable for %s/%s: %r", *waiter.key, exc)
            return
        handle = waiter.handle
        try:
            last = futex.value
            while not waiter.stop.is_set():
                futex.wait(last, _WAIT_TIMEOUT)
                current = futex.value
                if current == last:
                    continue
                last = current
                # The server's own commits (WriteVariable, changes from other nodes) wake
                # us too; it has already recorded them, so there is nothing to hand over.
                if handle.last_seq & 0xFFFFFFFF == current:
                    continue
                try:
                    anyio.from_thread.run_sync(self._poke, waiter, token=self._token)
                except anyio.RunFinishedError:
                    return
        finally:
            futex.close()

    def _poke(self, waiter: _Waiter) -> None:
        """In the loop: scan the service now, as the poller would on its next tick."""
        handle = waiter.handle
        if waiter.stop.is_set() or self.server._services.get(waiter.key) is not handle:
            return  # closed or deleted since: its vf may be unmapped
        if not handle.tracking or handle.vf.change_seq == handle.last_seq:
            return
        self.pokes += 1
        try:
            self.server._scan(handle)
        except CommyError as exc:
            log.warning("change scan of %s/%s failed: %s", *handle.key, exc)
