"""Local change events: a writer process commits, a watcher in another process is told."""

from __future__ import annotations

import multiprocessing as mp
import random
import struct
import time

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commy.errors import InvalidOffset, Timeout
from commy.events import EventHub, FileChangeEvent
from commy.virtual_file import VirtualServiceFile

ctx = mp.get_context("spawn")
NAMES = [f"v{i}" for i in range(12)]  # v0, v2, ... are written; odd ones never are
WRITTEN = NAMES[::2]
UNTOUCHED = set(NAMES[1::2])


def _make_service(root) -> str:
    with VirtualServiceFile.create(root) as vf:
        for i, name in enumerate(NAMES):
            vf.allocate(name, "i64" if i % 3 else "str[12]")
        vf.allocate("round", "u32")
        return str(vf.path)


def _bursty_writer(path, rounds, seed, go):
    rng = random.Random(seed)
    with VirtualServiceFile.open(path) as vf:
        go.wait(30)
        for k in range(1, rounds + 1):
            subset = rng.sample(WRITTEN, rng.randint(1, len(WRITTEN)))
            use_batch = k % 2 == 0
            if use_batch:
                with vf.batch():
                    for name in subset:
                        vf.write(name, k if vf.type_of(name).base.kind == "int" else f"r{k}")
                    vf.write("round", k)
            else:
                for name in subset:
                    vf.write(name, k if vf.type_of(name).base.kind == "int" else f"r{k}")
                vf.write("round", k)
            if k % 25 == 0:
                time.sleep(0.02)  # bursts separated by pauses


@pytest.mark.parametrize(
    "wakeup",
    [
        {},
        {"wakeup": "futex", "waiter": "ctypes"},
        {"wakeup": "futex", "waiter": "cffi"},
        {"wakeup": "futex", "waiter": "cffi", "spin_us": 30_000},
    ],
    ids=["doorbell", "futex-ctypes", "futex-cffi", "futex-cffi-spinning"],
)
def test_watcher_process_sees_exactly_the_written_variables_in_order(tmp_path, wakeup):
    rounds = 300
    path = _make_service(tmp_path)
    rng = random.Random(7)
    expected_written = set()
    for _k in range(rounds):
        expected_written.update(rng.sample(WRITTEN, rng.randint(1, len(WRITTEN))))
    with VirtualServiceFile.open(path, readonly=True) as vf:
        vf.start_file_monitoring(sweep_interval_s=0.5, **wakeup)
        go = ctx.Event()
        writer = ctx.Process(target=_bursty_writer, args=(path, rounds, 7, go))
        writer.start()
        go.set()
        events: list[FileChangeEvent] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                events.append(vf.wait_for_file_change(timeout=1))
            except Timeout:
                pass
            if vf.read("round") == rounds and not writer.is_alive():
                # drain whatever the final doorbell produced
                try:
                    while True:
                        events.append(vf.wait_for_file_change(timeout=0.5))
                except Timeout:
                    break
        writer.join(10)
        assert writer.exitcode == 0
        final_seq = vf.change_seq
    assert events, "no events at all"
    seen = set()
    for ev in events:
        assert set(ev.variables) <= set(WRITTEN) | {"round"}
        assert not set(ev.variables) & UNTOUCHED, "a neighbour was reported"
        seen.update(ev.variables)
    assert seen == expected_written | {"round"}
    seqs = [ev.new_seq for ev in events]
    assert seqs == sorted(seqs), "events arrive in sequence order"
    for prev, nxt in zip(events, events[1:], strict=False):
        assert nxt.old_seq == prev.new_seq, "consecutive events cover the sequence without gaps"
    assert events[-1].new_seq == final_seq, "the last event reaches the writer's last commit"
    if not wakeup:
        # Doorbells coalesce; the futex path may wake once per commit when it keeps up.
        assert len(events) < rounds * 3, "events coalesce rather than flood"


def test_raw_stores_without_doorbell_are_found_by_the_sweep(tmp_path):
    path = _make_service(tmp_path)
    with VirtualServiceFile.open(path) as writer, VirtualServiceFile.open(path) as watcher:
        watcher.start_file_monitoring(sweep_interval_s=0.2)
        off = writer.variables()["v1"].offset
        struct.pack_into("<q", writer.accessor.view(), off, 1234)  # not through commy
        ev = watcher.wait_for_file_change(timeout=5)
        assert ev.variables == ("v1",) and ev.source == "sweep"


