"""Server CRUD over the in-process transport, error mapping, concurrency, persistence."""

from __future__ import annotations

import os
import stat

import anyio
import pytest
from serverkit import connect, make_config, running

from commy import fileformat as ff
from commy.errors import (
    AlreadyExists,
    InvalidRequest,
    InvalidValue,
    LimitExceeded,
    PermissionDenied,
    ServiceNotFound,
    TenantNotFound,
    VariableNotFound,
)
from commy.server import Server

pytestmark = pytest.mark.anyio


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "data")


async def test_crud_roundtrip(config):
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as c:
            await c.create_tenant("acme")
            assert await c.list_tenants() == ["acme"]
            info = await c.create_service("sensors")
            assert info.name == "sensors" and info.variables == {}
            v = await c.allocate_variable("sensors", "temp", "f64", initial=1.5)
            assert v.type == "f64"
            await c.allocate_variable("sensors", "label", "str[16]", initial="a")
            await c.allocate_variable("sensors", "raw", "bytes[4]", initial=b"\x00\x01")
            await c.allocate_variable("sensors", "vec", "i32[3]")
            assert await c.read_variable("sensors", "temp") == 1.5
            assert await c.write_variable("sensors", "temp", 2.5) > 0
            await c.write_variable("sensors", "label", "héllo")
            await c.write_variable("sensors", "raw", b"\xff")
            await c.write_variable("sensors", "vec", [1, -2, 3])
            assert await c.read_variable("sensors", "label") == "héllo"
            assert await c.read_variable("sensors", "raw") == b"\xff"
            assert await c.read_variable("sensors", "vec") == [1, -2, 3]
            info = await c.get_service("sensors")
            assert sorted(info.variables) == ["label", "raw", "temp", "vec"]
            assert await c.list_services() == ["sensors"]
            await c.deallocate_variable("sensors", "vec")
            with pytest.raises(VariableNotFound):
                await c.read_variable("sensors", "vec")
            files = [p for p in os.listdir(config.data_path) if p.endswith(".mem")]
            assert len(files) == 1
            await c.delete_service("sensors")
            assert [p for p in os.listdir(config.data_path) if p.endswith(".mem")] == []
            with pytest.raises(ServiceNotFound):
                await c.get_service("sensors")
            await c.create_service("again")
            await c.delete_tenant("acme")
            assert await c.list_tenants() == []
            assert [p for p in os.listdir(config.data_path) if p.endswith(".mem")] == []


async def test_errors_arrive_as_their_class(config):
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as c:
            await c.create_tenant("acme")
            with pytest.raises(AlreadyExists):
                await c.create_tenant("acme")
            await c.create_service("s")
            with pytest.raises(AlreadyExists):
                await c.create_service("s")
            await c.allocate_variable("s", "x", "u8")
            with pytest.raises(AlreadyExists):
                await c.allocate_variable("s", "x", "u8")
            with pytest.raises(InvalidValue):
                await c.write_variable("s", "x", 300)
            with pytest.raises(InvalidRequest):
                await c.allocate_variable("s", "bad name!", "u8")
            with pytest.raises(InvalidRequest):
                await c.create_service("../etc")
            with pytest.raises(LimitExceeded):
                await c.allocate_variable("s", "huge", "bytes[1000000]")
            with pytest.raises(ServiceNotFound):
                await c.read_variable("nope", "x")
            with pytest.raises(VariableNotFound):
                await c.read_variable("s", "nope")
            with pytest.raises(TenantNotFound):
                await c.delete_tenant("ghost")
            with pytest.raises(TenantNotFound):
                await c.create_service("x", tenant="ghost")
            # the connection survives every error
            assert await c.read_variable("s", "x") == 0


async def test_hundred_concurrent_requests_on_one_connection(config):
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as c:
            await c.create_tenant("acme")
            await c.create_service("s")
            for i in range(100):
                await c.allocate_variable("s", f"v{i}", "i64", initial=i)
            results: dict[int, object] = {}

            async def one(i: int) -> None:
                if i % 2:
                    results[i] = await c.read_variable("s", f"v{i}")
                else:
                    await c.write_variable("s", f"v{i}", i * 10)
                    results[i] = await c.read_variable("s", f"v{i}")

            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
            assert results == {i: (i if i % 2 else i * 10) for i in range(100)}


async def test_slow_client_does_not_stall_others(config):
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as c:
            await c.create_tenant("acme")
            await c.create_service("s")
            await c.allocate_variable("s", "x", "i64")
        # A raw connection that sends requests but never reads its answers.
        from commy import protocol
        from commy.transports.base import ClientOptions
        from commy.transports.inprocess import InProcessTransport

        raw = await InProcessTransport(buffer=1).connect(url, ClientOptions())

        async def flood() -> None:
            # The server stops reading a connection whose answers are not taken
            # (back-pressure, as over TCP), so these sends block after a few: in a task.
            for i in range(20):
                await raw.send(protocol.encode({"type": "Heartbeat", "id": i}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(flood)
            await anyio.sleep(0.05)
            async with connect(url, config, "acme", key) as c:
                with anyio.fail_after(5):
                    for i in range(50):
                        await c.write_variable("s", "x", i)
                        assert await c.read_variable("s", "x") == i
            tg.cancel_scope.cancel()
        await raw.aclose()


async def test_persistence_across_restart(config):
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as c:
            await c.create_tenant("acme")
            await c.create_service("kept")
            await c.create_service("gone", ephemeral=True)
            await c.allocate_variable("kept", "count", "u32", initial=41)
            await c.write_variable("kept", "count", 42)
            await c.allocate_variable("kept", "name", "str[8]", initial="x")
            assert sorted(await c.list_services()) == ["gone", "kept"]
    db = config.data_path / "commy.sqlite3"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.data_path.stat().st_mode) == 0o700
    async with running(config) as (server2, url2):  # a new Server object, same data_dir
        async with connect(url2, config, "acme", key) as c:
            assert await c.list_tenants() == ["acme"]
            assert await c.list_services() == ["kept"]  # ephemeral died with its client
            assert await c.read_variable("kept", "count") == 42
            assert await c.read_variable("kept", "name") == "x"
    mems = [p for p in os.listdir(config.data_path) if p.endswith(".mem")]
    assert len(mems) == 1 and ff.FILE_NAME.match(mems[0])


async def test_ephemeral_service_dies_with_last_client(config):
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as admin:
            await admin.create_tenant("acme")
            async with connect(url, config, "acme", key) as c:
                await c.create_service("tmp", ephemeral=True)
                await admin.get_service("tmp")  # a second user
            await admin.get_service("tmp")  # still there: admin uses it
        await anyio.sleep(0.05)
        async with connect(url, config, "acme", key) as c:
            with pytest.raises(ServiceNotFound):
                await c.get_service("tmp")


async def test_server_admin_bootstrap_and_tenant_rights(config, tmp_path):
    server = Server(config)
    try:
        key = server.create_admin_key()
        assert key.startswith("commy_") and len(key) == len("commy_") + 43
        # only the hash is stored
        assert key.encode() not in (config.data_path / "commy.sqlite3").read_bytes()
        server.store.create_tenant("acme")
        tkey, _ = server.store.create_api_key("acme", "ops", roles=["tenant-admin"])
    finally:
        server.close()
    async with running(config) as (server, url):
        async with connect(url, config, "acme", tkey) as c:
            await c.create_service("mine")
            with pytest.raises(PermissionDenied):
                await c.create_tenant("other")
            with pytest.raises(PermissionDenied):
                await c.list_tenants()
