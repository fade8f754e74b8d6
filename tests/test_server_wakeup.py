"""``server.wakeup = "futex"``: the server notices local mmap writes without polling."""

from __future__ import annotations

import time

import anyio
import pytest
from serverkit import connect, make_config, running

from commy import fileformat as ff
from commy import futex

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not futex.available(), reason="no futex on this platform"),
]


async def _prepare(server, url, config):
    key = server.create_admin_key()
    async with connect(url, config, "acme", key) as c:
        await c.create_tenant("acme")
        await c.create_service("svc")
        await c.allocate_variable("svc", "counter", "i64")
    return key


async def _until(predicate, timeout=10.0):
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def _waiters(vf) -> int:
    with open(vf.path, "rb") as f:
        f.seek(ff.OFF_WAITERS)
        return int.from_bytes(f.read(4), "little")


async def test_futex_wakeup_pushes_local_writes_without_polling(tmp_path):
    config = make_config(tmp_path / "data", poll_interval=3600.0, wakeup="futex")  # the poller never runs
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key, locality="remote") as remote, connect(
            url, config, "acme", key
        ) as local:
            mirror = await remote.get_virtual_service_file("svc")  # subscribes: tracked
            lvf = await local.get_virtual_service_file("svc")
            assert lvf.is_local
            await _until(lambda: _waiters(lvf) == 1)  # the server sleeps on the futex
            for i in range(1, 6):
                lvf.write("counter", i)  # a store through the mapping: no request at all
                await _until(lambda i=i: mirror.read("counter") == i)
            lvf.close()


async def test_futex_waiter_unregisters_when_the_server_stops(tmp_path):
    config = make_config(tmp_path / "data", wakeup="futex")
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key, locality="remote") as remote, connect(
            url, config, "acme", key
        ) as local:
            await remote.get_virtual_service_file("svc")
            lvf = await local.get_virtual_service_file("svc")
            await _until(lambda: _waiters(lvf) == 1)
    # Writers skip the FUTEX_WAKE call again once nobody waits.
    assert _waiters(lvf) == 0
    lvf.close()


def test_wakeup_is_validated(tmp_path):
    from commy.config import load_config
    from commy.errors import ConfigError

    with pytest.raises(ConfigError, match="server.wakeup"):
        load_config(environ={"COMMY_SERVER_WAKEUP": "spin"})


def _waiting_thread(path, bits):
    """A thread that sleeps on ``path``'s futex with ``bits`` until stopped."""
    import threading

    from commy.futex import SeqFutex

    stop = threading.Event()
    f = SeqFutex(path)

    def run():
        while not stop.is_set():
            f.wait(f.value, 60.0, bits=bits)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return stop, t


def _until_woken(f, bits):
    """Wake with ``bits`` until one waiter woke (the thread is asleep by then)."""
    for _ in range(10_000):
        if f.wake(bits) == 1:
            return
        time.sleep(0.001)
    raise AssertionError("the waiter never slept on the futex")


def test_server_bit_waiter_skips_the_servers_own_wakes(tmp_path):
    from commy.futex import MATCH_ANY, SERVER_BIT, SeqFutex

    path = ff.create_service_file(tmp_path)
    f = SeqFutex(path)
    own = MATCH_ANY & ~SERVER_BIT  # what a server's own commits wake
    stop, t = _waiting_thread(path, SERVER_BIT)
    try:
        _until_woken(f, MATCH_ANY)  # a local writer's plain wake reaches the server
        _until_woken(f, SERVER_BIT)
        # The thread is back asleep within microseconds: a wake that matched it would
        # find it in one of these 200 tries. The server's own commits never do.
        for _ in range(200):
            assert f.wake(own) == 0
            time.sleep(0.001)
        stop.set()
        _until_woken(f, SERVER_BIT)  # it was asleep all along
    finally:
        stop.set()
        t.join(10)
    # a plain waiter (a local reader) is woken by the server's commits
    stop, t = _waiting_thread(path, MATCH_ANY)
    try:
        _until_woken(f, own)
    finally:
        stop.set()
        f.wake()
        t.join(10)
        f.close()
