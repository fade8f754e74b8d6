"""The local change watcher: doorbell events (watchfiles) + sweep + kernel diff.

Stores through a shared mapping raise no inotify event, so writers *announce* commits:
they bump the header's change sequence and ring a doorbell (a one-byte ``pwrite``),
which does. The watcher runs ``watchfiles.watch`` on the service file in its own thread
(tuned ``debounce``/``step``), and on every wake-up — a doorbell, or the periodic sweep
timeout that also catches raw stores by processes that do not use commy — re-reads the
sequence number (events coalesce), diffs the mapped bytes against its shadow with the
selected kernel, maps the changed ranges to variable names exactly, moves the shadow
forward and publishes one `FileChangeEvent`.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import attrs
import watchfiles

from commy import fileformat as ff
from commy.errors import WatcherError
from commy.events import EventHub, FileChangeEvent

log = logging.getLogger(__name__)

_TICK_MS = 50


@attrs.frozen
class WatcherOptions:
    #: watchfiles debounce / step in ms (FACTS: 10/1 → ~2.6 ms p50, defaults → ~75 ms)
    debounce_ms: int = 10
    step_ms: int = 1
    #: a full diff at least this often, even without a doorbell (0 = never)
    sweep_interval_s: float = 1.0
    max_pending: int = 10_000
    #: "doorbell" (watchfiles, portable default) or "futex" (fast path, Linux)
    wakeup: str = attrs.field(default="doorbell", validator=attrs.validators.in_(("doorbell", "futex")))
    #: futex waiter plugin for ``wakeup="futex"`` (None: config ``events.waiter``, else
    #: the highest-ranked available one). Any waiter wakes on any writer's wake: they
    #: share the kernel's futex on the mapped word.
    waiter: str | None = None
    #: fast path only: after each wake-up, poll the sequence word this long (µs) before
    #: sleeping in the futex again. A wake-up that lands inside the poll costs no
    #: cross-core wake; the price is a busy core while it polls. None: config
    #: ``events.spin_us`` (default 0, never poll).
    spin_us: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            [attrs.validators.ge(0), attrs.validators.le(1_000_000)]
        ),
    )


class FileWatcher:
    """Watches one service file and publishes `FileChangeEvent`s to an `EventHub`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hub: EventHub | None = None,
        kernel=None,
        options: WatcherOptions | None = None,
        service: str | None = None,
        waiter=None,
    ) -> None:
        self.path = str(path)
        self.options = options or WatcherOptions()
        self.hub = hub or EventHub(self.options.max_pending)
        self.service = service
        self._kernel = kernel
        #: `commy.waiters.WaiterProvider` of the futex path (None: the process default)
        self._waiter = waiter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._vf = None
        self._seq = 0
        self._registered = False
        self._spin = 0.0  # seconds the fast path polls after each wake-up (set by start)
        self.error: BaseException | None = None
        self._check_lock = threading.Lock()
        self.checks = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        from commy.virtual_file import VirtualServiceFile

        vf = VirtualServiceFile.open(self.path, readonly=True, kernel=self._kernel)
        vf.kernel  # resolve the kernel now, not on the first change  # noqa: B018
        if self.options.wakeup == "futex":
            spin_us = self.options.spin_us
            if spin_us is None:
                from commy.config import load_config

                spin_us = load_config().events.spin_us
            self._spin = spin_us / 1e6
        if self.options.wakeup == "futex" and self._waiter is None:
            # Resolved here, once: the wait loop never asks pluggy.
            if self.options.waiter:
                from commy.config import load_config
                from commy.plugins import get_plugins
                from commy.waiters import select_waiter

                registry = get_plugins(load_config().plugins.disable).waiters
                self._waiter = select_waiter(registry, self.options.waiter)
            else:
                from commy.waiters import default_waiter

                self._waiter = default_waiter()
        self._counter = ff.OFF_WAITERS if self.options.wakeup == "futex" else ff.OFF_WATCHERS
        self._registered = vf.adjust_listener_count(self._counter, +1)
        vf.snapshot_shadow()
        self._seq = vf.change_seq
        self._vf = vf
        self._stop.clear()
        ready = threading.Event()
        run = self._run_futex if self.options.wakeup == "futex" else self._run
        self._thread = threading.Thread(
            target=run, args=(ready,), name=f"commy-watch-{vf.service_id[:8]}", daemon=True
        )
        self._thread.start()
        # watchfiles sets its inotify watch inside the thread; wait so that no doorbell
        # rung right after start() is missed.
        ready.wait(5)
        self.check("sweep")

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)
        vf, self._vf = self._vf, None
        if vf is not None:
            if self._registered:
                vf.adjust_listener_count(self._counter, -1)
                self._registered = False
            vf.close()

    def _run(self, ready: threading.Event) -> None:
        opts = self.options
        sweep = opts.sweep_interval_s
        last_sweep = time.monotonic()
        try:
            # A short timeout: the first (empty) batch proves the inotify watch is armed,
            # and later ones drive the periodic sweep.
            for changes in watchfiles.watch(
                self.path,
                watch_filter=None,
                debounce=opts.debounce_ms,
                step=opts.step_ms,
                stop_event=self._stop,
                rust_timeout=_TICK_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                ready.set()
                if self._stop.is_set():
                    break
                now = time.monotonic()
                if changes:
                    self.check("doorbell")
                elif sweep > 0 and now - last_sweep >= sweep:
                    last_sweep = now
                    self.check("sweep")
        except Exception as exc:  # keep the reason; the application asks via .error
            self.error = WatcherError(f"watching {self.path} failed: {exc!r}")
            log.error("%s", self.error)
        finally:
            ready.set()

    def _run_futex(self, ready: threading.Event) -> None:
        sweep = self.options.sweep_interval_s
        last_sweep = time.monotonic()
        try:
            waiter = self._waiter.open(self.path)
        except Exception as exc:
            self.error = WatcherError(f"futex wake-ups unavailable for {self.path}: {exc!r}")
            log.error("%s", self.error)
            ready.set()
            return
        wait = waiter.wait
        check = self.check
        stop = self._stop
        tick = _TICK_MS / 1000
        spin = self._spin
        try:
            last = waiter.value
            ready.set()
            while not stop.is_set():
                current = wait(last, tick, spin) if spin else wait(last, tick)
                if current != last:
                    last = current
                    check("fast")
                elif sweep > 0 and time.monotonic() - last_sweep >= sweep:
                    last_sweep = time.monotonic()
                    check("sweep")
        except Exception as exc:
            self.error = WatcherError(f"watching {self.path} failed: {exc!r}")
            log.error("%s", self.error)
        finally:
            waiter.close()

    def check(self, source: str = "sweep") -> FileChangeEvent | None:
        """Diff now; publish and return an event if any variable changed."""
        with self._check_lock:
            return self._check(source)

    def _check(self, source: str) -> FileChangeEvent | None:
        vf = self._vf
        if vf is None:
            return None
        self.checks += 1
        # old_seq is where the previous *published* event ended, so consecutive events
        # tile the sequence without gaps even when a check finds nothing new.
        old = self._seq
        if source == "sweep":
            names = vf.detect_changes()
        else:
            names = vf.detect_moved()
            if not names and vf.change_seq != old:
                # The sequence moved but no version did: raw stores announced with
                # commit(); only a full diff finds them.
                names = vf.detect_changes()
        if not names:
            return None
        # Read after the diff: writers bump a variable's version before the sequence,
        # so every commit whose change the diff saw is (but for the few instructions
        # between those two stores) at or below it, and a burst's last event ends at
        # its last commit.
        new = vf.change_seq
        self._seq = new
        event = FileChangeEvent(vf.service_id, tuple(names), old, new, source=source, service=self.service)
        self.hub.publish(event)
        return event
