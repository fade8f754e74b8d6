"""VirtualServiceFile: typed variables of one service over a FileAccessor.

The seed calls it ``VirtualVariableFile``: a variable registry, the current bytes (the
accessor's view), a shadow copy, and change tracking by diffing the two with a kernel.

Hot path (read/write of a scalar): one dict lookup and one typed memoryview access;
no lock, no pluggy, no allocation beyond the returned object.

Tear-freedom: a scalar of ≤ 8 bytes at an aligned offset is one machine access.
Wider values (arrays, str, bytes) keep two copies; the writer fills the inactive copy
and then publishes it by bumping the variable's version (whose low bit names the active
copy). Readers copy the active one and re-check the version, so they never wait for a
writer and a writer killed mid-write leaves the published copy intact.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import attrs

from commy import fileformat as ff
from commy.accessors.base import FileAccessor
from commy.errors import (
    AlreadyExists,
    FileFormatError,
    InvalidValue,
    LimitExceeded,
    PermissionDenied,
    VariableNotFound,
)
from commy.locks import RangeLock
from commy.names import check_variable_name
from commy.vartypes import (
    VarType,
    check_bool,
    check_f32,
    check_float,
    encode_value,
    make_decoder,
    parse_type,
)

log = logging.getLogger(__name__)

# slot kinds
_PLAIN = 0  # scalar, memoryview validates the value itself
_CHECKED = 1  # scalar needing an extra check (bool, floats)
_DOUBLE = 2  # multi-word value, double-buffered
_SEQ_INDEX = ff.OFF_CHANGE_SEQ // 8
_LISTEN_INDEX = ff.OFF_LISTENERS // 8
_LAYOUT_INDEX = ff.OFF_LAYOUT_GEN // 8
_DOORBELL = b"\x01"
#: update_shadow copies up to this many ranges of up to this many bytes in Python
_SMALL_COPY_RANGES = 8
_SMALL_COPY_BYTES = 4096

#: a futex wake with this bitset reaches every waiter (commy.futex.MATCH_ANY)
_FUTEX_MATCH_ANY = 0xFFFFFFFF


@attrs.frozen
class VariableInfo:
    name: str
    type: str
    offset: int
    size: int
    version: int
    persistent: bool


class VirtualServiceFile:
    """Typed variables of one service, reached through a `FileAccessor`."""

    def __init__(self, accessor: FileAccessor, kernel: Any = None) -> None:
        self._acc = accessor
        self._kernel = kernel
        self._readonly = accessor.readonly
        fd = accessor.fileno()
        self._dir_lock = RangeLock(fd, ff.LOCK_DIRECTORY) if fd is not None else None
        self._var_locks: dict[int, RangeLock] = {}
        self._slots: dict[str, tuple] = {}
        self._entries: dict[str, ff.Entry] = {}
        self._bounds: list[tuple[int, int, str]] = []
        self._starts: list[int] = []
        self._shadow: bytearray | None = None
        # detect_moved(): per variable (name, version index, offset, end), and the
        # versions seen at the last call, index-aligned; rebuilt with the directory.
        self._track: list[tuple[str, int, int, int]] = []
        self._seen: list[int] = []
        self._shadow_base = 0
        self._batch_depth = 0
        self._batch_dirty = False
        self._futex = None  # created on the first commit that has futex waiters
        self._futex_wake_bits = _FUTEX_MATCH_ANY  # see set_futex_wake_bits
        self._watcher = None
        self._hub = None
        self._load()
        forward = getattr(accessor, "on_write", None)
        if forward is not None:
            # Remote mirrors forward each write to the server. Bound per instance, so a
            # local mapping keeps the plain method and its hot path has no extra check.
            self.write = self.write_variable = self._forwarding_write(forward)  # type: ignore[method-assign]

    # ----------------------------------------------------------------- construction
    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = False, kernel: Any = None):
        """Map an existing service file (validated; `FileFormatError` if damaged)."""
        from commy.accessors.local import LocalFileAccessor

        return cls(LocalFileAccessor(path, readonly=readonly), kernel=kernel)

    @classmethod
    def create(cls, data_dir: str | os.PathLike[str], kernel: Any = None, **kwargs: Any):
        """Create a new service file under ``data_dir`` and map it."""
        return cls.open(ff.create_service_file(data_dir, **kwargs), kernel=kernel)

    def _load(self) -> None:
        mv = self._acc.view()
        header = ff.read_header(mv)
        self._header = header
        self._mv = mv
        self._q = mv.cast("Q")
        self._casts: dict[str, memoryview] = {}
        entries: dict[str, ff.Entry] = {}
        for entry in ff.read_directory(mv, header):
            if entry.free:
                entries.pop(entry.name, None)
            else:
                entries[entry.name] = entry
        self._entries = entries
        self._slots = {name: self._slot(e) for name, e in entries.items()}
        bounds = sorted((e.offset, e.offset + e.size, e.name) for e in entries.values())
        self._bounds = bounds
        self._starts = [b[0] for b in bounds]
        seen = dict(zip((t[0] for t in self._track), self._seen, strict=True))
        self._track = [(n, e.version_offset // 8, e.offset, e.offset + e.size) for n, e in entries.items()]
        # A variable new since the last call reports as moved (-1 never matches).
        self._seen = [seen.get(t[0], -1) for t in self._track]
        self._layout_gen = header.layout_generation
        self._data_offset = header.data_offset
        self._data_end = header.data_end

    def _cast(self, fmt: str) -> memoryview:
        view = self._casts.get(fmt)
        if view is None:
            view = self._casts[fmt] = self._mv.cast(fmt)
        return view

    def _slot(self, e: ff.Entry) -> tuple:
        vt = e.vtype
        vidx = e.version_offset // 8
        if vt.single_word:
            fmt = vt.base.fmt
            check = {"bool": check_bool}.get(vt.base.kind)
            if fmt == "f":
                check = check_f32
            elif fmt == "d":
                check = check_float
            kind = _CHECKED if check else _PLAIN
            return (kind, self._cast(fmt), e.offset // vt.base.itemsize, vidx, check, e)
        return (_DOUBLE, make_decoder(vt), 0, vidx, None, e)

    # ---------------------------------------------------------------- properties
    @property
    def accessor(self) -> FileAccessor:
        return self._acc

    @property
    def is_local(self) -> bool:
        return self._acc.is_local

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def path(self):
        return getattr(self._acc, "path", None)

    @property
    def service_id(self) -> str:
        return self._header.service_id

    @property
    def locality_token(self) -> bytes:
        return self._header.locality_token

    @property
    def change_seq(self) -> int:
        """The service's change sequence number (bumped by every committed write)."""
        return self._q[_SEQ_INDEX]

    @property
    def layout_generation(self) -> int:
        return int.from_bytes(self._mv[ff.OFF_LAYOUT_GEN : ff.OFF_LAYOUT_GEN + 8], "little")

    def __contains__(self, name: str) -> bool:
        return name in self._slots or (self._refresh_if_changed() and name in self._slots)

    def names(self) -> list[str]:
        self._refresh_if_changed()
        return sorted(self._slots)

    def variables(self) -> dict[str, VariableInfo]:
        self._refresh_if_changed()
        q = self._q
        return {
            name: VariableInfo(
                name, e.vtype.spec, e.offset, e.vtype.size, q[e.version_offset // 8], e.persistent
            )
            for name, e in sorted(self._entries.items())
        }

    def version(self, name: str) -> int:
        s = self._slots.get(name) or self._missing(name)
        return self._q[s[3]]

    def type_of(self, name: str) -> VarType:
        s = self._slots.get(name) or self._missing(name)
        return s[5].vtype

    # ---------------------------------------------------------------- hot path
    def read(self, name: str) -> Any:
        """The variable's current value (never torn)."""
        try:
            s = self._slots[name]
        except KeyError:
            s = self._missing(name)
        if s[0] != _DOUBLE:
            return s[1][s[2]]
        return self._read_double(s)

    def write(self, name: str, value: Any) -> None:
        """Store ``value``; `InvalidValue` (nothing written) if it does not fit the type."""
        try:
            s = self._slots[name]
        except KeyError:
            s = self._missing(name)
        if self._readonly:
            raise PermissionDenied("this service is mapped read-only")
        kind = s[0]
        if kind == _PLAIN:
            try:
                s[1][s[2]] = value
            except (TypeError, ValueError) as exc:
                raise InvalidValue(f"{name}: {value!r} does not fit {s[5].vtype.spec}") from exc
        elif kind == _CHECKED:
            s[4](value)
            try:
                s[1][s[2]] = value
            except (TypeError, ValueError) as exc:
                raise InvalidValue(f"{name}: {value!r} does not fit {s[5].vtype.spec}") from exc
        else:
            self._write_double(s, encode_value(s[5].vtype, name, value))
            return
        q = self._q
        q[s[3]] += 1
        q[_SEQ_INDEX] += 1
        if q[_LISTEN_INDEX]:
            self._announce()

    # Seed-compatible names.
    read_variable = read
    write_variable = write

    def _forwarding_write(self, forward: Any) -> Any:
        plain = VirtualServiceFile.write

        def write(name: str, value: Any) -> None:
            plain(self, name, value)
            forward(name, value)

        return write

    async def awrite(self, name: str, value: Any) -> None:
        """Write; on a remote service also wait until the server acknowledged it."""
        VirtualServiceFile.write(self, name, value)
        confirm = getattr(self._acc, "on_awrite", None)
        if confirm is not None:
            await confirm(name, value)

    def _read_double(self, s: tuple) -> Any:
        e: ff.Entry = s[5]
        q = self._q
        vidx = s[3]
        half = e.size // 2
        size = e.vtype.size
        mv = self._mv
        off = e.offset
        for _ in range(10_000):
            v = q[vidx]
            start = off + (v & 1) * half
            raw = mv[start : start + size].tobytes()
            if q[vidx] == v:
                return s[1](raw)
        # Only a writer publishing thousands of times during one copy gets here.
        raise FileFormatError(f"{e.name}: could not read a stable value (writer too fast)")

    def _write_double(self, s: tuple, raw: bytes) -> None:
        e: ff.Entry = s[5]
        lock = self._var_locks.get(e.index)
        if lock is None:
            fd = self._acc.fileno()
            # A mirror has no file to lock; its writers all run in one thread.
            lock = RangeLock(fd, e.version_offset, 8) if fd is not None else nullcontext()
            self._var_locks[e.index] = lock
        q = self._q
        vidx = s[3]
        half = e.size // 2
        with lock:  # writers exclude each other; readers never take it
            v = q[vidx]
            start = e.offset + ((v + 1) & 1) * half
            self._mv[start : start + len(raw)] = raw
            q[vidx] = v + 1  # publish: one aligned 8-byte store
            q[_SEQ_INDEX] += 1
        if q[_LISTEN_INDEX]:
            self._announce()

    # ---------------------------------------------------------------- announcing
    def _announce(self) -> None:
        """Tell listeners a commit happened (only called when someone listens)."""
        if self._batch_depth:
            self._batch_dirty = True
            return
        listeners = self._q[_LISTEN_INDEX]
        if listeners >> 32:  # doorbell watchers
            self.ring_doorbell()
        if listeners & 0xFFFFFFFF:  # futex waiters (fast path)
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        futex = self._futex
        if futex is None:
            from commy.waiters import default_waiter

            path = self.path
            if path is None or self._readonly:
                return
            if self._futex_wake_bits == _FUTEX_MATCH_ANY:
                # Resolved on the first commit that has waiters; later wakes are one call.
                futex = default_waiter().open(path)
            else:
                from commy.futex import SeqFutex  # bitset wakes: the built-in ctypes waiter

                futex = SeqFutex(path)
            self._futex = futex
        if self._futex_wake_bits == _FUTEX_MATCH_ANY:
            futex.wake()
        else:
            futex.wake(self._futex_wake_bits)

    def set_futex_wake_bits(self, bits: int) -> None:
        """Wake only futex waiters whose bitset shares a bit with ``bits`` on this
        mapping's commits (`commy.futex`): a server clears its own waiter's bit so that
        its own commits do not wake it. Plain waiters (local readers) match every bit."""
        self._futex_wake_bits = bits
        if self._futex is not None:
            self._futex.close()
            self._futex = None

    def ring_doorbell(self) -> None:
        """Raise a file event: a one-byte pwrite (stores through a mapping raise none)."""
        fd = self._acc.fileno()
        if fd is not None and not self._readonly:
            try:
                os.pwrite(fd, _DOORBELL, ff.OFF_DOORBELL)
            except OSError as exc:  # a full disk must not turn a write into a failure
                log.warning("doorbell of %s failed: %s", self.service_id, exc)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes: listeners are told once, when the outermost batch ends."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._batch_dirty:
                self._batch_dirty = False
                self._announce()

    def commit(self) -> None:
        """Announce now: bump the change sequence and ring (e.g. after raw stores)."""
        if self._readonly:
            raise PermissionDenied("this service is mapped read-only")
        self._q[_SEQ_INDEX] += 1
        if self._q[_LISTEN_INDEX]:
            self._announce()

    def adjust_listener_count(self, offset: int, delta: int) -> bool:
        """Change a listener counter (watchers / waiters) under the directory lock.

        A read-only mapping opens the file read-write just for this; the local mapping
        trusts the OS user boundary anyway (docs/security.md). False if that fails, in
        which case the caller relies on its periodic sweep.
        """
        path = self.path
        if path is None:
            return False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("cannot register as listener on %s: %s", path, exc)
            return False
        try:
            with RangeLock(fd, ff.LOCK_DIRECTORY):
                value = int.from_bytes(os.pread(fd, 4, offset), "little")
                os.pwrite(fd, max(value + delta, 0).to_bytes(4, "little"), offset)
        finally:
            os.close(fd)
        return True

    def _missing(self, name: str) -> tuple:
        if self._refresh_if_changed():
            s = self._slots.get(name)
            if s is not None:
                return s
        raise VariableNotFound(f"no variable {name!r} in service {self.service_id}")

    # ---------------------------------------------------------------- layout
    def _refresh_if_changed(self) -> bool:
        """Reload the directory if another process changed it; True if it did."""
        if self.layout_generation == self._layout_gen:
            return False
        self.refresh()
        return True

    def refresh(self) -> None:
        """Remap and reload the variable directory (after another process changed it)."""
        self._acc.refresh()
        self._load()
        if self._shadow is not None:
            self._grow_shadow()

    @contextmanager
    def _directory_locked(self) -> Iterator[None]:
        if self._readonly:
            raise PermissionDenied("this service is mapped read-only")
        lock = self._dir_lock
        if lock is None:
            raise PermissionDenied("this accessor cannot change the layout")
        with lock:
            self.refresh()
            yield

    def allocate(
        self,
        name: str,
        type: str | VarType,
        *,
        persistent: bool = True,
        initial: Any = None,
    ) -> VariableInfo:
        """Add a variable; the file grows if needed and other mappings remap."""
        check_variable_name(name)
        vt = parse_type(type)
        value = vt.default() if initial is None else initial
        raw = encode_value(vt, name, value)  # validate before touching the file
        with self._directory_locked():
            if name in self._entries:
                raise AlreadyExists(f"variable {name!r} already exists")
            h = self._header
            count = int.from_bytes(self._mv[ff.OFF_VAR_COUNT : ff.OFF_VAR_COUNT + 4], "little")
            if count >= h.dir_capacity:
                raise LimitExceeded(f"service holds at most {h.dir_capacity} variables")
            offset = ff.round_up(self._data_end, 8)
            end = offset + vt.storage_size
            if end > self._acc.file_size():
                new_size = ff.round_up(max(end, 2 * self._acc.file_size()), ff.PAGE)
                self._acc.resize(new_size)
                self._acc.view()[ff.OFF_FILE_SIZE : ff.OFF_FILE_SIZE + 8] = new_size.to_bytes(8, "little")
                self._load()
            mv = self._mv
            mv[offset : offset + len(raw)] = raw
            flags = ff.FLAG_PERSISTENT if persistent else 0
            base = ff.entry_offset(count)
            mv[base : base + ff.ENTRY_SIZE] = ff.pack_entry(name, offset, vt, flags)
            mv[ff.OFF_DATA_END : ff.OFF_DATA_END + 8] = end.to_bytes(8, "little")
            # The count goes last: a reader never sees a half-written entry.
            mv[ff.OFF_VAR_COUNT : ff.OFF_VAR_COUNT + 4] = (count + 1).to_bytes(4, "little")
            self._bump_layout()
            self._load()
        return self.variables()[name]

    def deallocate(self, name: str) -> None:
        """Remove a variable (its slot is retired, never reused)."""
        with self._directory_locked():
            e = self._entries.get(name)
            if e is None:
                raise VariableNotFound(f"no variable {name!r} in service {self.service_id}")
            base = ff.entry_offset(e.index) + ff.E_FLAGS
            self._mv[base : base + 2] = (e.flags | ff.FLAG_FREE).to_bytes(2, "little")
            self._bump_layout()
            self._load()

    def _bump_layout(self) -> None:
        q = self._q
        q[ff.OFF_LAYOUT_GEN // 8] += 1
        q[_SEQ_INDEX] += 1

    # ---------------------------------------------------------------- change tracking
    def _select_kernel(self) -> Any:
        if self._kernel is None:
            from commy.kernels.default import default_kernel

            self._kernel = default_kernel()
        return self._kernel

    @property
    def kernel(self) -> Any:
        return self._select_kernel()

    def _grow_shadow(self) -> None:
        shadow = self._shadow
        assert shadow is not None
        want = self._data_end - self._data_offset
        if len(shadow) < want:
            shadow.extend(bytes(want - len(shadow)))

    def snapshot_shadow(self) -> None:
        """Take the current bytes as the shadow (the 'last known state')."""
        self._refresh_if_changed()
        self._shadow = bytearray(self._mv[self._data_offset : self._data_end])
        self._shadow_base = self._data_offset
        q = self._q
        self._seen = [q[t[1]] for t in self._track]

    def changed_ranges(self) -> list[tuple[int, int]]:
        """File byte ranges that differ from the shadow (absolute offsets)."""
        self._refresh_if_changed()
        if self._shadow is None:
            self._shadow = bytearray(self._data_end - self._data_offset)
            self._shadow_base = self._data_offset
        self._grow_shadow()
        n = len(self._shadow)
        current = self._mv[self._shadow_base : self._shadow_base + n]
        ranges = self._select_kernel().diff(current, self._shadow)
        base = self._shadow_base
        return [(s + base, e + base) for s, e in ranges]

    def variables_in_ranges(self, ranges: list[tuple[int, int]]) -> list[str]:
        """Names of variables overlapping any of ``ranges`` (exact: no neighbours)."""
        bounds = self._bounds
        starts = self._starts
        found: dict[str, None] = {}
        for s, e in ranges:
            i = max(bisect.bisect_right(starts, s) - 1, 0)
            while i < len(bounds) and bounds[i][0] < e:
                vs, ve, name = bounds[i]
                if ve > s:
                    found[name] = None
                i += 1
        return list(found)

    def changed_variables(self) -> list[str]:
        """Variables whose bytes differ from the shadow (shadow left as is)."""
        return self.variables_in_ranges(self.changed_ranges())

    def update_shadow(self, ranges: list[tuple[int, int]] | None = None) -> None:
        """Copy ``ranges`` (default: every changed range) from the file into the shadow."""
        if ranges is None:
            ranges = self.changed_ranges()
        shadow = self._shadow
        assert shadow is not None
        base = self._shadow_base
        n = len(shadow)
        if len(ranges) <= _SMALL_COPY_RANGES:
            # A few small variables (a server commit names one or a few): slice copies
            # cost less than the kernel call and its buffer wrapping (1.2 vs 3.4 µs here).
            for s, e in ranges:
                if not base <= s <= e <= base + n or e - s > _SMALL_COPY_BYTES:
                    break
            else:
                mv = self._mv
                for s, e in ranges:
                    shadow[s - base : e - base] = mv[s:e]
                return
        rel = [(s - base, e - base) for s, e in ranges]
        self._select_kernel().update_shadow(shadow, self._mv[base : base + n], rel)

    def detect_changes(self) -> list[str]:
        """Changed variable names since the last call, and move the shadow forward."""
        self._refresh_if_changed()
        # Versions read *before* the bytes: a write landing in between is seen again by
        # detect_moved (a duplicate at worst), never lost; one the diff saw is not.
        q = self._q
        gen = self._layout_gen
        versions = [q[t[1]] for t in self._track]
        ranges = self.changed_ranges()
        if self._layout_gen == gen:  # else the directory was reloaded during the diff
            self._seen = versions
        if not ranges:
            return []
        names = self.variables_in_ranges(ranges)
        self.update_shadow(ranges)
        return names

    def detect_moved(self) -> list[str]:
        """Like `detect_changes`, but diff less: only variables whose version moved.

        Much cheaper on a freshly woken core than a full diff: one load per variable,
        and a shadow update only for those whose version moved. A moved version is a
        committed write, so the variable is named even if it stored the same value
        (as the server names a remote write). Stores that bypass commy (no version
        bump) are not seen here; a full `detect_changes` finds them.
        """
        if self._shadow is None or self._q[_LAYOUT_INDEX] != self._layout_gen:
            return self.detect_changes()
        q = self._q
        seen = self._seen
        shadow = self._shadow
        base = self._shadow_base
        mv = self._mv
        out = []
        i = 0
        for name, vidx, start, end in self._track:
            v = q[vidx]
            if seen[i] != v:
                seen[i] = v
                if end - base > len(shadow):
                    self._grow_shadow()
                # A moved version is a committed write: named without a byte compare
                # (as the server names a remote write), the shadow just follows it.
                shadow[start - base : end - base] = mv[start:end]
                out.append(name)
            i += 1
        return out

    # ---------------------------------------------------------------- monitoring (seed API)
    @property
    def events(self):
        """The `EventHub` this file's change events go through."""
        if self._hub is None:
            from commy.events import EventHub

            self._hub = EventHub()
        return self._hub

    def init_file_watcher(self, **options: Any) -> None:
        """Prepare change monitoring; options as in `commy.watcher.WatcherOptions`."""
        if self._watcher is not None:
            return
        from commy.watcher import FileWatcher, WatcherOptions

        if not self.is_local:
            self.events  # noqa: B018 - a mirror publishes pushed changes once its hub exists
            return  # a remote mirror gets its events pushed by the server
        self._watcher = FileWatcher(
            self.path, hub=self.events, kernel=self._kernel, options=WatcherOptions(**options)
        )

    def start_file_monitoring(self, **options: Any) -> None:
        """Start emitting `FileChangeEvent`s for this service."""
        self.init_file_watcher(**options)
        if self._watcher is not None:
            self._watcher.start()

    def stop_file_monitoring(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    @property
    def monitoring(self) -> bool:
        return self._watcher is not None and self._watcher.running

    def wait_for_file_change(self, timeout: float | None = None):
        """Block until the next `FileChangeEvent`; `commy.errors.Timeout` after ``timeout`` s."""
        return self.events.wait(timeout)

    def on_file_change(self, callback) -> None:
        """Call ``callback(event)`` in the watcher thread for each event (lowest latency)."""
        self.events.add_callback(callback)

    def try_get_file_change(self):
        """The next pending `FileChangeEvent`, or None."""
        return self.events.try_get()

    def iter_changes(self, timeout: float | None = None) -> Iterator[Any]:
        """``for event in vf.iter_changes(timeout=5): ...``: blocking, no event loop needed.

        Starts monitoring if needed; the loop ends after ``timeout`` seconds without a
        change (never when ``timeout`` is None).
        """
        from commy.errors import Timeout

        if not self.monitoring:
            self.start_file_monitoring()
        while True:
            try:
                event = self.wait_for_file_change(timeout)
            except Timeout:
                return
            yield event

    async def changes(self, buffer: int = 1024):
        """``async for event in vf.changes()``: starts monitoring if needed."""
        if not self.monitoring:
            self.start_file_monitoring()
        async for event in self.events.subscribe(buffer):
            yield event

    # ---------------------------------------------------------------- misc
    def read_all(self) -> dict[str, Any]:
        self._refresh_if_changed()
        return {name: self.read(name) for name in sorted(self._slots)}

    def check_backing(self) -> None:
        """Typed error if the mapped file was deleted, replaced or truncated (local only)."""
        check = getattr(self._acc, "check_backing", None)
        if check is not None:
            check()

    def wait_for_seq(self, seq: int, timeout: float) -> bool:
        """Poll until change_seq differs from ``seq`` (simple fallback wait)."""
        deadline = time.monotonic() + timeout
        while self._q[_SEQ_INDEX] == seq:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.0005)
        return True

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._futex is not None:
            self._futex.close()
            self._futex = None
        for view in self._casts.values():
            view.release()
        self._casts.clear()
        self._slots = {}
        try:
            self._q.release()
        except (AttributeError, BufferError):
            pass
        self._acc.close()

    def __enter__(self) -> VirtualServiceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "local" if self.is_local else "remote"
        return f"<VirtualServiceFile {self.service_id} {where} vars={len(self._slots)}>"


# The seed's name.
VirtualVariableFile = VirtualServiceFile
