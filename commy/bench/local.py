"""``commy bench local``: typed access through the public API vs raw struct on the same mapping.

Each sample times a batch of calls and divides, so the timer's own cost is amortised;
percentiles are over samples. Raw figures use ``struct.unpack_from`` / ``pack_into`` on
the very same mapping, measured in the same run.
"""

from __future__ import annotations

import statistics
import struct
import tempfile
import time
from collections.abc import Callable

BATCH = 200
SAMPLES = 2000


def _samples(fn: Callable[[], None], samples: int, batch: int) -> list[float]:
    out = []
    perf = time.perf_counter_ns
    for _ in range(samples):
        t0 = perf()
        fn()
        out.append((perf() - t0) / batch)
    return out


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def latency_summary(lat_us: list[float]) -> dict:
    """p50/p99 (µs, rounded) and the sample count; None figures when there is none."""
    if not lat_us:
        return {"p50": None, "p99": None, "samples": 0}
    return {"p50": round(_pct(lat_us, 0.5), 1), "p99": round(_pct(lat_us, 0.99), 1), "samples": len(lat_us)}


def run_local_bench(progress=None, samples: int = SAMPLES) -> dict:
    from commy.virtual_file import VirtualServiceFile

    say = progress or (lambda m: None)
    with tempfile.TemporaryDirectory(prefix="commy-bench-") as tmp:
        vf = VirtualServiceFile.create(tmp)
        vf.allocate("counter", "i64")
        vf.allocate("text", "str[32]")
        off = vf.variables()["counter"].offset
        mapping = vf.accessor.view()
        read, write = vf.read, vf.write
        unpack, pack = struct.unpack_from, struct.pack_into
        rng = range(BATCH)

        def api_read() -> None:
            for _ in rng:
                read("counter")

        def api_write() -> None:
            for i in rng:
                write("counter", i)

        def raw_read() -> None:
            for _ in rng:
                unpack("<q", mapping, off)

        def raw_write() -> None:
            for i in rng:
                pack("<q", mapping, off, i)

        def str_read() -> None:
            for _ in rng:
                read("text")

        def str_write() -> None:
            for _ in rng:
                write("text", "hello")

        results: dict[str, list[float]] = {k: [] for k in ("read", "write", "raw_read", "raw_write")}
        extra: dict[str, list[float]] = {"str_read": [], "str_write": []}
        # Interleave rounds so drift and noise hit every measurement alike.
        rounds = 10
        for r in range(rounds):
            say(f"bench local: round {r + 1}/{rounds}")
            results["read"] += _samples(api_read, samples // rounds, BATCH)
            results["raw_read"] += _samples(raw_read, samples // rounds, BATCH)
            results["write"] += _samples(api_write, samples // rounds, BATCH)
            results["raw_write"] += _samples(raw_write, samples // rounds, BATCH)
            extra["str_read"] += _samples(str_read, max(samples // rounds // 10, 5), BATCH)
            extra["str_write"] += _samples(str_write, max(samples // rounds // 10, 5), BATCH)
        mapping = None  # drop the export so the mapping can close
        vf.close()
    out: dict[str, object] = {"variable": "i64", "batch": BATCH, "samples": samples}
    for key, vals in results.items():
        out[f"{key}_ns_p50"] = round(_pct(vals, 0.5), 1)
        out[f"{key}_ns_p99"] = round(_pct(vals, 0.99), 1)
    for key, vals in extra.items():
        out[f"{key}_ns_p50"] = round(statistics.median(vals), 1)
    out["read_vs_raw"] = round(out["read_ns_p50"] / out["raw_read_ns_p50"], 2)  # type: ignore[operator]
    out["write_vs_raw"] = round(out["write_ns_p50"] / out["raw_write_ns_p50"], 2)  # type: ignore[operator]
    out["targets"] = {"read_ns_p50_max": 300, "write_ns_p50_max": 1000}
    out["meets_targets"] = out["read_ns_p50"] <= 300 and out["write_ns_p50"] <= 1000  # type: ignore[operator]
    return out
