"""Scale-out: three commy servers (separate processes, separate data roots) share one
namespace and one change stream through a real ``redis-server`` (the Redis backplane).

The cluster is started once for the module; each test uses its own service. The test's
clients run on asyncio only: the servers live in other processes, and client behaviour
on trio is covered by the single-server tests.
"""

from __future__ import annotations

import shutil
import threading
import time

import anyio
import pytest

import commy
from commy.bench.scaleout import start_cluster

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]
TENANT = "scale"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with start_cluster(tmp_path_factory.mktemp("scaleout")) as c:
        yield c


def _connect(cluster, node: str, locality: str = "auto"):
    n = cluster.nodes[node]
    return commy.connect(n.url, tenant=TENANT, api_key=cluster.nodes["A"].admin_key,
                         ssl_context=cluster.ssl_context(), locality=locality)


async def _make_service(cluster, service: str, variables: dict[str, str]) -> None:
    async with _connect(cluster, "A") as c:
        if TENANT not in await c.list_tenants():
            await c.create_tenant(TENANT)
        await c.create_service(service)
        for name, spec in variables.items():
            await c.allocate_variable(service, name, spec)


async def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.01)


async def test_writer_on_a_reader_on_c_subscriber_on_b_same_order(cluster):
    n = 40
    await _make_service(cluster, "order", {"x": "i64", "pad": "i64"})
    seen_c: list[int] = []
    seen_b: list[int] = []
    lock = threading.Lock()
    async with _connect(cluster, "C", "local") as cc, _connect(cluster, "B", "remote") as cb, \
            _connect(cluster, "A", "local") as ca:
        reader = await cc.get_virtual_service_file("order")
        assert reader.is_local
        assert reader.path != (await ca.get_virtual_service_file("order")).path  # separate data roots

        def on_event(event) -> None:
            if "x" in event.variables:
                with lock:
                    seen_c.append(reader.read("x"))

        reader.on_file_change(on_event)
        reader.start_file_monitoring(wakeup="futex", sweep_interval_s=0)
        writer = await ca.get_virtual_service_file("order")
        assert writer.is_local
        async with cb.subscribe("order") as updates:

            async def follow_b() -> None:
                async for u in updates:
                    if "x" in u.values:
                        seen_b.append(u.values["x"])
                        if u.values["x"] == n:
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow_b)
                await anyio.sleep(0.2)
                for i in range(1, n + 1):
                    writer.write("x", i)  # a plain local store through node A's mapping
                    await anyio.sleep(0.03)
                with anyio.fail_after(15):
                    await _wait_for(lambda: seen_c[-1:] == [n], 15, "node C's local reader")
        reader.stop_file_monitoring()
    expected = list(range(1, n + 1))
    # every change, in the writer's order, on the other two nodes and both access paths
    assert seen_c == expected
    assert seen_b == expected


async def test_node_killed_and_restarted_converges(cluster):
    await _make_service(cluster, "crash", {"x": "i64", "s": "str[16]"})
    async with _connect(cluster, "C", "local") as cc:
        vc = await cc.get_virtual_service_file("crash")  # C hosts the service
        vc.close()
    async with _connect(cluster, "A", "remote") as ca:
        vf = await ca.get_virtual_service_file("crash")
        for i in range(1, 101):
            vf.write("x", i)
            if i == 30:
                await vf.awrite("s", "before")
                cluster.kill_node("C")  # SIGKILL mid-stream
        await vf.awrite("s", "after")
        for i in range(101, 151):
            vf.write("x", i)
        await vf.awrite("x", 150)
    cluster.start_node("C")  # same data root, new process
    async with _connect(cluster, "C", "local") as cc:
        vc = await cc.get_virtual_service_file("crash")
        assert vc.is_local
        await _wait_for(lambda: vc.read("x") == 150 and vc.read("s") == "after", 10, "node C to converge")
        vc.close()


