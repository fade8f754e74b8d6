"""Python side of the numba diff kernel.

Rank 150: above cffi/u64 (100, scalar C) because the numba loop vectorises, below
cffi/avx2 (200) and cffi/avx512 (300) because numba's per-call dispatch costs several
microseconds, which dominates on small in-cache buffers.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from commy.errors import InvalidOffset, SimdError
from commy.kernels.base import Ranges, VariantInfo

RANK = 150
_FIRST_CAP = 64
_BLOCK, _LANES = 256, 32  # must match _jit.BLOCK / _jit.LANES (not imported: numba is slow)
_lock = threading.Lock()
_jit: Any = None


def default_cache_dir() -> str:
    """A writable numba cache: installed (read-only) packages cannot cache next to source."""
    for base in (
        Path.home() / ".cache" / "commy" / "numba",
        Path(tempfile.gettempdir()) / "commy-numba",
    ):
        try:
            base.mkdir(parents=True, exist_ok=True)
            if os.access(base, os.W_OK):
                return str(base)
        except OSError:
            continue
    return str(Path(tempfile.gettempdir()))


def _load() -> Any:
    global _jit
    if _jit is None:
        with _lock:
            if _jit is None:
                # numba reads NUMBA_CACHE_DIR once, at import time.
                os.environ.setdefault("NUMBA_CACHE_DIR", default_cache_dir())
                from commy_kernel_numba import _jit as jit

                _jit = jit
    return _jit


def unavailable_reason() -> str | None:
    for mod in ("numba", "numpy"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed"
    return None


class NumbaKernel:
    name = "numba"
    variant = "simd"

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._jit = _load()

    def _arrays(self, current: Any, shadow: Any) -> tuple[Any, Any]:
        np = self._np
        a = np.frombuffer(current, dtype=np.uint8)
        b = np.frombuffer(shadow, dtype=np.uint8)
        if a.size != b.size:
            raise InvalidOffset(f"diff buffers differ in length: {a.size} != {b.size}")
        return a, b

    def diff(self, current: Any, shadow: Any, start: int = 0, end: int | None = None) -> Ranges:
        np = self._np
        a, b = self._arrays(current, shadow)
        n = a.size
        if end is None:
            end = n
        if not (0 <= start <= end <= n):
            raise InvalidOffset(f"diff window [{start}, {end}) outside buffer of {n} bytes")
        wa = a[start:end]
        wb = b[start:end]
        blocks = (end - start) // _BLOCK * _BLOCK
        a2 = wa[:blocks].view(np.uint64).reshape(-1, _LANES)
        b2 = wb[:blocks].view(np.uint64).reshape(-1, _LANES)
        out = np.empty((_FIRST_CAP, 2), dtype=np.int64)
        ranges: Ranges = []
        pos = 0
        while True:
            count, pos = self._jit.diff_window(wa, wb, a2, b2, pos, out)
            if count:
                ranges.extend((int(s) + start, int(e) + start) for s, e in out[:count])
            if pos >= end - start:
                return ranges
            out = np.empty((min(out.shape[0] * 8, 1 << 20), 2), dtype=np.int64)

    def update_shadow(self, shadow: Any, current: Any, ranges: Ranges) -> None:
        if not ranges:
            return
        np = self._np
        dst = np.frombuffer(shadow, dtype=np.uint8)
        if dst.flags.writeable is False:
            raise InvalidOffset("shadow buffer is read-only")
        src = np.frombuffer(current, dtype=np.uint8)
        if dst.size != src.size:
            raise InvalidOffset(f"buffers differ in length: {dst.size} != {src.size}")
        arr = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
        if arr.size and (arr.min() < 0 or (arr[:, 1] < arr[:, 0]).any() or arr.max() > dst.size):
            raise InvalidOffset(f"shadow update: a range lies outside the {dst.size}-byte buffer")
        self._jit.copy_ranges(dst, src, arr)


class NumbaKernelProvider:
    name = "numba"

    def variants(self) -> list[VariantInfo]:
        reason = unavailable_reason()
        if reason:
            return [VariantInfo("simd", False, RANK, reason)]
        return [VariantInfo("simd", True, RANK, "numba njit, vectorised 64-byte blocks")]

    def create(self, variant: str | None = None) -> NumbaKernel:
        if variant not in (None, "simd"):
            raise SimdError(f"kernel 'numba' has no variant {variant!r}; choices: simd")
        reason = unavailable_reason()
        if reason:
            raise SimdError(f"kernel numba/simd is not available: {reason}")
        return NumbaKernel()
