"""The blocking facade (`commy.connect_sync`) against a real server over WSS in another
process: the same read / write / change-event checks as the async client, local and
remote; plus remote-mirror change events on the async client."""

from __future__ import annotations

import threading
import time

import anyio
import pytest
from procserver import server_process
from serverkit import connect, make_config, running

import commy
from commy.client import ServiceUpdate
from commy.config import ClientConfig, Config
from commy.errors import InvalidValue, ServiceNotFound, VariableNotFound
from commy.events import FileChangeEvent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with server_process(tmp_path_factory.mktemp("sync-e2e")) as info:
        yield info


@pytest.fixture(scope="module")
def tenant(server):
    """A tenant with a service ``svc`` (counter i64, label str[16], pos f64[3])."""
    with _connect(server, "sync") as c:
        c.create_tenant("sync")
        c.create_service("svc")
        c.allocate_variable("svc", "counter", "i64", initial=1)
        c.allocate_variable("svc", "label", "str[16]", initial="start")
        c.allocate_variable("svc", "pos", "f64[3]")
    return "sync"


def _connect(server, tenant, **kw):
    config = Config(client=ClientConfig(timeout=20.0))
    return commy.connect_sync(
        server.url, tenant=tenant, api_key=server.admin_key, ssl_context=server.ssl_context(),
        config=config, **kw,
    )


def _eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_requests_block_and_raise_typed_errors(server, tenant) -> None:
    with _connect(server, tenant) as c:
        assert c.principal == "admin" and c.tenant == tenant
        assert "svc" in c.list_services()
        info = c.get_service("svc")
        assert set(info.variables) == {"counter", "label", "pos"}
        version = c.write_variable("svc", "label", "hello")
        assert version >= 1
        assert c.read_variable("svc", "label") == "hello"
        with pytest.raises(VariableNotFound):
            c.read_variable("svc", "nope")
        with pytest.raises(ServiceNotFound):
            c.get_service("missing")
        assert c.heartbeat() > 0
    assert c.closed


def test_local_and_remote_see_each_others_writes(server, tenant) -> None:
    with _connect(server, tenant, locality="local") as local, _connect(server, tenant, locality="remote") as remote:
        lvf = local.get_virtual_service_file("svc")
        rvf = remote.get_virtual_service_file("svc")
        assert lvf.is_local and not rvf.is_local

        lvf.write("counter", 42)  # mapped write → server notices → pushed into the mirror
        lvf.write("pos", [1.0, 2.0, 3.0])
        _eventually(lambda: rvf.read("counter") == 42 and rvf.read("pos") == [1.0, 2.0, 3.0])
        assert remote.read_variable("svc", "counter") == 42

        remote.write_variable("svc", "counter", 7)  # acknowledged write through the server
        assert lvf.read("counter") == 7
        rvf.write("label", "from remote")  # mirror write from this (non-loop) thread
        assert rvf.read("label") == "from remote"
        _eventually(lambda: lvf.read("label") == "from remote")
        with pytest.raises(InvalidValue):
            rvf.write("counter", "not a number")  # the error raises in the caller
        assert remote.write_errors == []
        lvf.close()
        rvf.close()


@pytest.mark.parametrize("locality", ["local", "remote"])
def test_change_events_through_blocking_iterator_and_callback(server, tenant, locality) -> None:
    with _connect(server, tenant, locality=locality) as reader, _connect(server, tenant) as writer:
        vf = reader.get_virtual_service_file("svc")
        assert vf.is_local == (locality == "local")
        called: list[FileChangeEvent] = []
        vf.on_file_change(called.append)
        vf.start_file_monitoring()
        wvf = writer.get_virtual_service_file("svc")

        def write_later() -> None:
            time.sleep(0.2)
            for i in range(100, 106):
                wvf.write("counter", i)
                time.sleep(0.02)

        thread = threading.Thread(target=write_later)
        thread.start()
        seen = []
        for event in vf.iter_changes(timeout=10):
            assert isinstance(event, FileChangeEvent)
            assert event.new_seq > event.old_seq
            seen.append(event)
            if "counter" in event.variables and vf.read("counter") == 105:
                break
        thread.join()
        assert seen, "no change event"
        assert all(set(e.variables) <= {"counter"} for e in seen), "events name exactly what changed"
        _eventually(lambda: called and vf.read("counter") == 105)
        assert "counter" in called[-1].variables
        list(vf.iter_changes(timeout=0.2))  # ends by itself once nothing changes
        wvf.close()
        vf.close()


def test_client_iter_changes_yields_server_updates(server, tenant) -> None:
    with _connect(server, tenant) as c, _connect(server, tenant) as writer:
        updates = c.iter_changes("svc", timeout=10)

        def write_later() -> None:
            time.sleep(0.2)
            writer.write_variable("svc", "label", "pushed")

        thread = threading.Thread(target=write_later)
        thread.start()
        for update in updates:
            assert isinstance(update, ServiceUpdate)
            if update.values.get("label") == "pushed":
                break
        else:
            pytest.fail("no update")
        updates.close()  # unsubscribes
        thread.join()
        assert list(c.iter_changes("svc", timeout=0.1)) == []


def test_connect_failure_raises_and_leaves_no_thread(server, tenant) -> None:
    from commy.errors import Unauthorized

    before = threading.active_count()
    with pytest.raises(Unauthorized):
        commy.connect_sync(server.url, tenant=tenant, api_key="commy_wrong", ssl_context=server.ssl_context())
    _eventually(lambda: threading.active_count() <= before, timeout=5)


# ---------------------------------------------------------------- async remote events


@pytest.mark.anyio
async def test_async_remote_mirror_emits_change_events(tmp_path) -> None:
    config = make_config(tmp_path / "data")
    async with running(config) as (server, url):
        key = server.create_admin_key()
        async with connect(url, config, "acme", key) as c:
            await c.create_tenant("acme")
            await c.create_service("svc")
            await c.allocate_variable("svc", "counter", "i64")
            await c.allocate_variable("svc", "label", "str[8]")
        async with connect(url, config, "acme", key, locality="remote") as r, connect(url, config, "acme", key) as w:
            rvf = await r.get_virtual_service_file("svc")
            assert not rvf.is_local

            async def write() -> None:
                await anyio.sleep(0.05)
                await w.write_variable("svc", "counter", 5)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(write)
                    async for ev in rvf.changes():
                        assert ev.source == "remote" and ev.service == "svc"
                        assert ev.variables == ("counter",)
                        assert rvf.read("counter") == 5
                        break
            # the blocking queue got the same events as the async iterator
            ev = await anyio.to_thread.run_sync(rvf.wait_for_file_change, 10)
            assert ev.variables == ("counter",)
            await w.write_variable("svc", "label", "x")
            ev = await anyio.to_thread.run_sync(rvf.wait_for_file_change, 10)
            assert ev.variables == ("label",)
            rvf.close()
