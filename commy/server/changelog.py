"""A bounded log of the committed changes of one service, for clients that resume.

A client that lost its connection resubscribes with the last sequence number it saw
(``Subscribe.since``). If the log still holds every change after that number, the
server replays them; otherwise it says so and sends every current value instead (a
snapshot), so a resuming client never silently misses a change.
"""

from __future__ import annotations

from collections import deque

from commy.server.events import ChangeEvent

#: events kept per service
MAX_EVENTS = 4096
#: rough bytes of values kept per service (large variables would otherwise pin memory)
MAX_BYTES = 16 << 20


def _size(event: ChangeEvent) -> int:
    size = 64
    for v in event.variables:
        value = v.value
        size += 48 + (len(value) * 8 if isinstance(value, list) else len(value) if isinstance(value, str | bytes) else 8)
    return size


class ChangeLog:
    """Every change with a sequence number above `floor`, oldest first."""

    def __init__(self, floor: int, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES) -> None:
        #: the log is complete above this sequence number
        self.floor = floor
        self._events: deque[tuple[ChangeEvent, int]] = deque()
        self._bytes = 0
        self._max_events = max_events
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: ChangeEvent) -> None:
        size = _size(event)
        self._events.append((event, size))
        self._bytes += size
        while len(self._events) > self._max_events or (self._bytes > self._max_bytes and len(self._events) > 1):
            old, old_size = self._events.popleft()
            self._bytes -= old_size
            self.floor = max(self.floor, old.seq)

    def since(self, seq: int) -> list[ChangeEvent] | None:
        """The changes after ``seq``, or None when the log no longer holds all of them."""
        if seq < self.floor:
            return None
        return [e for e, _size in self._events if e.seq > seq]
