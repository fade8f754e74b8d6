"""Pure-Python fallback kernel: lets the core work with no compiled plugin.

It narrows down by comparing slices (each comparison is a C memcmp on bytes), then
scans only the small blocks that differ byte by byte.
"""

from __future__ import annotations

from typing import Any

from commy.kernels.base import (
    Ranges,
    VariantInfo,
    check_same_length,
    copy_ranges,
    resolve_window,
)

_COARSE = 4096
_FINE = 64


class PythonKernel:
    name = "python"
    variant = "bytes"

    def diff(self, current: Any, shadow: Any, start: int = 0, end: int | None = None) -> Ranges:
        n = check_same_length(current, shadow)
        start, end = resolve_window(n, start, end)
        a = memoryview(current).cast("B")
        b = memoryview(shadow).cast("B")
        out: Ranges = []
        run_start = -1  # an open run that may continue into the next block
        pos = start
        while pos < end:
            stop = min(pos + _COARSE, end)
            if a[pos:stop] == b[pos:stop]:
                if run_start >= 0:
                    out.append((run_start, pos))
                    run_start = -1
                pos = stop
                continue
            fine = pos
            while fine < stop:
                fstop = min(fine + _FINE, stop)
                if a[fine:fstop] == b[fine:fstop]:
                    if run_start >= 0:
                        out.append((run_start, fine))
                        run_start = -1
                else:
                    ca = a[fine:fstop].tobytes()
                    cb = b[fine:fstop].tobytes()
                    for i in range(fstop - fine):
                        if ca[i] != cb[i]:
                            if run_start < 0:
                                run_start = fine + i
                        elif run_start >= 0:
                            out.append((run_start, fine + i))
                            run_start = -1
                fine = fstop
            pos = stop
        if run_start >= 0:
            out.append((run_start, end))
        return out

    def update_shadow(self, shadow: Any, current: Any, ranges: Ranges) -> None:
        copy_ranges(shadow, current, ranges)


class PythonKernelProvider:
    name = "python"

    def variants(self) -> list[VariantInfo]:
        return [VariantInfo("bytes", True, 10, "pure Python, always available")]

    def create(self, variant: str | None = None) -> PythonKernel:
        if variant not in (None, "bytes"):
            from commy.errors import SimdError

            raise SimdError(f"kernel 'python' has no variant {variant!r}; choices: bytes")
        return PythonKernel()
