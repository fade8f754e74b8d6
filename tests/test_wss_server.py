"""End to end over WSS: the commy Server in another process, real TLS, both client
transports; a local (mapped) and a forced-remote (mirrored) client see each other's writes."""

from __future__ import annotations

import multiprocessing
import ssl

import anyio
import pytest

import commy
from commy.bench.remote import _make_certs, _server_process
from commy.config import ClientConfig, Config

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def wss_server(tmp_path_factory):
    """(url, admin key, client ssl context, config) of a server in a spawned process."""
    root = tmp_path_factory.mktemp("wss-e2e")
    certs = _make_certs(root)
    mp = multiprocessing.get_context("spawn")
    queue = mp.Queue()
    proc = mp.Process(target=_server_process, args=(str(root / "data"), certs, queue), daemon=True)
    proc.start()
    try:
        url, _echo_url, key = queue.get(timeout=60)
        ctx = ssl.create_default_context(cafile=certs["ca"])
        config = Config(data_dir=str(root / "client"), client=ClientConfig(timeout=20.0))
        yield url, key, ctx, config
    finally:
        proc.terminate()
        proc.join(10)


async def _eventually(check, what: str, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.005)


@pytest.mark.parametrize("transport", ["wss", "wss-lean"])
async def test_local_and_remote_clients_see_each_others_writes(wss_server, transport, anyio_backend) -> None:
    url, key, ctx, config = wss_server
    tenant = f"t-{transport}-{anyio_backend}".replace("-", "")
    kw = dict(tenant=tenant, api_key=key, transport=transport, ssl_context=ctx, config=config)
    async with commy.connect(url, locality="auto", **kw) as setup:
        await setup.create_tenant(tenant)
        await setup.create_service("svc")
        await setup.allocate_variable("svc", "counter", "i64", initial=1)
        await setup.allocate_variable("svc", "label", "str[16]", initial="start")

    async with (
        commy.connect(url, locality="local", **kw) as local,
        commy.connect(url, locality="remote", **kw) as remote,
    ):
        lvf = await local.get_virtual_service_file("svc")
        rvf = await remote.get_virtual_service_file("svc")
        assert lvf.is_local and not rvf.is_local
        assert rvf.read("counter") == 1

        # local mapped write → the server notices → pushed into the remote mirror
        lvf.write("counter", 42)
        lvf.write("label", "from local")
        await _eventually(lambda: rvf.read("counter") == 42, "remote mirror update")
        await _eventually(lambda: rvf.read("label") == "from local", "remote mirror update")
        assert await remote.read_variable("svc", "counter") == 42

        # remote write through the server → visible in the local mapping at once
        await remote.write_variable("svc", "counter", 7)
        assert lvf.read("counter") == 7
        rvf.write("label", "from remote")  # mirror write: fire-and-forget to the server
        await _eventually(lambda: lvf.read("label") == "from remote", "local mapping update")
        lvf.close()
        rvf.close()
