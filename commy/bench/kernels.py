"""Diff-kernel benchmark: every available kernel × variant against memcmp and numpy.

GB/s is buffer length / time per call (both buffers are read, so memory traffic is
twice that).  Each number is the best of several repeats of a loop sized to ~20 ms,
which filters scheduler noise on shared machines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from commy.kernels.selection import select_kernel
from commy.plugins import get_plugins

KiB = 1024
MiB = 1024 * KiB
SIZES: dict[str, int] = {"16KiB": 16 * KiB, "256KiB": 256 * KiB, "64MiB": 64 * MiB}
CASES = ("identical", "sparse")
SPARSE_STRIDE = 64 * KiB  # one changed byte per 64 KiB
_REPEAT_S = 0.02
_REPEATS = 5

Progress = Callable[[str], None] | None


def _interleaved_gbps(fns: list[Callable[[], Any]], size: int, repeats: int) -> list[float]:
    """Best-of-``repeats`` GB/s per callable, timed round-robin.

    Interleaving puts every candidate under the same conditions (turbo, neighbours on a
    shared host), so ratios between them are fairer than back-to-back series.
    """
    numbers = []
    for fn in fns:
        fn()  # warm-up: numba compiles / loads its cache, pages fault in
        t0 = time.perf_counter()
        fn()
        once = max(time.perf_counter() - t0, 1e-7)
        numbers.append(max(1, int(_REPEAT_S / once)))
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, (fn, number) in enumerate(zip(fns, numbers, strict=True)):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / number)
    return [size / t / 1e9 for t in best]


def _buffers(size: int, case: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Random contents: zero-filled buffers can share the kernel's zero page and read
    # from cache, which would flatter every number at 64 MiB.
    a = rng.integers(0, 256, size, dtype=np.uint8)
    b = a.copy()
    if case == "sparse":
        # odd offsets so the change is never block aligned; ≥1 change even at 16 KiB
        for pos in range(min(4099, size // 2 + 7), size, SPARSE_STRIDE):
            b[pos] ^= 0xFF
    return a, b


def _memcmp() -> Callable[[np.ndarray, np.ndarray], Callable[[], Any]] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name)
    libc.memcmp.restype = ctypes.c_int
    libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]

    def make(a: np.ndarray, b: np.ndarray) -> Callable[[], Any]:
        pa, pb, n = a.ctypes.data, b.ctypes.data, a.nbytes
        return lambda: libc.memcmp(pa, pb, n)

    return make


def _numpy_u64(a: np.ndarray, b: np.ndarray) -> Callable[[], Any]:
    def run() -> Any:
        return np.flatnonzero(a.view(np.uint64) != b.view(np.uint64))

    return run


def run_kernel_bench(progress: Progress = None) -> dict:
    """Benchmark kernels and baselines at 16 KiB, 256 KiB, 64 MiB; identical and sparse."""
    say = progress or (lambda _msg: None)
    registry = get_plugins().kernels
    selection = select_kernel(registry)
    kernels = []
    for reg in registry:
        provider = reg.factory()
        for info in provider.variants():
            if info.available:
                kernels.append(provider.create(info.name))
    memcmp = _memcmp()
    rng = np.random.default_rng(12345)
    results: list[dict] = []
    baselines: list[dict] = []
    slow: set[str] = set()
    for label, size in SIZES.items():
        for case in CASES:
            a, b = _buffers(size, case, rng)
            names: list[tuple[str, Any]] = []  # ("kernel", k) or ("baseline", name)
            fns: list[Callable[[], Any]] = []
            for k in kernels:
                key = f"{k.name}/{k.variant}"
                if size >= MiB and key in slow:
                    say(f"{key} {label} {case}: skipped (under 1 GB/s at 256 KiB)")
                    continue
                names.append(("kernel", k))
                fns.append(lambda k=k, a=a, b=b: k.diff(a, b))
            # memcmp only answers "equal?" and stops at the first difference, so it is
            # a baseline for the identical case only.
            if memcmp is not None and case == "identical":
                names.append(("baseline", "memcmp"))
                fns.append(memcmp(a, b))
            names.append(("baseline", "numpy_u64"))
            fns.append(_numpy_u64(a, b))
            repeats = _REPEATS * 2 if size >= MiB else _REPEATS  # DRAM numbers are noisier
            for (kind, what), gbps in zip(
                names, _interleaved_gbps(fns, size, repeats), strict=True
            ):
                if kind == "kernel":
                    key = f"{what.name}/{what.variant}"
                    results.append(
                        {
                            "kernel": what.name,
                            "variant": what.variant,
                            "size": label,
                            "case": case,
                            "gbps": gbps,
                        }
                    )
                    if size < MiB and size > 64 * KiB and gbps < 1.0:
                        slow.add(key)
                else:
                    key = what
                    baselines.append({"name": what, "size": label, "case": case, "gbps": gbps})
                say(f"{key} {label} {case}: {gbps:.2f} GB/s")
    return {
        "selected": selection.label,
        "results": results,
        "baselines": baselines,
        "ratios": _ratios(results, baselines, selection.label),
    }


def _ratios(results: list[dict], baselines: list[dict], selected: str) -> dict[str, float | None]:
    def kernel(label: str | None, size: str, case: str = "identical") -> float | None:
        rows = [
            r["gbps"]
            for r in results
            if r["size"] == size
            and r["case"] == case
            and (label is None or f"{r['kernel']}/{r['variant']}" == label)
        ]
        return max(rows) if rows else None

    def base(name: str, size: str) -> float | None:
        rows = [
            r["gbps"]
            for r in baselines
            if r["name"] == name and r["size"] == size and r["case"] == "identical"
        ]
        return rows[0] if rows else None

    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 3) if x is not None and y else None

    return {
        "best_vs_memcmp_64MiB": ratio(kernel(None, "64MiB"), base("memcmp", "64MiB")),
        "selected_vs_memcmp_64MiB": ratio(kernel(selected, "64MiB"), base("memcmp", "64MiB")),
        "numba_vs_memcmp_64MiB": ratio(kernel("numba/simd", "64MiB"), base("memcmp", "64MiB")),
        "cffi_avx512_vs_numpy_u64_16KiB": ratio(
            kernel("cffi/avx512", "16KiB"), base("numpy_u64", "16KiB")
        ),
        "cffi_avx2_vs_numpy_u64_16KiB": ratio(
            kernel("cffi/avx2", "16KiB"), base("numpy_u64", "16KiB")
        ),
        "selected_vs_numpy_u64_16KiB": ratio(kernel(selected, "16KiB"), base("numpy_u64", "16KiB")),
        "selected_vs_memcmp_16KiB": ratio(kernel(selected, "16KiB"), base("memcmp", "16KiB")),
    }
