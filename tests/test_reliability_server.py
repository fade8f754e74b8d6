"""The server killed with SIGKILL in the middle of a write load, then restarted."""

from __future__ import annotations

import os

import anyio
import pytest
from procserver import RestartableServer

import commy
from commy.errors import ConnectionLost

pytestmark = pytest.mark.anyio
WRITERS = 6


async def test_kill9_during_write_load_keeps_every_acknowledged_write(tmp_path, anyio_backend) -> None:
    srv = RestartableServer(tmp_path)
    srv.start()
    url, key, ctx, config = srv.url, srv.admin_key, srv.ssl_context, srv.config
    kw = dict(tenant="acme", api_key=key, ssl_context=ctx, config=config)
    acked = [0] * WRITERS
    before_kill: list[int] = []
    killed = anyio.Event()
    stop = anyio.Event()
    try:
        async with commy.connect(url, **kw) as admin:
            await admin.create_tenant("acme")
            await admin.create_service("s")
            for k in range(WRITERS):
                await admin.allocate_variable("s", f"x{k}", "i64", initial=0)

        async def writer(k: int) -> None:
            async with commy.connect(url, **kw) as client:
                i = 0
                while not stop.is_set():
                    try:
                        await client.write_variable("s", f"x{k}", i + 1)
                    except ConnectionLost:
                        await anyio.sleep(0.02)  # not acknowledged: retry the same value
                        continue
                    i += 1
                    acked[k] = i

        async with commy.connect(url, locality="remote", **kw) as reader:
            vf = await reader.get_virtual_service_file("s")
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for k in range(WRITERS):
                        tg.start_soon(writer, k)
                    while min(acked) < 20:
                        await anyio.sleep(0.01)
                    srv.kill()
                    before_kill[:] = acked
                    srv.start()  # same data dir, same port
                    killed.set()
                    # every value acknowledged before the kill is on the restarted server
                    async with commy.connect(url, **kw) as check:
                        for k in range(WRITERS):
                            assert await check.read_variable("s", f"x{k}") >= before_kill[k]
                    while min(a - b for a, b in zip(acked, before_kill, strict=True)) < 20:
                        await anyio.sleep(0.01)  # the load goes on after the restart
                    stop.set()
                async with commy.connect(url, **kw) as check:
                    final = {f"x{k}": await check.read_variable("s", f"x{k}") for k in range(WRITERS)}
                assert final == {f"x{k}": acked[k] for k in range(WRITERS)}, "no acknowledged write lost"
                while any(vf.read(n) != v for n, v in final.items()):
                    await anyio.sleep(0.02)  # the subscriber converges to the final values
        assert killed.is_set()
    finally:
        srv.kill()


async def test_damaged_service_files_give_typed_errors_and_spare_other_services(tmp_path, caplog) -> None:
    from serverkit import connect, make_config, running

    from commy import fileformat as ff
    from commy.errors import FileError, FileFormatError

    config = make_config(tmp_path / "data")
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as c:
            await c.create_tenant("acme")
            for name in ("gone", "swapped", "short", "fine"):
                await c.create_service(name)
                await c.allocate_variable(name, "x", "i64", initial=1)
            files = {n: ff.service_path(config.data_path, server.store.service("acme", n).file)
                     for n in ("gone", "swapped", "short")}
            files["gone"].unlink()
            files["swapped"].unlink()
            files["swapped"].write_bytes(b"\0" * 8192)
            os.truncate(files["short"], 4096)  # the header page stays: no SIGBUS on the seq word
            with pytest.raises(FileError, match="deleted"):
                await c.read_variable("gone", "x")
            with pytest.raises(FileError, match="replaced"):
                await c.write_variable("swapped", "x", 2)
            with pytest.raises(FileFormatError, match="truncated"):
                await c.read_variable("short", "x")
            # the server and the connection go on; other services are unaffected
            await c.write_variable("fine", "x", 5)
            assert await c.read_variable("fine", "x") == 5
            assert await c.heartbeat() >= 0
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    for name in ("gone", "swapped", "short"):
        assert any(f"acme/{name}" in m and "requests fail" in m for m in logged), logged
