"""The local accessor: the service file mapped into this process (zero-copy)."""

from __future__ import annotations

import logging
import mmap
import os
from pathlib import Path

from commy import fileformat
from commy.accessors.base import FileAccessor
from commy.errors import FileError, FileFormatError, InvalidOffset, PermissionDenied

log = logging.getLogger(__name__)


class LocalFileAccessor(FileAccessor):
    is_local = True

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise FileError(f"service file not found: {str(self.path)!r}") from None
        except OSError as exc:
            raise FileError(f"cannot open service file {str(self.path)!r}: {exc.strerror or exc}") from exc
        self._maps: list[mmap.mmap] = []
        self._view: memoryview | None = None
        try:
            self._map(self._validated_size())
        except BaseException:
            os.close(self._fd)
            raise

    def _validated_size(self) -> int:
        """Check the header with pread before mapping: mapping past EOF would SIGBUS."""
        actual = os.fstat(self._fd).st_size
        head = os.pread(self._fd, fileformat.HEADER_SIZE, 0)
        header = fileformat.read_header(head, actual_size=actual)
        return header.file_size

    def _map(self, size: int) -> None:
        access = mmap.ACCESS_READ if self.readonly else mmap.ACCESS_WRITE
        try:
            m = mmap.mmap(self._fd, size, access=access)
        except (OSError, ValueError) as exc:
            raise FileError(f"cannot map {str(self.path)!r}: {exc}") from exc
        self._maps.append(m)
        self._view = memoryview(m)

    def view(self) -> memoryview:
        assert self._view is not None, "accessor is closed"
        return self._view

    def fileno(self) -> int:
        return self._fd

    def file_size(self) -> int:
        return len(self.view())

    def read_bytes(self, offset: int, size: int) -> bytes:
        view = self.view()
        if offset < 0 or size < 0 or offset + size > len(view):
            raise InvalidOffset(f"read [{offset}, {offset + size}) outside file of {len(view)} bytes")
        return bytes(view[offset : offset + size])

    def write_bytes(self, offset: int, data: bytes) -> None:
        if self.readonly:
            raise PermissionDenied("this mapping is read-only")
        view = self.view()
        if offset < 0 or offset + len(data) > len(view):
            raise InvalidOffset(f"write [{offset}, {offset + len(data)}) outside file of {len(view)} bytes")
        view[offset : offset + len(data)] = data

    def resize(self, new_size: int) -> None:
        if self.readonly:
            raise PermissionDenied("this mapping is read-only")
        if new_size <= self.file_size():
            return
        try:
            fileformat.reserve(self._fd, self.file_size(), new_size)
        except OSError as exc:
            raise FileError(f"cannot grow {str(self.path)!r} to {new_size} bytes: {exc.strerror or exc}") from exc
        self._map(new_size)

    def refresh(self) -> bool:
        current = self.file_size()
        size = int.from_bytes(self.view()[fileformat.OFF_FILE_SIZE : fileformat.OFF_FILE_SIZE + 8], "little")
        if size == current:
            return False
        if size < current:
            raise FileFormatError(f"{str(self.path)!r} shrank underneath us ({current} -> {size} bytes)")
        if os.fstat(self._fd).st_size < size:
            raise FileFormatError(f"{str(self.path)!r} is truncated (header says {size} bytes)")
        self._map(size)
        return True

    def check_backing(self) -> None:
        """Raise a typed error if the file under the mapping was deleted, replaced or truncated.

        One ``fstat`` of the mapped file while all is well (servers call it on every
        request: a path ``stat`` besides cost ~30 µs more on a cold core here): a file
        deleted or replaced (unlinked, or renamed over) has no links left; only then
        does a ``stat`` of the path tell which. Not seen: a file that still has another
        hard link while its path names a new file. A truncation that races with a store
        is still fatal to the storing process (SIGBUS): the OS gives no way to turn that
        into an exception, which is why only commy processes of the owning user should
        write into the data root.
        """
        mine = os.fstat(self._fd)
        if mine.st_nlink == 0:
            try:
                os.stat(self.path)
            except FileNotFoundError:
                raise FileError(f"service file {str(self.path)!r} was deleted underneath this mapping") from None
            raise FileError(f"service file {str(self.path)!r} was replaced underneath this mapping")
        if mine.st_size < self.file_size():
            raise FileFormatError(
                f"service file {str(self.path)!r} was truncated to {mine.st_size} bytes "
                f"underneath a mapping of {self.file_size()}"
            )

    def close(self) -> None:
        if self._view is None:
            return
        try:
            self._view.release()
        except BufferError:
            log.debug("view of %s still exported at close", self.path)
        self._view = None
        for m in self._maps:
            try:
                m.close()
            except BufferError:
                # Someone still holds a view into this mapping; the GC unmaps it later.
                log.debug("mapping of %s still exported at close", self.path)
        self._maps.clear()
        os.close(self._fd)

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if self._view is not None:
                self.close()
        except Exception:
            pass