async def test_redis_restart_loses_no_acknowledged_write(cluster):
    count = 30
    await _make_service(cluster, "durable", {f"w{i}": "i64" for i in range(count)})
    acked: list[int] = []
    async with _connect(cluster, "A", "local") as ca, _connect(cluster, "C", "local") as cc:
        va = await ca.get_virtual_service_file("durable")
        vc = await cc.get_virtual_service_file("durable")
        async with _connect(cluster, "B", "remote") as cb:
            for i in range(count):
                if i == 10:
                    cluster.redis.kill()  # SIGKILL: only what Redis fsynced survives
                if i == 20:
                    cluster.redis.start()  # same port, same AOF
                await cb.write_variable("durable", f"w{i}", i + 1)  # acknowledged by node B
                acked.append(i)
        assert acked == list(range(count))
        for vf, node in ((va, "A"), (vc, "C")):
            await _wait_for(lambda vf=vf: all(vf.read(f"w{i}") == i + 1 for i in acked), 20,
                            f"node {node} to hold every acknowledged write")
        va.close()
        vc.close()
    # the restarted Redis holds them too: a node joining now would load them
    import redis

    r = redis.Redis(port=cluster.redis.port)
    latest = r.hgetall(f"commy:{{{TENANT}/durable}}:latest")
    r.close()
    import json

    assert all(json.loads(latest[f"w{i}".encode()])[1] == i + 1 for i in acked)


async def test_deallocation_reaches_every_node(cluster):
    await _make_service(cluster, "shrink", {"keep": "i64", "gone": "i64"})
    async with _connect(cluster, "B", "local") as cb, _connect(cluster, "C", "local") as cc, \
            _connect(cluster, "A", "remote") as ca:
        vb = await cb.get_virtual_service_file("shrink")
        vc = await cc.get_virtual_service_file("shrink")
        await ca.write_variable("shrink", "gone", 7)
        for vf, node in ((vb, "B"), (vc, "C")):
            await _wait_for(lambda vf=vf: "gone" in vf and vf.read("gone") == 7, 10, f"node {node} to hold 'gone'")
        await ca.deallocate_variable("shrink", "gone")  # an admin on node A
        for vf, node in ((vb, "B"), (vc, "C")):
            await _wait_for(lambda vf=vf: "gone" not in vf.names(), 10, f"node {node} to drop 'gone'")
        # the service still works everywhere, and the removal is not undone
        await ca.write_variable("shrink", "keep", 3)
        for vf, node in ((vb, "B"), (vc, "C")):
            await _wait_for(lambda vf=vf: vf.read("keep") == 3, 10, f"node {node} to hold 'keep'")
            assert "gone" not in vf.names()
        vb.close()
        vc.close()
    import redis

    r = redis.Redis(port=cluster.redis.port)
    latest = r.hgetall(f"commy:{{{TENANT}/shrink}}:latest")
    r.close()
    assert b"keep" in latest and b"gone" not in latest  # a node joining later does not re-create it


def test_backplane_plugins_are_discovered_and_redis_refuses_trio(tmp_path):
    from commy.config import BackplaneConfig, Config, ServerConfig
    from commy.errors import PluginError
    from commy.plugins import get_plugins
    from commy.server import Server

    plugins = get_plugins()
    assert {"none", "redis"} <= set(plugins.backplanes.names())
    assert Config().server.backplane == "none"
    config = Config(
        data_dir=str(tmp_path),
        server=ServerConfig(transport="inprocess", name="scaleout-trio", tls=False, backplane="redis"),
        backplane=BackplaneConfig(url="redis://127.0.0.1:1/0", timeout=0.2),
    )
    server = Server(config)
    try:
        with pytest.raises(BaseException) as info:
            anyio.run(server.serve, backend="trio")
        exc = info.value
        while isinstance(exc, BaseExceptionGroup):  # raised inside the server's task group
            exc = exc.exceptions[0]
        assert isinstance(exc, PluginError) and "asyncio" in str(exc)
    finally:
        server.close()
