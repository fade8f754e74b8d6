"""Futex wake-ups for the server (``server.wakeup = "futex"``): notice local mmap writes
in well under a poll interval.

By default the server finds local mmap writes by polling each tracked service's change
sequence every ``server.poll_interval``. An asyncio loop cannot sleep for less than about
a millisecond (epoll's timeout is in milliseconds), so a change waits up to a tick before
it is scanned, and with a backplane before it leaves for the other nodes.

With ``"futex"``, one thread per tracked service sleeps on the futex of the file's change
sequence (the same fast path local readers use, `commy.futex`) and, when the sequence
moves, marks the service and writes to an eventfd the event loop waits on; the loop scans
the marked services exactly as the poller would. The poll loop keeps running as the
backstop (a replaced file, a missed wake-up).

Why an eventfd and not ``anyio.from_thread.run_sync``: that call waits for the loop's
answer, so the waiter thread wakes up again in the middle of the scan and competes for
the GIL with the loop on the way to the network (on this 2-core VM each such hand-over is
a cross-core wake-up). With the eventfd the thread writes 8 bytes and goes back to sleep.

The price: while the server waits on a file, every local write to it makes one
``FUTEX_WAKE`` system call (writers skip it when nobody waits), so it is opt-in.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

import anyio

from commy import fileformat as ff
from commy.errors import CommyError
from commy.futex import MATCH_ANY, SERVER_BIT

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
        #: waiters add their service here and ring ``_efd``; the loop takes them
        self._marked: set[_Waiter] = set()
        self._efd = -1
        #: stopped waiters whose thread may not have ended yet (joined before _efd closes)
        self._retired: list[_Waiter] = []
        #: for tests: scans the wake-ups caused
        self.pokes = 0

    async def run(self) -> None:
        from commy import futex

        if not futex.available():
            log.warning("server.wakeup = \"futex\" is not supported here; polling only")
            return
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sync_loop)
                while True:
                    await anyio.wait_readable(self._efd)
                    try:
                        os.eventfd_read(self._efd)
                    except BlockingIOError:
                        continue  # another wake-up took it
                    self._scan_marked()
        finally:
            waiters = list(self._waiters.values())
            for waiter in waiters:
                self._stop(waiter)
            self._waiters.clear()
            waiters += self._retired
            # The threads may still write to the eventfd: close it only once they ended
            # (each sees its stop flag within _WAIT_TIMEOUT), never under a reused number.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_join, [w.thread for w in waiters])
            os.close(self._efd)
            self._efd = -1

    async def _sync_loop(self) -> None:
        while True:
            self._sync()
            await anyio.sleep(_SYNC_INTERVAL)

    def _scan_marked(self) -> None:
        """In the loop: scan each service whose waiter woke, as the poller would."""
        services = self.server._services
        marked = self._marked
        while marked:
            waiter = marked.pop()  # pop and the threads' add are atomic under the GIL
            handle = waiter.handle
            if waiter.stop.is_set() or services.get(waiter.key) is not handle:
                continue  # closed or deleted since: its vf may be unmapped
            if not handle.tracking or handle.vf.change_seq == handle.last_seq:
                continue
            self.pokes += 1
            try:
                self.server._scan(handle)
            except CommyError as exc:
                log.warning("change scan of %s/%s failed: %s", *handle.key, exc)

    def _sync(self) -> None:
        services = self.server._services
        for key, waiter in list(self._waiters.items()):
            handle = services.get(key)
            if handle is not waiter.handle or handle.vf is not waiter.vf or not handle.tracking:
                del self._waiters[key]
                self._stop(waiter)
                self._retired.append(waiter)
        self._retired = [w for w in self._retired if w.thread.is_alive()]
        for key, handle in list(services.items()):
            if key in self._waiters or not handle.tracking or handle.vf.path is None:
                continue
            waiter = _Waiter(self, handle)
            # The server's own commits (WriteVariable, changes from other nodes) are
            # recorded as they happen: they wake local readers, not our waiter. Without
            # this every applied change would wake a server thread for nothing.
            handle.vf.set_futex_wake_bits(MATCH_ANY & ~SERVER_BIT)
            # Writers only make the FUTEX_WAKE call when the waiters counter is non-zero.
            waiter.registered = handle.vf.adjust_listener_count(ff.OFF_WAITERS, +1)
            if not waiter.registered:
                continue  # polled only
            self._waiters[key] = waiter
            waiter.thread.start()

    def _stop(self, waiter: _Waiter) -> None:
        waiter.stop.set()
        # Not joined here (that would block the loop): it sees the flag within
        # _WAIT_TIMEOUT and ends; `run` joins whatever is left when the server stops.
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
            # From what the server has recorded, not from the word's current value: a
            # commit between registering and this line must be handed over too.
            last = handle.last_seq & 0xFFFFFFFF
            while not waiter.stop.is_set():
                futex.wait(last, _WAIT_TIMEOUT, bits=SERVER_BIT)
                current = futex.value
                if current == last:
                    continue
                last = current
                # The server's own commits do not wake us (SERVER_BIT), but one that raced
                # with a local writer's may already be recorded: nothing to hand over.
                if handle.last_seq & 0xFFFFFFFF == current:
                    continue
                self._marked.add(waiter)
                try:
                    os.eventfd_write(self._efd, 1)
                except OSError:
                    return  # the loop is gone
        finally:
            futex.close()


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(1.0)
