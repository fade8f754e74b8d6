"""Diff kernels: find the byte ranges where two equally long buffers differ.

The contract every kernel plugin implements (see docs/kernels.md):

* A plugin registers a *provider* through ``commy_register_kernels``:
  ``register("cffi", factory)`` where ``factory()`` returns a `KernelProvider`.
* ``provider.variants()`` lists `VariantInfo` (name, available, rank, reason). The rank
  expresses how good the variant is for this machine's capabilities; higher wins.
* ``provider.create(variant)`` returns a `DiffKernel`; ``variant=None`` means the
  provider's best available one. Asking for a variant this machine cannot run raises
  `commy.errors.SimdError` — it must never crash the process.
* ``kernel.diff(current, shadow, start=0, end=None)`` returns the exact, coalesced
  ``[start, end)`` byte ranges (maximal runs of differing bytes), sorted, as a list of
  ``(start, end)`` int tuples, restricted to the window ``[start, end)``. Buffers are any
  objects with the buffer protocol (mmap, bytes, bytearray, memoryview, numpy arrays)
  and are never copied.
* ``kernel.update_shadow(shadow, current, ranges)`` copies those ranges from
  ``current`` into the writable ``shadow``.
"""

from commy.kernels.base import (
    DiffKernel,
    KernelProvider,
    VariantInfo,
    check_same_length,
    copy_ranges,
    reference_ranges,
    resolve_window,
)

__all__ = [
    "DiffKernel",
    "KernelProvider",
    "VariantInfo",
    "check_same_length",
    "copy_ranges",
    "reference_ranges",
    "resolve_window",
]
