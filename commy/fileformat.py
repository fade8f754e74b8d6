"""The self-describing service file (``.mem``): byte layout, creation and validation.

Layout (little-endian, see docs/file-format.md)::

    [0, 256)                    header
    [256, 256 + 128*capacity)   variable directory, one 128-byte entry per variable
    [data_offset, file_size)    data region (page aligned start, 8-byte aligned values)

Every reader validates what it maps: a truncated, foreign or corrupted file raises
`FileFormatError` and never makes the interpreter read outside the mapping.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
import uuid
from pathlib import Path

import attrs

from commy.errors import FileError, FileFormatError, InvalidRequest
from commy.vartypes import VarType, type_from_code

MAGIC = b"COMMYSVC"
FORMAT_VERSION = 1
HEADER_SIZE = 256
ENTRY_SIZE = 128
PAGE = 4096
NAME_BYTES = 64
DEFAULT_DIR_CAPACITY = 256
DEFAULT_DATA_CAPACITY = PAGE

# header field offsets
OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_SERVICE_ID = 16
OFF_LAYOUT_GEN = 32
OFF_CHANGE_SEQ = 40  # u64; its low 32 bits are a futex word for fast wake-ups
OFF_LOCALITY = 48
OFF_FILE_SIZE = 64
OFF_DIR_OFFSET = 72
OFF_DIR_CAPACITY = 80
OFF_VAR_COUNT = 84
OFF_ENTRY_SIZE = 88
OFF_FLAGS = 92
OFF_DATA_OFFSET = 96
OFF_DATA_END = 104
OFF_WAITERS = 112  # u32: processes blocked on the futex word
OFF_WATCHERS = 116  # u32: doorbell watchers; writers ring only when someone listens
OFF_LISTENERS = 112  # the u64 holding both counters: one load tells a writer "nobody listens"
OFF_DOORBELL = 120  # one byte rewritten with pwrite() so inotify sees a commit
LOCK_DIRECTORY = 128  # byte locked (OFD lock) while the directory changes

# entry field offsets (relative to the entry)
E_NAME = 0
E_OFFSET = 64
E_SIZE = 72
E_VERSION = 80  # u64 per-variable version / seqlock: odd while a write is in progress
E_TYPE = 88
E_FLAGS = 90
E_COUNT = 92
E_CAPACITY = 96

FLAG_PERSISTENT = 1
FLAG_FREE = 2  # deallocated; its slot is never reused so stale readers stay harmless

FILE_NAME = re.compile(r"^service_[0-9a-f]{32}\.mem$")


@attrs.frozen
class Header:
    format_version: int
    service_id: str
    layout_generation: int
    change_seq: int
    locality_token: bytes
    file_size: int
    dir_offset: int
    dir_capacity: int
    var_count: int
    data_offset: int
    data_end: int


@attrs.frozen
class Entry:
    index: int
    name: str
    offset: int
    size: int
    version: int
    vtype: VarType
    flags: int

    @property
    def persistent(self) -> bool:
        return bool(self.flags & FLAG_PERSISTENT)

    @property
    def free(self) -> bool:
        return bool(self.flags & FLAG_FREE)

    @property
    def version_offset(self) -> int:
        return HEADER_SIZE + self.index * ENTRY_SIZE + E_VERSION


def entry_offset(index: int) -> int:
    return HEADER_SIZE + index * ENTRY_SIZE


def round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def ensure_data_dir(path: str | os.PathLike[str]) -> Path:
    """Create the data root ``0700`` (tightening it if it is looser)."""
    root = Path(path).expanduser()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if root.stat().st_mode & 0o077:
            root.chmod(0o700)
    except OSError as exc:
        raise FileError(f"cannot prepare data root {str(root)!r}: {exc.strerror or exc}") from exc
    return root


def new_file_name() -> str:
    return f"service_{uuid.uuid4().hex}.mem"


def service_path(data_dir: str | os.PathLike[str], file_name: str) -> Path:
    """The path of a service file; the name must be one commy generated."""
    if not FILE_NAME.match(file_name):
        raise InvalidRequest(f"not a commy service file name: {file_name!r}")
    return Path(data_dir).expanduser() / file_name


def create_service_file(
    data_dir: str | os.PathLike[str],
    *,
    dir_capacity: int = DEFAULT_DIR_CAPACITY,
    data_capacity: int = DEFAULT_DATA_CAPACITY,
    file_name: str | None = None,
) -> Path:
    """Create an empty service file (``0600``) named by a random id; returns its path."""
    if not 1 <= dir_capacity <= 1 << 20:
        raise InvalidRequest(f"directory capacity must be 1..{1 << 20}, got {dir_capacity}")
    root = ensure_data_dir(data_dir)
    name = file_name or new_file_name()
    path = service_path(root, name)
    data_offset = round_up(HEADER_SIZE + dir_capacity * ENTRY_SIZE, PAGE)
    file_size = data_offset + round_up(max(data_capacity, 8), PAGE)
    header = bytearray(HEADER_SIZE)
    header[OFF_MAGIC : OFF_MAGIC + 8] = MAGIC
    struct.pack_into("<II", header, OFF_VERSION, FORMAT_VERSION, HEADER_SIZE)
    sid = uuid.UUID(hex=name[len("service_") : -len(".mem")])
    header[OFF_SERVICE_ID : OFF_SERVICE_ID + 16] = sid.bytes
    struct.pack_into("<QQ", header, OFF_LAYOUT_GEN, 1, 0)
    header[OFF_LOCALITY : OFF_LOCALITY + 16] = secrets.token_bytes(16)
    struct.pack_into("<QQIII", header, OFF_FILE_SIZE, file_size, HEADER_SIZE, dir_capacity, 0, ENTRY_SIZE)
    struct.pack_into("<QQ", header, OFF_DATA_OFFSET, data_offset, data_offset)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise FileError(f"cannot create service file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        reserve(fd, 0, file_size)
        os.pwrite(fd, bytes(header), 0)
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise FileError(f"cannot write service file {str(path)!r}: {exc.strerror or exc}") from exc
    os.close(fd)
    return path


def reserve(fd: int, start: int, end: int) -> None:
    """Give the file real blocks for ``[start, end)``, not a sparse hole.

    A store into a hole of a shared mapping on a full disk kills the process with
    SIGBUS; reserving up front turns a full disk into an ENOSPC error here instead.
    """
    try:
        os.posix_fallocate(fd, start, end - start)
    except OSError as exc:
        if exc.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: filesystem cannot; fall back
            raise
        os.ftruncate(fd, end)


def read_header(buf: bytes | memoryview, actual_size: int | None = None) -> Header:
    """Parse and validate the header; ``actual_size`` is the mapped/file length."""
    size = len(buf) if actual_size is None else actual_size
    if size < HEADER_SIZE:
        raise FileFormatError(f"file too short for a commy header ({size} < {HEADER_SIZE} bytes)")
    mv = memoryview(buf)
    if bytes(mv[0:8]) != MAGIC:
        raise FileFormatError("not a commy service file (bad magic)")
    version, header_size = struct.unpack_from("<II", mv, OFF_VERSION)
    if version != FORMAT_VERSION:
        raise FileFormatError(f"unsupported format version {version} (this commy reads {FORMAT_VERSION})")
    if header_size != HEADER_SIZE:
        raise FileFormatError(f"bad header size {header_size}")
    service_id = uuid.UUID(bytes=bytes(mv[OFF_SERVICE_ID : OFF_SERVICE_ID + 16])).hex
    layout_gen, change_seq = struct.unpack_from("<QQ", mv, OFF_LAYOUT_GEN)
    token = bytes(mv[OFF_LOCALITY : OFF_LOCALITY + 16])
    file_size, dir_offset, dir_capacity, var_count, entry_size = struct.unpack_from(
        "<QQIII", mv, OFF_FILE_SIZE
    )
    data_offset, data_end = struct.unpack_from("<QQ", mv, OFF_DATA_OFFSET)
    if entry_size != ENTRY_SIZE or dir_offset != HEADER_SIZE:
        raise FileFormatError("corrupted header (directory geometry)")
    if not 1 <= dir_capacity <= 1 << 20 or var_count > dir_capacity:
        raise FileFormatError(f"corrupted header (capacity {dir_capacity}, count {var_count})")
    if data_offset != round_up(HEADER_SIZE + dir_capacity * ENTRY_SIZE, PAGE):
        raise FileFormatError("corrupted header (data offset)")
    if not data_offset <= data_end <= file_size:
        raise FileFormatError(f"corrupted header (data end {data_end}, file size {file_size})")
    if file_size % PAGE or file_size < data_offset:
        raise FileFormatError(f"corrupted header (file size {file_size})")
    if file_size > size:
        raise FileFormatError(f"file truncated: header says {file_size} bytes, found {size}")
    return Header(
        version, service_id, layout_gen, change_seq, token, file_size, dir_offset, dir_capacity,
        var_count, data_offset, data_end,
    )


def read_entry(buf: bytes | memoryview, header: Header, index: int) -> Entry:
    base = entry_offset(index)
    mv = memoryview(buf)
    raw_name = bytes(mv[base + E_NAME : base + E_NAME + NAME_BYTES]).rstrip(b"\0")
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        raise FileFormatError(f"corrupted directory entry {index} (name)") from None
    offset, size, version = struct.unpack_from("<QQQ", mv, base + E_OFFSET)
    type_code, flags, count, capacity = struct.unpack_from("<HHII", mv, base + E_TYPE)
    try:
        vtype = type_from_code(type_code, count, capacity)
    except KeyError:
        raise FileFormatError(f"corrupted directory entry {index} (type code {type_code})") from None
    if not name or size != vtype.storage_size or offset % 8:
        raise FileFormatError(f"corrupted directory entry {index} ({name!r})")
    if not header.data_offset <= offset <= offset + size <= header.data_end:
        raise FileFormatError(f"directory entry {index} ({name!r}) points outside the data region")
    return Entry(index, name, offset, size, version, vtype, flags)


def read_directory(buf: bytes | memoryview, header: Header) -> list[Entry]:
    return [read_entry(buf, header, i) for i in range(header.var_count)]


def pack_entry(name: str, offset: int, vtype: VarType, flags: int) -> bytes:
    raw = name.encode("utf-8")
    out = bytearray(ENTRY_SIZE)
    out[0 : len(raw)] = raw
    struct.pack_into("<QQQ", out, E_OFFSET, offset, vtype.storage_size, 0)
    struct.pack_into("<HHII", out, E_TYPE, vtype.base.code, flags, vtype.count, vtype.capacity)
    return bytes(out)
