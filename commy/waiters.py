"""Fast-path waiters: futex wait/wake on the mapped change-sequence word, as plugins.

A *waiter provider* opens a `SeqWaiter` on a service file. The watcher's fast path
(``wakeup="futex"``) sleeps in it, and writers wake through it. Providers register
through the ``commy_register_waiters`` hook; the built-in one (``ctypes``) needs
nothing but libc, and a faster one (the ``cffi`` plugin's C helper, which releases the
GIL while it sleeps) outranks it when installed. Config ``events.waiter`` names one;
otherwise the highest-ranked available provider wins. The choice is made once per
process, so the wait loop and the writer's wake never touch pluggy.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Protocol

from commy.errors import PluginError

log = logging.getLogger(__name__)


class SeqWaiter(Protocol):
    """The low 32 bits of one service file's change sequence, as a futex word."""

    @property
    def value(self) -> int: ...

    def wait(self, expected: int, timeout: float, spin: float = 0.0) -> int:
        """Sleep while the word equals ``expected`` (≤ ``timeout`` s); the word afterwards.

        ``spin``: first poll the word for up to this many seconds without sleeping
        (events.spin_us), without holding the GIL the whole time. May return early
        (spurious wake, signal): callers compare the result."""

    def wake(self) -> int:
        """Wake every process waiting on the word; how many woke."""

    def close(self) -> None: ...


class WaiterProvider(Protocol):
    name: str
    #: higher wins when config names none
    rank: int

    def available(self) -> tuple[bool, str]:
        """(usable here, why not)."""

    def open(self, path: str | os.PathLike[str]) -> SeqWaiter: ...


_lock = threading.Lock()
_default: WaiterProvider | None = None


def select_waiter(registry: Any, name: str | None = None) -> WaiterProvider:
    """The provider ``name`` names, or the highest-ranked available one."""
    if name:
        provider = registry.get(name)()
        ok, why = provider.available()
        if not ok:
            raise PluginError(f"waiter {name!r} is not available here: {why}")
        return provider
    best: WaiterProvider | None = None
    for reg in registry:
        try:
            provider = reg.factory()
            ok, why = provider.available()
        except Exception as exc:  # a broken plugin must not take the fast path down
            log.warning("waiter %r failed to load: %r", reg.name, exc)
            continue
        if not ok:
            log.debug("waiter %r unavailable: %s", reg.name, why)
            continue
        if best is None or provider.rank > best.rank:
            best = provider
    if best is None:
        raise PluginError("no futex waiter is available on this machine")
    return best


def default_waiter() -> WaiterProvider:
    """The process-wide waiter provider (config ``events.waiter``, else the ranking)."""
    global _default
    with _lock:
        if _default is None:
            from commy.config import load_config
            from commy.plugins import get_plugins

            cfg = load_config()
            _default = select_waiter(get_plugins(cfg.plugins.disable).waiters, cfg.events.waiter)
            log.debug("futex waiter: %s", _default.name)
        return _default
