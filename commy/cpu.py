"""CPU feature detection, done once per process.

``COMMY_CPU_HIDE`` (comma-separated flags, e.g. ``avx512f,avx2``) hides features from
commy's view: kernels then treat them as missing. It exists to test and to work around
a broken CPU path; it never makes a kernel use a feature the CPU lacks.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache


@lru_cache(maxsize=1)
def _raw_features() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def hidden_features() -> frozenset[str]:
    return frozenset(f.strip().lower() for f in os.environ.get("COMMY_CPU_HIDE", "").split(",") if f.strip())


def cpu_features() -> frozenset[str]:
    """The CPU's feature flags (as in /proc/cpuinfo) minus those hidden by COMMY_CPU_HIDE."""
    return _raw_features() - hidden_features()


def has_features(*names: str) -> bool:
    feats = cpu_features()
    return all(n in feats for n in names)


def machine() -> str:
    return platform.machine()
