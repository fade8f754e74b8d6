"""Python side of the cffi diff kernels: a thin wrapper around one C call per diff."""

from __future__ import annotations

import threading
from typing import Any

from commy.cpu import has_features
from commy.errors import InvalidOffset, SimdError
from commy.kernels.base import Ranges, VariantInfo

# Variant name → (C id, rank, cpu flags it needs).  Ranks: AVX-512 > AVX2 > numba (150)
# > portable u64 here, so the scalar C path loses to numba's vectorised loop.
VARIANTS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "avx512": (3, 300, ("avx512f", "avx512bw")),
    "avx2": (2, 200, ("avx2",)),
    "u64": (1, 100, ()),
}
_ERRORS = {-1: "unknown variant", -2: "CPU lacks the instructions", -3: "bad arguments"}
_FIRST_CAP = 64  # ranges per first C call; most diffs find far fewer


def _load() -> tuple[Any, Any]:
    from commy_kernel_cffi._diff import ffi, lib

    return ffi, lib


def load_error() -> str | None:
    """Why the compiled library cannot be imported, or None if it can."""
    try:
        _load()
    except Exception as exc:  # ImportError, or OSError from a broken .so
        return (
            f"compiled module missing ({exc!r}); rebuild: pip install -e plugins/commy_kernel_cffi"
        )
    return None


class CffiKernel:
    """One variant of the C kernel; safe to share between threads."""

    name = "cffi"

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self._ffi, self._lib = _load()
        self._id = VARIANTS[variant][0]
        self._from_buffer = self._ffi.from_buffer  # default cdecl "char[]", read-only ok
        self._cdiff = self._lib.commy_diff
        self._tls = threading.local()

    def _new_out(self) -> Any:
        # Per-thread output: the C call drops the GIL, so threads must not share one.
        out = self._tls.out = self._ffi.new("int64_t[]", 1 + 2 * _FIRST_CAP)
        return out

    def diff(self, current: Any, shadow: Any, start: int = 0, end: int | None = None) -> Ranges:
        # Kept flat on purpose: at 16 KiB the Python around the C call dominates, so the
        # C side validates lengths and window and reports errors by code.
        a = self._from_buffer(current)
        b = self._from_buffer(shadow)
        try:
            out = self._tls.out
        except AttributeError:
            out = self._new_out()
        n = len(a)
        count = self._cdiff(
            a, b, n, len(b), start, n if end is None else end, self._id, out, _FIRST_CAP
        )
        if count == 0:
            return []  # the common case: nothing changed
        return self._collect(a, b, start, end, out, count, _FIRST_CAP)

    def _collect(
        self, a: Any, b: Any, start: int, end: int | None, out: Any, count: int, cap: int
    ) -> Ranges:
        ffi = self._ffi
        n = len(a)
        stop = n if end is None else end
        ranges: Ranges = []
        while True:
            if count < 0:
                self._raise(count, len(a), len(b), start, end)
            flat = ffi.unpack(out + 1, 2 * count)
            ranges.extend(zip(flat[0::2], flat[1::2], strict=True))
            pos = out[0]
            if pos >= stop:
                return ranges
            # Output was full: continue in a bigger, call-local buffer (dense diffs).
            cap = min(cap * 8, 1 << 20)
            out = ffi.new("int64_t[]", 1 + 2 * cap)
            count = self._cdiff(a, b, n, n, pos, stop, self._id, out, cap)

    def _raise(self, code: int, n: int, m: int, start: int, end: int | None) -> None:
        if code == -4:
            raise InvalidOffset(f"diff buffers differ in length: {n} != {m}")
        if code == -5:
            raise InvalidOffset(f"diff window [{start}, {end}) outside buffer of {n} bytes")
        raise SimdError(f"cffi/{self.variant}: {_ERRORS.get(code, code)}")

    def update_shadow(self, shadow: Any, current: Any, ranges: Ranges) -> None:
        if not ranges:
            return
        ffi = self._ffi
        dst = ffi.from_buffer("char[]", shadow, require_writable=True)
        src = ffi.from_buffer("char[]", current)
        if len(dst) != len(src):
            raise InvalidOffset(f"buffers differ in length: {len(dst)} != {len(src)}")
        flat = [v for r in ranges for v in r]
        rc = self._lib.commy_copy_ranges(
            dst, src, len(dst), ffi.new("int64_t[]", flat), len(ranges)
        )
        if rc != 0:
            raise InvalidOffset(f"shadow update: a range lies outside the {len(dst)}-byte buffer")


class CffiKernelProvider:
    name = "cffi"

    def variants(self) -> list[VariantInfo]:
        err = load_error()
        infos = []
        for vname, (cid, rank, flags) in VARIANTS.items():
            if err is not None:
                infos.append(VariantInfo(vname, False, rank, err))
                continue
            if flags and not has_features(*flags):
                missing = "+".join(flags)
                infos.append(
                    VariantInfo(vname, False, rank, f"CPU lacks {missing} (or COMMY_CPU_HIDE)")
                )
                continue
            _, lib = _load()
            if not lib.commy_variant_supported(cid):
                infos.append(VariantInfo(vname, False, rank, "__builtin_cpu_supports says no"))
                continue
            infos.append(VariantInfo(vname, True, rank, f"C -O3, {vname} path"))
        return infos

    def create(self, variant: str | None = None) -> CffiKernel:
        infos = {v.name: v for v in self.variants()}
        if variant is None:
            usable = [v for v in infos.values() if v.available]
            if not usable:
                reasons = "; ".join(f"{v.name}: {v.reason}" for v in infos.values())
                raise SimdError(f"kernel 'cffi' has no usable variant ({reasons})")
            variant = max(usable, key=lambda v: v.rank).name
        info = infos.get(variant)
        if info is None:
            raise SimdError(
                f"kernel 'cffi' has no variant {variant!r}; choices: {', '.join(infos)}"
            )
        if not info.available:
            raise SimdError(
                f"kernel cffi/{variant} is not available on this machine: {info.reason}"
            )
        return CffiKernel(variant)
