"""Diff kernels: every installed kernel × every variant this CPU runs must match the
byte-by-byte reference exactly, on any buffer type, window and alignment."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commy.errors import InvalidOffset, PluginError, SimdError
from commy.kernels import reference_ranges
from commy.kernels.selection import select_kernel
from commy.plugins import load_plugins

# Entry points included: proves the installed plugins are discoverable.
PLUGINS = load_plugins()


def _available() -> list[tuple[str, str]]:
    out = []
    for reg in PLUGINS.kernels:
        for info in reg.factory().variants():
            if info.available:
                out.append((reg.name, info.name))
    return out


AVAILABLE = _available()
IDS = [f"{k}/{v}" for k, v in AVAILABLE]
_kernel_cache: dict[tuple[str, str], object] = {}


@pytest.fixture(params=AVAILABLE, ids=IDS)
def kernel(request):
    key = request.param
    if key not in _kernel_cache:
        _kernel_cache[key] = PLUGINS.kernels.get(key[0])().create(key[1])
    return _kernel_cache[key]


def np_ranges(a, b, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Fast reference for big buffers (checked against reference_ranges below)."""
    x = np.frombuffer(a, dtype=np.uint8)
    y = np.frombuffer(b, dtype=np.uint8)
    end = x.size if end is None else end
    d = (x[start:end] != y[start:end]).astype(np.int8)
    edges = np.diff(np.concatenate(([0], d, [0])).astype(np.int8))
    starts = np.flatnonzero(edges == 1) + start
    ends = np.flatnonzero(edges == -1) + start
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _mutate(buf: bytearray, runs: list[tuple[int, int]]) -> None:
    for off, length in runs:
        for i in range(off, min(off + length, len(buf))):
            buf[i] ^= 0xA5


# --- the installed plugins -------------------------------------------------------------


def test_plugins_are_discovered_through_entry_points():
    names = PLUGINS.kernels.names()
    assert {"cffi", "numba", "python"} <= set(names)
    assert PLUGINS.kernels.registration("cffi").plugin == "kernel_cffi"
    assert PLUGINS.kernels.registration("numba").plugin == "kernel_numba"


