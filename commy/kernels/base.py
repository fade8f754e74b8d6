"""The kernel contract and the byte-by-byte reference every kernel must match."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

from commy.errors import InvalidOffset

Ranges = list[tuple[int, int]]


@attrs.frozen
class VariantInfo:
    name: str
    available: bool
    rank: int
    reason: str = ""


@runtime_checkable
class DiffKernel(Protocol):
    name: str
    variant: str

    def diff(self, current: Any, shadow: Any, start: int = 0, end: int | None = None) -> Ranges: ...

    def update_shadow(self, shadow: Any, current: Any, ranges: Ranges) -> None: ...


@runtime_checkable
class KernelProvider(Protocol):
    name: str

    def variants(self) -> list[VariantInfo]: ...

    def create(self, variant: str | None = None) -> DiffKernel: ...


def _nbytes(buf: Any) -> int:
    return memoryview(buf).nbytes


def check_same_length(current: Any, shadow: Any) -> int:
    n = _nbytes(current)
    m = _nbytes(shadow)
    if n != m:
        raise InvalidOffset(f"diff buffers differ in length: {n} != {m}")
    return n


def resolve_window(length: int, start: int, end: int | None) -> tuple[int, int]:
    if end is None:
        end = length
    if not (0 <= start <= end <= length):
        raise InvalidOffset(f"diff window [{start}, {end}) outside buffer of {length} bytes")
    return start, end


def reference_ranges(current: Any, shadow: Any, start: int = 0, end: int | None = None) -> Ranges:
    """Byte-by-byte reference: maximal runs of differing bytes. Slow; for tests."""
    n = check_same_length(current, shadow)
    start, end = resolve_window(n, start, end)
    a = memoryview(current).cast("B")
    b = memoryview(shadow).cast("B")
    out: Ranges = []
    run_start = -1
    for i in range(start, end):
        if a[i] != b[i]:
            if run_start < 0:
                run_start = i
        elif run_start >= 0:
            out.append((run_start, i))
            run_start = -1
    if run_start >= 0:
        out.append((run_start, end))
    return out


def copy_ranges(shadow: Any, current: Any, ranges: Ranges) -> None:
    """Copy ``ranges`` of ``current`` into ``shadow`` (a plain, correct shadow update)."""
    dst = memoryview(shadow).cast("B")
    src = memoryview(current).cast("B")
    n = len(src)
    if len(dst) != n:
        raise InvalidOffset(f"shadow update buffers differ in length: {len(dst)} != {n}")
    for s, e in ranges:
        if not 0 <= s <= e <= n:
            raise InvalidOffset(f"shadow update range [{s}, {e}) outside buffer of {n} bytes")
        dst[s:e] = src[s:e]
