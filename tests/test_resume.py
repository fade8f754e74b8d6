"""Resume after reconnect: nothing missed across a dropped connection or a server restart."""

from __future__ import annotations

import anyio
import pytest
from procserver import RestartableServer

import commy
from commy.errors import ConnectionLost
from commy.server.changelog import ChangeLog
from commy.server.events import ChangeEvent, VariableChange
from tests.serverkit import connect, make_config, running

pytestmark = pytest.mark.anyio
NAMES = [f"v{i}" for i in range(40)]


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "data")


def _event(seq: int, name: str = "x") -> ChangeEvent:
    return ChangeEvent("t", "s", "id", seq, 1, (VariableChange(name, seq, seq, "i64"),))


def test_change_log_knows_what_it_lost() -> None:
    log = ChangeLog(10, max_events=3)
    for seq in range(11, 16):
        log.append(_event(seq))
    assert log.floor == 12
    assert [e.seq for e in log.since(12)] == [13, 14, 15]
    assert log.since(14)[0].seq == 15
    assert log.since(11) is None  # 12 was dropped: the caller must send a snapshot


async def _setup(url, config, key) -> None:
    async with connect(url, config, "acme", key) as c:
        await c.create_tenant("acme")
        await c.create_service("s")
        for name in NAMES:
            await c.allocate_variable("s", name, "i64", initial=0)


@pytest.mark.parametrize("burst", [200, 6000])  # 6000 > the change log: a snapshot resumes
async def test_subscriber_dropped_during_burst_ends_with_every_change(config, burst) -> None:
    async with running(config) as (server, url):
        key = server.create_admin_key()
        await _setup(url, config, key)
        async with (
            connect(url, config, "acme", key) as writer,
            connect(url, config, "acme", key, locality="remote") as sub,
        ):
            vf = await sub.get_virtual_service_file("s")
            seen: set[str] = set()
            async with sub.subscribe("s") as updates:

                async def collect() -> None:
                    async for u in updates:
                        seen.update(u.values)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(collect)
                    for i in range(burst // 2):
                        await writer.write_variable("s", NAMES[i % len(NAMES)], i)
                    await anyio.sleep(0.05)
                    seen.clear()  # from here on, every written variable must be named again
                    await sub._conn.aclose()  # the connection drops mid-burst
                    written = set()
                    for i in range(burst // 2, burst):
                        name = NAMES[(i * 7) % len(NAMES)]
                        await writer.write_variable("s", name, i)
                        written.add(name)
                    expected = {n: await writer.read_variable("s", n) for n in NAMES}
                    with anyio.fail_after(10):
                        while vf.read_all() != expected or not written <= seen:
                            await anyio.sleep(0.02)
                    tg.cancel_scope.cancel()
            assert sub.reconnects == 1
            assert written <= seen


async def test_request_in_flight_raises_connection_lost_then_retry_works(config) -> None:
    async with running(config) as (server, url):
        key = server.create_admin_key()
        await _setup(url, config, key)
        async with connect(url, config, "acme", key) as c:
            await c._conn.aclose()
            with pytest.raises(ConnectionLost):
                await c.write_variable("s", "v0", 1)
            with anyio.fail_after(10):
                while True:  # the application retries
                    try:
                        await c.write_variable("s", "v0", 1)
                        break
                    except ConnectionLost:
                        await anyio.sleep(0.05)
            assert await c.read_variable("s", "v0") == 1


# -- a real server process, killed with SIGKILL and started again ------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_server_killed_and_restarted_client_reconnects_and_converges(tmp_path, anyio_backend) -> None:
    srv = RestartableServer(tmp_path)
    srv.start()
    url, key, ctx, config = srv.url, srv.admin_key, srv.ssl_context, srv.config
    try:
        kw = dict(tenant="acme", api_key=key, ssl_context=ctx, config=config)
        async with commy.connect(url, **kw) as admin:
            await admin.create_tenant("acme")
            await admin.create_service("s")
            await admin.allocate_variable("s", "x", "i64", initial=0)
        async with (
            commy.connect(url, **kw) as writer,
            commy.connect(url, locality="remote", **kw) as reader,
        ):
            vf = await reader.get_virtual_service_file("s")
            await writer.write_variable("s", "x", 1)
            srv.kill()
            srv.start()  # same data dir, same port
            with anyio.fail_after(20):
                while True:
                    try:
                        await writer.write_variable("s", "x", 2)
                        break
                    except ConnectionLost:
                        await anyio.sleep(0.05)
                while vf.read("x") != 2:
                    await anyio.sleep(0.02)
            assert reader.reconnects >= 1 and writer.reconnects >= 1
            assert await writer.read_variable("s", "x") == 2
    finally:
        srv.kill()


def test_a_listener_that_falls_behind_gets_merged_updates_not_gaps() -> None:
    """client.subscribe()'s buffer: past its limit, updates merge into the newest one."""
    from commy.client import _Listener

    def update(seq: int, **values: int) -> dict:
        return {
            "type": "VariablesUpdated", "tenant": "t", "service": "s", "seq": seq, "layout": 1,
            "variables": [{"name": n, "version": seq, "value": v} for n, v in values.items()],
        }

    listener = _Listener(limit=2)
    listener.offer(update(1, a=1))
    listener.offer(update(2, b=2))
    listener.offer(update(3, a=3))  # merged into seq 2
    listener.offer(update(4, c=4))  # merged as well
    assert listener.coalesced == 2
    first, second = list(listener.queue)
    assert first["seq"] == 1 and first["variables"] == [{"name": "a", "version": 1, "value": 1}]
    assert second["seq"] == 4
    assert {v["name"]: v["value"] for v in second["variables"]} == {"b": 2, "a": 3, "c": 4}


@pytest.mark.anyio
async def test_a_closed_listener_drains_then_ends() -> None:
    from commy.client import _Listener

    listener = _Listener(limit=8)
    listener.offer({"seq": 1, "variables": []})
    listener.close()
    listener.offer({"seq": 2, "variables": []})  # after close: ignored
    assert (await listener.next())["seq"] == 1
    assert await listener.next() is None