def test_plugin_discovery_imports_neither_numba_nor_the_compiled_module():
    code = textwrap.dedent(
        """
        import sys
        from commy.plugins import load_plugins
        p = load_plugins()
        assert "cffi" in p.kernels and "numba" in p.kernels
        heavy = [m for m in ("numba", "numpy", "commy_kernel_cffi._diff") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_fast_reference_matches_reference():
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 64, 65, 300, 2049):
        a = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        b = bytearray(a)
        for i in rng.integers(0, max(n, 1), n // 5):
            if n:
                b[int(i)] ^= 1
        for s, e in ((0, n), (n // 3, n - n // 4), (n, n)):
            assert np_ranges(a, b, s, e) == reference_ranges(a, b, s, e)


# --- exactness ----------------------------------------------------------------------------

runs_strategy = st.lists(
    st.tuples(st.integers(0, 4200), st.integers(1, 300)), min_size=0, max_size=12
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(0, 4200),
    runs=runs_strategy,
    lead=st.integers(0, 15),
    window=st.tuples(st.floats(0, 1), st.floats(0, 1)),
)
def test_matches_reference_random(kernel, n, runs, lead, window):
    # `lead` shifts the data inside a larger buffer so starts are unaligned
    base_a = bytearray(os.urandom(n + lead + 3))
    base_b = bytearray(base_a)
    _mutate(base_b, [(off + lead, ln) for off, ln in runs])
    a = memoryview(base_a)[lead : lead + n]
    b = memoryview(base_b)[lead : lead + n]
    lo, hi = sorted(window)
    start, end = int(lo * n), int(hi * n)
    expected = reference_ranges(a, b, start, end)
    assert kernel.diff(a, b, start, end) == expected
    assert kernel.diff(a, b) == reference_ranges(a, b)


@pytest.mark.parametrize("n", [1 << 20, (1 << 20) + 77])
@pytest.mark.parametrize("density", ["sparse", "dense"])
def test_big_buffers(kernel, n, density):
    rng = np.random.default_rng(n)
    a = rng.integers(0, 256, n, dtype=np.uint8)
    b = a.copy()
    if density == "sparse":
        idx = rng.integers(0, n, 40)
    else:
        idx = rng.integers(0, n, n // 3)  # many short runs: overflows the first output
    b[idx] ^= 0x10
    expected = np_ranges(a, b)
    assert kernel.diff(a, b) == expected
    assert kernel.diff(a, b, 13, n - 11) == np_ranges(a, b, 13, n - 11)


def test_identical_and_empty(kernel):
    for n in (0, 1, 63, 64, 65, 16384, 1 << 20):
        a = bytes(os.urandom(n))
        assert kernel.diff(a, bytearray(a)) == []
    a = bytearray(100)
    assert kernel.diff(a, a, 50, 50) == []


def test_first_and_last_byte(kernel):
    for n in (1, 2, 31, 64, 257, 4099):
        a = bytearray(os.urandom(n))
        b = bytearray(a)
        b[0] ^= 1
        b[-1] ^= 2  # ^3 when n == 1: still differs
        expected = [(0, n)] if n <= 2 else [(0, 1), (n - 1, n)]
        assert kernel.diff(a, b) == expected


def test_all_bytes_differ(kernel):
    n = 300_001
    a = np.zeros(n, np.uint8)
    b = np.full(n, 0xFF, np.uint8)
    assert kernel.diff(a, b) == [(0, n)]
    assert kernel.diff(a, b, 5, n - 5) == [(5, n - 5)]


def test_alternating_bytes_overflow_output(kernel):
    n = 20_000
    a = np.zeros(n, np.uint8)
    b = a.copy()
    b[1::2] = 1
    assert kernel.diff(a, b) == [(i, i + 1) for i in range(1, n, 2)]


@pytest.mark.parametrize(
    "runs",
    [
        [(60, 10)],  # crosses 64
        [(250, 12)],  # crosses 256
        [(511, 2)],  # crosses 512 (AVX-512 block)
        [(127, 2), (128 + 64, 1)],
        [(1000, 3000)],  # spans many blocks
        [(63, 1), (64, 1)],  # adjacent across a boundary: one run
    ],
)
def test_runs_crossing_block_boundaries(kernel, runs):
    a = bytearray(os.urandom(8192))
    b = bytearray(a)
    _mutate(b, runs)
    assert kernel.diff(a, b) == reference_ranges(a, b)
    for start in (1, 61, 255, 513):
        assert kernel.diff(a, b, start, 8192 - 3) == reference_ranges(a, b, start, 8192 - 3)


# --- buffers, shadow update, errors ------------------------------------------------------


def _buffer_pairs(tmp_path):
    data = os.urandom(10_000)
    changed = bytearray(data)
    _mutate(changed, [(0, 1), (4095, 3), (9999, 1)])
    path = tmp_path / "cur.bin"
    path.write_bytes(bytes(changed))
    fh = open(path, "rb")  # noqa: SIM115 - closed by the test
    ro_map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    anon = mmap.mmap(-1, len(data))
    anon[:] = bytes(changed)
    padded = bytearray(b"x" + bytes(changed) + b"y")
    return (
        data,
        {
            "bytes": bytes(changed),
            "bytearray": bytearray(changed),
            "memoryview_odd": memoryview(padded)[1:-1],
            "numpy_u8": np.frombuffer(bytes(changed), np.uint8).copy(),
            "numpy_u16": np.frombuffer(bytes(changed), np.uint16).copy(),
            "mmap_readonly": ro_map,
            "mmap_anon": anon,
        },
        [fh, ro_map, anon],
    )


def test_buffer_types(kernel, tmp_path):
    data, currents, closers = _buffer_pairs(tmp_path)
    try:
        expected = reference_ranges(currents["bytes"], data)
        for label, cur in currents.items():
            assert kernel.diff(cur, data) == expected, label
            shadow = bytearray(data)
            assert kernel.diff(cur, shadow) == expected, label
            kernel.update_shadow(shadow, cur, expected)
            assert bytes(shadow) == bytes(memoryview(cur).cast("B")), label
            assert kernel.diff(cur, shadow) == [], label
    finally:
        for c in reversed(closers):
            c.close()


def test_update_shadow_into_numpy_and_mmap(kernel):
    a = np.frombuffer(os.urandom(5000), np.uint8).copy()
    for shadow in (np.zeros(5000, np.uint8), mmap.mmap(-1, 5000)):
        ranges = kernel.diff(a, shadow)
        kernel.update_shadow(shadow, a, ranges)
        assert bytes(memoryview(shadow)) == a.tobytes()
        if isinstance(shadow, mmap.mmap):
            shadow.close()


def test_bad_windows_and_lengths(kernel):
    a = bytearray(100)
    with pytest.raises(InvalidOffset):
        kernel.diff(a, bytearray(99))
    for start, end in ((-1, 10), (10, 5), (0, 101), (101, 101)):
        with pytest.raises(InvalidOffset):
            kernel.diff(a, a, start, end)
    with pytest.raises(InvalidOffset):
        kernel.update_shadow(bytearray(100), a, [(90, 101)])
    with pytest.raises((InvalidOffset, TypeError, BufferError, ValueError)):
        kernel.update_shadow(bytes(100), a, [(0, 1)])


# --- variants, forcing and selection --------------------------------------------------


def test_forcing_hidden_variant_raises(monkeypatch):
    monkeypatch.setenv("COMMY_CPU_HIDE", "avx512f,avx512bw,avx2")
    provider = PLUGINS.kernels.get("cffi")()
    infos = {v.name: v for v in provider.variants()}
    assert not infos["avx512"].available and not infos["avx2"].available
    assert infos["u64"].available
    for variant in ("avx512", "avx2"):
        with pytest.raises(SimdError):
            provider.create(variant)
        with pytest.raises(SimdError):
            select_kernel(PLUGINS.kernels, "cffi", variant, calibrate=False)
    with pytest.raises(SimdError):
        provider.create("sse9")
    sel = select_kernel(PLUGINS.kernels, calibrate=False)
    assert sel.label == "numba/simd"  # rank 150 beats cffi/u64 (100)


def test_forcing_in_subprocess_never_crashes():
    # A SIGILL would show as a negative return code instead of a clean exit.
    code = textwrap.dedent(
        """
        import os
        from commy.errors import SimdError
        from commy.plugins import load_plugins
        prov = load_plugins().kernels.get("cffi")()
        for v in ("avx512", "avx2"):
            try:
                prov.create(v)
            except SimdError:
                pass
            else:
                raise SystemExit(f"{v} was created although hidden")
        # The C side refuses on its own too: call it with every variant id.
        from commy_kernel_cffi._diff import ffi, lib
        a = ffi.from_buffer(bytearray(4096))
        out = ffi.new("int64_t[]", 3)
        for vid, flag in ((3, "avx512f"), (2, "avx2")):
            rc = lib.commy_diff(a, a, 4096, 4096, 0, 4096, vid, out, 1)
            real = flag in open("/proc/cpuinfo").read()
            assert (rc == 0) if real else (rc == -2), (vid, rc)
        print("ok")
        """
    )
    env = dict(os.environ, COMMY_CPU_HIDE="avx512f,avx512bw,avx2")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.strip() == "ok"


def test_default_selection_prefers_avx512():
    from commy.cpu import has_features

    if not has_features("avx512f", "avx512bw"):
        pytest.skip("this CPU lacks avx512f+avx512bw")
    assert select_kernel(PLUGINS.kernels).label == "cffi/avx512"


def test_default_selection_without_avx512():
    from commy.cpu import has_features

    if has_features("avx512f", "avx512bw") or not has_features("avx2"):
        pytest.skip("covers AVX2-only CPUs")
    assert select_kernel(PLUGINS.kernels).label == "cffi/avx2"


def test_unknown_kernel_lists_choices():
    with pytest.raises(PluginError) as exc:
        select_kernel(PLUGINS.kernels, "nope", calibrate=False)
    assert "cffi" in str(exc.value) and "numba" in str(exc.value) and "python" in str(exc.value)


def test_missing_compiled_module_reports_unavailable(monkeypatch):
    from commy_kernel_cffi import kernel as ck

    def broken():
        raise ImportError("no _diff")

    monkeypatch.setattr(ck, "_load", broken)
    infos = ck.CffiKernelProvider().variants()
    assert infos and all(not v.available and "compiled module missing" in v.reason for v in infos)
    with pytest.raises(SimdError):
        ck.CffiKernelProvider().create()


def test_threads_share_a_kernel(kernel):
    from concurrent.futures import ThreadPoolExecutor

    a = np.frombuffer(os.urandom(1 << 18), np.uint8).copy()
    b = a.copy()
    b[::997] ^= 1
    expected = np_ranges(a, b)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: kernel.diff(a, b), range(16)))
    assert all(r == expected for r in results)
