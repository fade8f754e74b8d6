"""Fast-path waiters (futex wait/wake plugins): selection, and real cross-process wakes."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from commy.errors import PluginError
from commy.plugins import load_plugins
from commy.virtual_file import VirtualServiceFile
from commy.waiters import select_waiter

ctx = mp.get_context("spawn")


def test_builtin_and_plugin_waiters_are_registered():
    plugins = load_plugins()
    assert {"ctypes", "cffi"} <= set(plugins.waiters.names())
    assert plugins.waiters.registration("ctypes").plugin == "builtin_waiters"
    assert plugins.waiters.registration("cffi").plugin == "kernel_cffi"


def test_ranking_prefers_cffi_and_config_can_name_one():
    registry = load_plugins().waiters
    assert select_waiter(registry).name == "cffi"
    assert select_waiter(registry, "ctypes").name == "ctypes"
    with pytest.raises(PluginError, match="unknown waiter 'nope'"):
        select_waiter(registry, "nope")


def test_builtin_waiter_is_the_fallback_without_the_plugin():
    registry = load_plugins(disable=["kernel_cffi"]).waiters
    assert registry.names() == ["ctypes"]
    assert select_waiter(registry).name == "ctypes"


def test_events_waiter_is_a_config_key():
    from commy.config import load_config

    assert load_config(environ={"COMMY_EVENTS_WAITER": "ctypes"}).events.waiter == "ctypes"


def _wait_child(path, name, expected, ready, out):
    waiter = select_waiter(load_plugins().waiters, name).open(path)
    try:
        ready.set()
        value = expected
        for _ in range(400):  # 50 ms waits: up to 20 s, then the test fails on the value
            value = waiter.wait(expected, 0.05)
            if value != expected:
                break
        out.put(value)
    finally:
        waiter.close()


@pytest.mark.parametrize("name", ["ctypes", "cffi"])
def test_a_write_in_one_process_wakes_a_waiter_in_another(tmp_path, name):
    with VirtualServiceFile.create(tmp_path) as vf:
        vf.allocate("x", "i64")
        path = str(vf.path)
        # Writers wake only when the header says a fast-path waiter is registered.
        vf.adjust_listener_count(112, +1)
        expected = vf.change_seq & 0xFFFFFFFF
        ready, out = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_wait_child, args=(path, name, expected, ready, out))
        child.start()
        assert ready.wait(30)
        vf.write("x", 1)
        seen = out.get(timeout=30)
        child.join(10)
        assert seen == (expected + 1) & 0xFFFFFFFF
        vf.adjust_listener_count(112, -1)


@pytest.mark.parametrize("name", ["ctypes", "cffi"])
def test_wait_returns_the_word_when_it_already_moved_or_times_out(tmp_path, name):
    with VirtualServiceFile.create(tmp_path) as vf:
        vf.allocate("x", "i64")
        waiter = select_waiter(load_plugins().waiters, name).open(vf.path)
        try:
            now = waiter.value
            assert now == vf.change_seq & 0xFFFFFFFF
            assert waiter.wait(now + 1, 5.0) == now  # differs: returns at once
            assert waiter.wait(now, 0.001) == now  # nobody writes: the timeout ends it
            vf.write("x", 2)
            assert waiter.wait(now, 5.0) == (now + 1) & 0xFFFFFFFF
            assert waiter.wake() >= 0
        finally:
            waiter.close()


def _spin_child(path, name, expected, ready, out):
    """Unlike `_wait_child`, one call only: a second call would return the moved word at
    once, whether or not the poll had seen it."""
    waiter = select_waiter(load_plugins().waiters, name).open(path)
    try:
        ready.set()
        # One call: a 20 s poll, then at most 50 ms asleep. No writer issues a wake
        # (nobody is registered), so only the poll can see the store.
        out.put(waiter.wait(expected, 0.05, 20.0))
    finally:
        waiter.close()


@pytest.mark.parametrize("name", ["ctypes", "cffi"])
def test_a_spinning_waiter_sees_a_store_that_no_wake_announces(tmp_path, name):
    with VirtualServiceFile.create(tmp_path) as vf:
        vf.allocate("x", "i64")
        path = str(vf.path)
        expected = vf.change_seq & 0xFFFFFFFF
        ready, out = ctx.Event(), ctx.Queue()
        child = ctx.Process(target=_spin_child, args=(path, name, expected, ready, out))
        child.start()
        assert ready.wait(30)
        import time

        time.sleep(0.2)  # well past the futex's 50 ms: the child is polling by now
        vf.write("x", 1)
        seen = out.get(timeout=30)
        child.join(10)
        assert seen == (expected + 1) & 0xFFFFFFFF


@pytest.mark.parametrize("name", ["ctypes", "cffi"])
def test_a_spin_without_a_change_ends_and_returns_the_word(tmp_path, name):
    with VirtualServiceFile.create(tmp_path) as vf:
        vf.allocate("x", "i64")
        waiter = select_waiter(load_plugins().waiters, name).open(vf.path)
        try:
            now = waiter.value
            assert waiter.wait(now, 0.001, 0.005) == now
        finally:
            waiter.close()


def test_events_spin_us_is_a_bounded_config_key():
    from commy.config import load_config
    from commy.errors import ConfigError
    from commy.watcher import WatcherOptions

    assert load_config(environ={"COMMY_EVENTS_SPIN_US": "250"}).events.spin_us == 250
    with pytest.raises(ConfigError, match="spin_us"):
        load_config(environ={"COMMY_EVENTS_SPIN_US": "2000000"})
    with pytest.raises(ValueError):
        WatcherOptions(wakeup="futex", spin_us=-1)
