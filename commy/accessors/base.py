"""The FileAccessor contract.

The seed's trait is async; here it is synchronous on purpose: a local access through
the mapping costs well under a microsecond and an await would cost more than the work.
Remote accessors keep an in-memory mirror, so their reads are synchronous too; they
forward writes through their transport.
"""

from __future__ import annotations

import abc


class FileAccessor(abc.ABC):
    """Bytes of one service file, local (mapped) or remote (mirrored)."""

    #: True when reads and writes go straight to the shared mapping.
    is_local: bool = False
    #: True when this accessor may not write.
    readonly: bool = False

    @abc.abstractmethod
    def view(self) -> memoryview:
        """A zero-copy view of the whole file (read-only if the accessor is)."""

    @abc.abstractmethod
    def read_bytes(self, offset: int, size: int) -> bytes:
        """A copy of ``size`` bytes at ``offset``; `InvalidOffset` outside the file."""

    @abc.abstractmethod
    def write_bytes(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset``; `InvalidOffset` outside, `PermissionDenied` if read-only."""

    @abc.abstractmethod
    def file_size(self) -> int:
        """The size of the current view in bytes."""

    @abc.abstractmethod
    def resize(self, new_size: int) -> None:
        """Grow the file to ``new_size`` bytes (never shrinks live data) and remap."""

    @abc.abstractmethod
    def refresh(self) -> bool:
        """Remap if another process grew the file; True when the view changed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the view and any OS resources."""

    def fileno(self) -> int | None:
        """A descriptor for locks and doorbells, or None if there is no file here."""
        return None
