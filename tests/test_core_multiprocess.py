"""Real processes sharing one real mapping: visibility, tear-freedom, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from commy.virtual_file import VirtualServiceFile

ctx = mp.get_context("spawn")
TORN_READS = 1_000_000


def _writer_pair(path, start, stop, count):
    with VirtualServiceFile.open(path) as vf:
        start.wait(30)
        i = 0
        while not stop.is_set():
            i += 1
            vf.write("pair", [i, i])
            vf.write("text", f"{i:016d}")
        count.value = i


def _reader_pair(path, start, stop, reads, result):
    with VirtualServiceFile.open(path, readonly=True) as vf:
        start.set()
        torn = 0
        distinct = set()
        read = vf.read
        for n in range(reads):
            a, b = read("pair")
            if a != b:
                torn += 1
            if n % 1000 == 0:
                distinct.add(a)
                t = read("text")
                if len(t) != 16 or not t.isdigit():
                    torn += 1
        stop.set()
        result[0] = torn
        result[1] = len(distinct)


def test_torn_reads_never_happen_across_processes(tmp_path):
    with VirtualServiceFile.create(tmp_path) as vf:
        vf.allocate("pair", "u64[2]")
        vf.allocate("text", "str[16]", initial="0" * 16)
        path = str(vf.path)
    start, stop = ctx.Event(), ctx.Event()
    count = ctx.Value("q", 0)
    result = ctx.Array("q", 2)
    writer = ctx.Process(target=_writer_pair, args=(path, start, stop, count))
    reader = ctx.Process(target=_reader_pair, args=(path, start, stop, TORN_READS, result))
    writer.start()
    reader.start()
    reader.join(300)
    stop.set()
    writer.join(30)
    assert reader.exitcode == 0 and writer.exitcode == 0
    torn, distinct = result[0], result[1]
    assert torn == 0
    assert count.value > 1000, "the writer really was hammering during the reads"
    assert distinct > 10, "the reader really saw the value change while reading"


def _concurrent_writer(path, ident, rounds, start):
    with VirtualServiceFile.open(path) as vf:
        start.wait(30)
        for i in range(rounds):
            vf.write("pair", [ident * 1_000_000 + i] * 4)


def _checker(path, stop, result):
    with VirtualServiceFile.open(path, readonly=True) as vf:
        torn = reads = 0
        while not stop.is_set():
            v = vf.read("pair")
            reads += 1
            if len(set(v)) != 1:
                torn += 1
        result[0], result[1] = torn, reads


def test_concurrent_writers_of_a_wide_value_never_tear(tmp_path):
    with VirtualServiceFile.create(tmp_path) as vf:
        vf.allocate("pair", "i64[4]")
        path = str(vf.path)
    start, stop = ctx.Event(), ctx.Event()
    result = ctx.Array("q", 2)
    checker = ctx.Process(target=_checker, args=(path, stop, result))
    writers = [ctx.Process(target=_concurrent_writer, args=(path, k, 20_000, start)) for k in (1, 2)]
    checker.start()
    for w in writers:
        w.start()
    start.set()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    stop.set()
    checker.join(30)
    assert result[0] == 0 and result[1] > 0
    with VirtualServiceFile.open(path) as vf:
        final = vf.read("pair")
        assert len(set(final)) == 1 and final[0] % 1_000_000 == 19_999
        assert vf.version("pair") == 40_000, "every write published exactly once"


def _allocator(path, go):
    with VirtualServiceFile.open(path) as vf:
        go.wait(30)
        for i in range(200):
            vf.allocate(f"late{i}", "f64[16]", initial=[float(i)] * 16)
        vf.write("done", True)


def test_layout_growth_in_one_process_is_seen_by_another(tmp_path):
    with VirtualServiceFile.create(tmp_path, data_capacity=64) as vf:
        vf.allocate("done", "bool")
        go = ctx.Event()
        proc = ctx.Process(target=_allocator, args=(str(vf.path), go))
        proc.start()
        go.set()
        deadline = time.monotonic() + 60
        while not vf.read("done") and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.join(30)
        assert proc.exitcode == 0
        assert vf.read("late199") == [199.0] * 16
        assert len(vf.names()) == 201


def _simple_writer(path, values):
    with VirtualServiceFile.open(path) as vf:
        for name, value in values.items():
            vf.write(name, value)


@pytest.mark.parametrize("readonly", [False, True])
def test_values_written_by_one_process_are_read_by_another(tmp_path, readonly):
    values = {"i": -42, "u": 2**64 - 1, "d": 2.5, "b": True, "s": "héllo", "raw": b"\x00\xff", "arr": [1.0, 2.0]}
    with VirtualServiceFile.create(tmp_path) as vf:
        for name, spec in {"i": "i64", "u": "u64", "d": "f64", "b": "bool", "s": "str[8]",
                           "raw": "bytes[2]", "arr": "f32[2]"}.items():
            vf.allocate(name, spec)
        reader = VirtualServiceFile.open(vf.path, readonly=readonly)
        p = ctx.Process(target=_simple_writer, args=(str(vf.path), values))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert reader.read_all() == values
        reader.close()
