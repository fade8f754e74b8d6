"""The model and rendering behind ``commy watch``: a live table of a service's variables.

Change counts come from the per-variable versions, not from events: a version moves by
one per write on both paths (mapped file or server-fed mirror), so the rate stays exact
when events coalesce or a redraw is skipped. Events only decide *when* to redraw.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any

import attrs

from commy.virtual_file import VirtualServiceFile

#: seconds of history behind the changes-per-second column
RATE_WINDOW_S = 5.0

CLEAR = "\x1b[2J\x1b[H"
HOME = "\x1b[H"
CLEAR_EOL = "\x1b[K"
CLEAR_BELOW = "\x1b[J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"


@attrs.define
class Row:
    name: str
    type: str
    value: Any
    version: int
    rate: float
    last_change: float | None


def show_value(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


class WatchModel:
    """Samples a `VirtualServiceFile` and remembers enough to show rates and ages."""

    def __init__(self, vf: VirtualServiceFile, window: float = RATE_WINDOW_S) -> None:
        self.vf = vf
        self.window = window
        self._history: dict[str, collections.deque[tuple[float, int]]] = {}
        self._last_change: dict[str, float] = {}
        self._versions: dict[str, int] = {}

    def sample(self, now: float | None = None) -> tuple[list[Row], list[str]]:
        """(all rows, names whose version moved since the previous sample)."""
        now = time.monotonic() if now is None else now
        vf = self.vf
        rows: list[Row] = []
        moved: list[str] = []
        for name in vf.names():
            try:
                version = vf.version(name)
                value = vf.read(name)
                vtype = vf.type_of(name).spec
            except Exception:  # deallocated between names() and here: next sample
                continue
            history = self._history.setdefault(name, collections.deque())
            previous = self._versions.get(name)
            if previous is not None and version != previous:
                self._last_change[name] = now
                moved.append(name)
            self._versions[name] = version
            history.append((now, version))
            while len(history) > 2 and now - history[1][0] >= self.window:
                history.popleft()
            t0, v0 = history[0]
            rate = (version - v0) / (now - t0) if now - t0 >= 0.5 else 0.0
            rows.append(Row(name, vtype, value, version, max(rate, 0.0), self._last_change.get(name)))
        for gone in set(self._versions) - {r.name for r in rows}:
            self._versions.pop(gone, None)
            self._history.pop(gone, None)
            self._last_change.pop(gone, None)
        return rows, moved


def _age(last: float | None, now: float) -> str:
    if last is None:
        return "-"
    age = now - last
    return f"{age:.1f}s ago" if age < 60 else f"{age / 60:.0f}m ago"


def render_table(rows: list[Row], title: str, width: int, now: float | None = None) -> list[str]:
    """The screen as lines, each cut to ``width`` columns."""
    now = time.monotonic() if now is None else now
    header = ["variable", "type", "value", "version", "changes/s", "last change"]
    cells = [
        [r.name, r.type, show_value(r.value), str(r.version), f"{r.rate:.1f}", _age(r.last_change, now)]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    fixed = sum(w for i, w in enumerate(widths) if i != 2) + 2 * (len(header) - 1)
    widths[2] = max(8, min(widths[2], width - fixed))  # the value column gives way first

    def line(c: list[str]) -> str:
        value = c[2] if len(c[2]) <= widths[2] else c[2][: widths[2] - 1] + "…"
        parts = [c[0].ljust(widths[0]), c[1].ljust(widths[1]), value.ljust(widths[2]),
                 c[3].rjust(widths[3]), c[4].rjust(widths[4]), c[5].rjust(widths[5])]
        return "  ".join(parts).rstrip()[:width]

    out = [title[:width], "", line(header), "  ".join("-" * w for w in widths)[:width]]
    out.extend(line(c) for c in cells)
    if not rows:
        out.append("(no variables yet)")
    return out


def screen(lines: list[str], first: bool) -> str:
    """The escape sequence that redraws ``lines`` in place (no scrolling, no flicker)."""
    body = "".join(f"{text}{CLEAR_EOL}\n" for text in lines)
    return (CLEAR if first else HOME) + body + CLEAR_BELOW


def change_lines(rows: list[Row], names: list[str], as_json: bool) -> list[str]:
    """One line per changed variable, for a pipe or a log."""
    stamp = time.strftime("%H:%M:%S")
    wanted = set(names)
    out = []
    for r in rows:
        if r.name not in wanted:
            continue
        if as_json:
            value = r.value.hex() if isinstance(r.value, bytes) else r.value
            out.append(json.dumps({"time": time.time(), "name": r.name, "type": r.type,
                                   "value": value, "version": r.version}, default=str))
        else:
            out.append(f"{stamp}  {r.name} = {show_value(r.value)}  (version {r.version})")
    return out
