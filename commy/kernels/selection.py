"""Pick the diff kernel: config names one, or the hardware-capability ranking decides.

Ranking: every registered provider lists its variants with availability and a rank for
this machine; each available variant is also calibrated briefly on an in-cache buffer
(whole calibration ≤ ~50 ms, cached per process). The highest rank wins; calibrated
speed breaks ties.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from commy.errors import PluginError, SimdError
from commy.kernels.base import DiffKernel, VariantInfo

CALIBRATION_BYTES = 16 * 1024
CALIBRATION_BUDGET_S = 0.05


@attrs.frozen
class KernelChoice:
    kernel: str
    variant: str
    available: bool
    rank: int
    reason: str
    gbps: float | None


@attrs.frozen
class Selection:
    kernel: DiffKernel
    table: list[KernelChoice]
    why: str

    @property
    def label(self) -> str:
        return f"{self.kernel.name}/{self.kernel.variant}"


_calibration_cache: dict[tuple[str, str], float] = {}


def _calibrate(kernel: DiffKernel, deadline: float) -> float | None:
    key = (kernel.name, kernel.variant)
    if key in _calibration_cache:
        return _calibration_cache[key]
    a = bytearray(CALIBRATION_BYTES)
    b = bytearray(CALIBRATION_BYTES)
    kernel.diff(a, b)  # warm-up (first call may compile or fault pages in)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        kernel.diff(a, b)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    gbps = CALIBRATION_BYTES / best / 1e9 if best > 0 else None
    if gbps is not None:
        _calibration_cache[key] = gbps
    return gbps


def _provider_variants(name: str, provider: Any) -> list[VariantInfo]:
    try:
        return list(provider.variants())
    except Exception as exc:
        return [VariantInfo("?", False, 0, f"variants() failed: {exc!r}")]


def rank_kernels(registry, calibrate: bool = True) -> list[KernelChoice]:
    """Every registered kernel × variant, sorted best first."""
    table: list[KernelChoice] = []
    per_variant_budget = CALIBRATION_BUDGET_S / 8
    for reg in registry:
        try:
            provider = reg.factory()
        except Exception as exc:
            table.append(KernelChoice(reg.name, "?", False, 0, f"provider failed: {exc!r}", None))
            continue
        for info in _provider_variants(reg.name, provider):
            gbps = None
            available = info.available
            reason = info.reason
            if available and calibrate:
                try:
                    kernel = provider.create(info.name)
                    gbps = _calibrate(kernel, time.perf_counter() + per_variant_budget)
                except Exception as exc:  # a variant that fails here is not available
                    available, reason = False, f"failed to run: {exc!r}"
            table.append(KernelChoice(reg.name, info.name, available, info.rank, reason, gbps))
    table.sort(key=lambda c: (c.available, c.rank, c.gbps or 0.0), reverse=True)
    return table


def _calibrate_rows(registry, table: list[KernelChoice], which: set[tuple[str, str]]) -> list[KernelChoice]:
    out = []
    budget = CALIBRATION_BUDGET_S / max(len(which), 1)
    for c in table:
        if (c.kernel, c.variant) in which:
            try:
                kernel = registry.get(c.kernel)().create(c.variant)
                c = attrs.evolve(c, gbps=_calibrate(kernel, time.perf_counter() + budget))
            except Exception as exc:
                c = attrs.evolve(c, available=False, reason=f"failed to run: {exc!r}")
        out.append(c)
    out.sort(key=lambda c: (c.available, c.rank, c.gbps or 0.0), reverse=True)
    return out


def select_kernel(
    registry, name: str | None = None, variant: str | None = None, calibrate: bool | None = None
) -> Selection:
    """The kernel config asks for, or the best ranked one.

    ``calibrate=None`` calibrates only when the ranking decides: a kernel named by
    config starts without importing or timing the others (numba alone costs ~1 s).
    """
    if calibrate is None and not name:
        # Calibration only breaks ties between the best ranked variants; timing the
        # rest would import and compile them for nothing.
        table = rank_kernels(registry, calibrate=False)
        best = max((c.rank for c in table if c.available), default=None)
        tied = [c for c in table if c.available and c.rank == best]
        if len(tied) > 1:
            table = _calibrate_rows(registry, table, {(c.kernel, c.variant) for c in tied})
    else:
        table = rank_kernels(registry, calibrate=bool(calibrate))
    if name:
        if name not in registry:
            choices = ", ".join(registry.names()) or "none"
            raise PluginError(f"unknown kernel {name!r} (kernel.name / COMMY_KERNEL); choices: {choices}")
        rows = [c for c in table if c.kernel == name]
        if variant:
            row = next((c for c in rows if c.variant == variant), None)
            if row is None:
                choices = ", ".join(c.variant for c in rows) or "none"
                raise SimdError(f"kernel {name!r} has no variant {variant!r}; choices: {choices}")
            if not row.available:
                raise SimdError(f"kernel {name}/{variant} is not available on this machine: {row.reason}")
        elif not any(c.available for c in rows):
            reasons = "; ".join(f"{c.variant}: {c.reason}" for c in rows)
            avail = ", ".join(sorted({f"{c.kernel}/{c.variant}" for c in table if c.available}))
            raise SimdError(f"kernel {name!r} is not available here ({reasons}); available: {avail}")
        kernel = registry.get(name)().create(variant)
        why = f"named by config ({name}{'/' + variant if variant else ''})"
        return Selection(kernel, table, why)
    if variant:
        raise PluginError("kernel.variant needs kernel.name as well")
    for choice in table:
        if choice.available:
            kernel = registry.get(choice.kernel)().create(choice.variant)
            speed = f", {choice.gbps:.1f} GB/s calibrated" if choice.gbps else ""
            return Selection(kernel, table, f"highest rank ({choice.rank}{speed})")
    raise SimdError("no diff kernel is available (is the builtin_kernels plugin disabled?)")
