"""Local and remote access paths: locality proof, remote mirrors and the pushes that feed them."""

from __future__ import annotations

import multiprocessing as mp

import anyio
import pytest
from serverkit import connect, local_writer, make_config, running

from commy import protocol
from commy.client import _map_local
from commy.errors import ConnectionLost, InvalidValue, PermissionDenied
from commy.transports.base import ClientOptions
from commy.transports.inprocess import InProcessTransport

pytestmark = pytest.mark.anyio


async def _prepare(server, url, config):
    key = server.create_admin_key()
    async with connect(url, config, "acme", key) as c:
        await c.create_tenant("acme")
        await c.create_service("svc")
        await c.allocate_variable("svc", "counter", "i64")
        await c.allocate_variable("svc", "label", "str[16]")
    return key


async def _until(predicate, timeout=5.0):
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "data")


async def test_local_path_when_token_matches(config):
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key) as c:
            vf = await c.get_virtual_service_file("svc")
            assert vf.is_local and not vf.readonly
            vf.write("counter", 5)
            assert await c.read_variable("svc", "counter") == 5  # the server sees the mapping
            vf.close()
        async with connect(url, config, "acme", key, locality="local") as c:
            vf = await c.get_virtual_service_file("svc")
            assert vf.is_local
            vf.close()


async def test_token_mismatch_is_not_local(config):
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key) as c:
            info = await c.request("GetServiceFilePath", service="svc")
            vf = _map_local(info, readonly=True)
            assert vf is not None
            vf.close()
            forged = {**info, "locality_token": protocol.b64encode(b"\0" * 16)}
            assert _map_local(forged, readonly=True) is None
            assert _map_local({**info, "path": info["path"] + ".missing"}, readonly=True) is None


async def test_forced_remote_mirror_reads_and_writes(config):
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key, locality="remote") as c:
            vf = await c.get_virtual_service_file("svc")
            assert not vf.is_local
            assert vf.read_all() == {"counter": 0, "label": ""}
            vf.write("counter", 11)  # fire-and-forget
            assert vf.read("counter") == 11  # the mirror has it at once
            await vf.awrite("label", "acked")  # waits for the server
            assert await c.read_variable("svc", "label") == "acked"
            await _until(lambda: server._services[("acme", "svc")].vf.read("counter") == 11)
            with pytest.raises(InvalidValue):
                vf.write("counter", "nope")
            with pytest.raises(PermissionDenied):
                vf.allocate("new", "i64")  # layout changes go through the server
            assert c.write_errors == []


async def test_mirror_follows_other_clients_writes(config):
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key, locality="remote") as reader:
            vf = await reader.get_virtual_service_file("svc")
            async with connect(url, config, "acme", key, locality="remote") as writer:
                for i in range(1, 51):
                    await writer.write_variable("svc", "counter", i)
                await writer.write_variable("svc", "label", "done")
                await _until(lambda: vf.read("label") == "done")
                assert vf.read("counter") == 50
                # a layout change reaches the mirror as a fresh snapshot
                await writer.allocate_variable("svc", "extra", "f64[2]", initial=[1.5, 2.5])
                await _until(lambda: "extra" in vf.names())
                assert vf.read("extra") == [1.5, 2.5]
                await writer.write_variable("svc", "extra", [3.0, 4.0])
                await _until(lambda: vf.read("extra") == [3.0, 4.0])
                await writer.deallocate_variable("svc", "extra")
                await _until(lambda: "extra" not in vf.names())


async def test_mirror_follows_a_local_writer_in_another_process(config):
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key, locality="remote") as c:
            vf = await c.get_virtual_service_file("svc")
            path = (await c.request("GetServiceFilePath", service="svc"))["path"]
            proc = mp.get_context("spawn").Process(target=local_writer, args=(path, 200))
            proc.start()
            try:
                await _until(lambda: vf.read("counter") == 200, timeout=30)
                assert vf.read("label") == "n200"
            finally:
                await anyio.to_thread.run_sync(proc.join, 30)
            assert proc.exitcode == 0


async def test_report_variable_changes_pushes_without_polling(tmp_path):
    config = make_config(tmp_path / "data", poll_interval=3600.0)  # the poller never runs
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key, locality="remote") as remote, connect(
            url, config, "acme", key
        ) as local:
            mirror = await remote.get_virtual_service_file("svc")
            lvf = await local.get_virtual_service_file("svc")
            assert lvf.is_local
            lvf.write("counter", 99)
            await anyio.sleep(0.05)
            assert mirror.read("counter") == 0  # no poll, no report: not pushed yet
            await local.report_variable_changes("svc", ["counter"])
            await _until(lambda: mirror.read("counter") == 99)
            lvf.close()


async def test_subscribe_yields_updates(config):
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key) as c:
            async with c.subscribe("svc") as updates:
                await c.write_variable("svc", "label", "hello")
                with anyio.fail_after(5):
                    async for update in updates:
                        if update.values.get("label") == "hello":
                            assert update.versions["label"] > 0
                            break


async def test_big_service_snapshot_arrives_in_chunks(config):
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        async with connect(url, config, "acme", key, locality="remote") as c:
            for i in range(5):
                await c.allocate_variable("svc", f"blob{i}", "bytes[60000]", initial=bytes([i]) * 60000)
            raw = await InProcessTransport().connect(url, ClientOptions())
            await raw.send(protocol.encode({"type": "Authenticate", "id": 1, "tenant": "acme", "api_key": key}))
            await raw.receive()
            await raw.send(protocol.encode({"type": "ReadService", "id": 2, "service": "svc"}))
            sizes = []
            while True:
                text = await raw.receive()
                msg = protocol.decode(text, direction="response")
                sizes.append(len(text))
                if msg["chunk"] == msg["chunks"] - 1:
                    break
            assert len(sizes) > 1 and max(sizes) <= protocol.CHUNK_LIMIT
            await raw.aclose()
            vf = await c.get_virtual_service_file("svc")
            assert vf.read("blob3") == bytes([3]) * 60000
            await c.write_variable("svc", "blob4", b"new")
            await _until(lambda: vf.read("blob4") == b"new")


async def test_slow_subscriber_is_disconnected(tmp_path):
    config = make_config(tmp_path / "data", push_timeout=0.3)
    async with running(config) as (server, url):
        key = await _prepare(server, url, config)
        raw = await InProcessTransport(buffer=1).connect(url, ClientOptions())
        await raw.send(protocol.encode({"type": "Authenticate", "id": 1, "tenant": "acme", "api_key": key}))
        await raw.receive()
        await raw.send(protocol.encode({"type": "Subscribe", "id": 2, "service": "svc"}))
        await raw.receive()
        async with connect(url, config, "acme", key) as writer:
            for i in range(30):
                await writer.write_variable("svc", "counter", i)
                await anyio.sleep(0.02)
            # the writer is unaffected; the subscriber that never reads was dropped
            assert await writer.read_variable("svc", "counter") == 29
        with pytest.raises(ConnectionLost):
            with anyio.fail_after(5):
                while True:
                    await raw.receive()
