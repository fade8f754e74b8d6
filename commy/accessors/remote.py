"""The remote accessor: an in-memory mirror of a service file kept current by the server.

The mirror is a ``bytearray`` copy of the whole file, filled from a ``ReadService``
snapshot and updated in place by ``VariablesUpdated`` pushes, so a `VirtualServiceFile`
over it reads exactly as over a local mapping. Writes change the mirror and are handed to
``on_write(name, value)`` (fire-and-forget) or awaited through ``on_awrite(name, value)``;
the client wires both to ``WriteVariable`` requests.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

from commy import fileformat as ff
from commy.accessors.base import FileAccessor
from commy.errors import InvalidOffset, PermissionDenied
from commy.vartypes import encode_value


class RemoteBufferAccessor(FileAccessor):
    is_local = False

    def __init__(
        self,
        data: bytes | bytearray = b"",
        *,
        readonly: bool = False,
        on_write: Callable[[str, Any], None] | None = None,
        on_awrite: Callable[[str, Any], Awaitable[None]] | None = None,
    ) -> None:
        self.readonly = readonly
        # Set only when there is somewhere to send writes: VirtualServiceFile checks for it.
        if on_write is not None:
            self.on_write = on_write
        if on_awrite is not None:
            self.on_awrite = on_awrite
        self._buf = bytearray()
        self._view: memoryview | None = None
        self._replaced = False
        #: the server's change sequence number this mirror reflects
        self.server_seq = 0
        self._entries: dict[str, ff.Entry] = {}
        self._entries_layout = -1
        if data:
            self.replace(data)

    # ------------------------------------------------------------------ contract
    def view(self) -> memoryview:
        assert self._view is not None, "mirror is empty or closed"
        return self._view

    def read_bytes(self, offset: int, size: int) -> bytes:
        view = self.view()
        if offset < 0 or size < 0 or offset + size > len(view):
            raise InvalidOffset(f"read [{offset}, {offset + size}) outside mirror of {len(view)} bytes")
        return bytes(view[offset : offset + size])

    def write_bytes(self, offset: int, data: bytes) -> None:
        if self.readonly:
            raise PermissionDenied("this mirror is read-only")
        view = self.view()
        if offset < 0 or offset + len(data) > len(view):
            raise InvalidOffset(f"write [{offset}, {offset + len(data)}) outside mirror of {len(view)} bytes")
        view[offset : offset + len(data)] = data

    def file_size(self) -> int:
        return len(self._buf)

    def resize(self, new_size: int) -> None:
        raise PermissionDenied("a remote mirror cannot change the layout; ask the server (allocate_variable)")

    def refresh(self) -> bool:
        replaced, self._replaced = self._replaced, False
        return replaced

    def close(self) -> None:
        self._view = None

    # ------------------------------------------------------------------ mirror updates
    def replace(self, data: bytes | bytearray) -> None:
        """Take a whole new snapshot (validated); the next `refresh` reports it.

        A new buffer rather than an in-place copy: views of the old one may still be
        exported (a bytearray with exports cannot change size).
        """
        header = ff.read_header(data)
        self._buf = bytearray(data)
        self._view = memoryview(self._buf)
        self._replaced = True
        self.server_seq = header.change_seq
        self._entries_layout = -1

    @property
    def layout_generation(self) -> int:
        return struct.unpack_from("<Q", self._buf, ff.OFF_LAYOUT_GEN)[0] if self._buf else 0

    def _entry_map(self) -> dict[str, ff.Entry]:
        gen = self.layout_generation
        if gen != self._entries_layout:
            header = ff.read_header(self._buf)
            entries: dict[str, ff.Entry] = {}
            for e in ff.read_directory(self._buf, header):
                if e.free:
                    entries.pop(e.name, None)
                else:
                    entries[e.name] = e
            self._entries = entries
            self._entries_layout = gen
        return self._entries

    def apply_update(self, seq: int, layout: int, variables: list[tuple[str, int, Any]]) -> bool:
        """Apply pushed ``(name, version, value)`` changes; False when a new snapshot is needed.

        Pushes below the sequence number the mirror already reflects are stale (they
        raced with the snapshot) and are dropped. One at that number is applied: it is
        the next part of a push split for size, or repeats values the mirror holds.
        """
        if not self._buf:
            return False
        if seq < self.server_seq and layout <= self.layout_generation:
            return True
        if layout != self.layout_generation:
            return False
        entries = self._entry_map()
        buf = self._buf
        for name, version, value in variables:
            e = entries.get(name)
            if e is None:
                return False
            raw = encode_value(e.vtype, name, value)
            if e.vtype.single_word:
                buf[e.offset : e.offset + len(raw)] = raw
            else:
                # Put the value in the copy the version names as active, as the server has it.
                start = e.offset + (version & 1) * (e.size // 2)
                buf[start : start + len(raw)] = raw
            struct.pack_into("<Q", buf, e.version_offset, version)
        struct.pack_into("<Q", buf, ff.OFF_CHANGE_SEQ, seq)
        self.server_seq = seq
        return True