def test_no_listener_no_doorbell_cost(tmp_path):
    path = _make_service(tmp_path)
    with VirtualServiceFile.open(path) as vf:
        assert vf._q[vf._q.nbytes // 8 - 1] is not None  # mapping usable
        listeners_off = 112 // 8
        assert vf._q[listeners_off] == 0
        w = VirtualServiceFile.open(path, readonly=True)
        w.start_file_monitoring()
        assert vf._q[listeners_off] == 1 << 32, "a watcher registers in the header"
        w.close()
        assert vf._q[listeners_off] == 0, "and unregisters when it stops"


def test_wait_times_out_and_try_get(tmp_path):
    path = _make_service(tmp_path)
    with VirtualServiceFile.open(path) as vf:
        vf.start_file_monitoring()
        assert vf.try_get_file_change() is None
        with pytest.raises(Timeout):
            vf.wait_for_file_change(timeout=0.05)
        vf.write("v0", "x")
        assert vf.wait_for_file_change(timeout=5).variables == ("v0",)


@pytest.mark.anyio
async def test_async_iteration(tmp_path):
    path = _make_service(tmp_path)
    with VirtualServiceFile.open(path) as writer, VirtualServiceFile.open(path) as vf:
        got = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def consume():
                    async for ev in vf.changes():
                        got.append(ev)
                        if vf.read("round") == 3:
                            tg.cancel_scope.cancel()

                tg.start_soon(consume)
                await anyio.sleep(0.2)
                for k in (1, 2, 3):
                    writer.write("v2", k)
                    writer.write("round", k)
                    await anyio.sleep(0.05)
    names = set().union(*(ev.variables for ev in got))
    assert names == {"v2", "round"}


def test_hub_never_drops_when_full():
    hub = EventHub(max_pending=3)
    for i in range(10):
        hub.publish(FileChangeEvent("s", (f"x{i}",), i, i + 1))
    events = [hub.try_get() for _ in range(3)]
    assert hub.try_get() is None
    assert [e.variables for e in events[:2]] == [("x0",), ("x1",)]
    assert events[2].variables == tuple(f"x{i}" for i in range(2, 10))
    assert (events[2].old_seq, events[2].new_seq) == (2, 10)


@settings(max_examples=200, deadline=None)
@given(
    max_pending=st.integers(0, 4),
    ops=st.lists(st.one_of(st.integers(0, 5), st.just("get"), st.just("wait")), max_size=60),
)
def test_hub_full_queue_reads_tile_the_sequence_and_name_every_change(max_pending, ops):
    """Publishing into a full queue, interleaved with reads: what is read tiles the
    sequence numbers without a gap or overlap and names every published variable."""
    hub = EventHub(max_pending=max_pending)
    seq, published, read = 0, [], []
    for op in ops:
        if op == "get":
            ev = hub.try_get()
            if ev is not None:
                read.append(ev)
        elif op == "wait":
            if hub._queue:
                read.append(hub.wait(timeout=0))
        else:
            name = f"v{op}"
            hub.publish(FileChangeEvent("s", (name,), seq, seq + 1))
            published.append((seq, name))
            seq += 1
    while (ev := hub.try_get()) is not None:
        read.append(ev)
    assert len(hub._queue) == 0 and hub._overflow is None
    expected = 0
    for ev in read:
        assert ev.old_seq == expected
        assert ev.new_seq > ev.old_seq
        assert set(ev.variables) == {name for s, name in published if ev.old_seq <= s < ev.new_seq}
        expected = ev.new_seq
    assert expected == seq


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=12))
def test_update_shadow_of_named_variables_matches_a_full_diff(tmp_path_factory, writes):
    """The shadow moved by `update_shadow(ranges)` (small ranges: copied in Python; more:
    by the kernel) ends equal to the file, so a full diff afterwards finds nothing."""
    path = _make_service(tmp_path_factory.mktemp("shadow"))
    with VirtualServiceFile.open(path) as writer, VirtualServiceFile.open(path, readonly=True) as watcher:
        watcher.snapshot_shadow()
        infos = writer.variables()
        ints = [n for n in NAMES if writer.type_of(n).spec == "i64"]
        names = [ints[i % len(ints)] for i, _ in writes]
        for name, (_i, value) in zip(names, writes, strict=True):
            writer.write(name, value)
        ranges = [
            (infos[n].offset, infos[n].offset + writer.type_of(n).storage_size) for n in dict.fromkeys(names)
        ]
        watcher.update_shadow(ranges)
        assert watcher.detect_changes() == []
        with pytest.raises(InvalidOffset):
            watcher.update_shadow([(10**9, 10**9 + 8)])  # beyond the data: the kernel refuses


def test_detect_moved_names_committed_writes_and_leaves_raw_stores_to_the_diff(tmp_path):
    path = _make_service(tmp_path)
    with VirtualServiceFile.open(path) as writer, VirtualServiceFile.open(path, readonly=True) as watcher:
        watcher.snapshot_shadow()
        writer.write("v1", writer.read("v1"))  # same value: still a committed write
        writer.write("v2", 5)
        assert sorted(watcher.detect_moved()) == ["v1", "v2"]
        assert watcher.detect_moved() == []
        assert watcher.detect_changes() == [], "the shadow followed the moved variables"
        struct.pack_into("<q", writer.accessor.view(), writer.variables()["v4"].offset, 99)
        assert watcher.detect_moved() == [], "no version moved"
        assert watcher.detect_changes() == ["v4"]
        writer.allocate("late", "i64")
        writer.write("late", 7)
        writer.write("v5", 8)
        assert sorted(watcher.detect_changes() + watcher.detect_moved()) == ["late", "v5"]
