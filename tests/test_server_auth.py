"""Access control on every message type: unauthenticated, cross-tenant, per-service grants."""

from __future__ import annotations

import anyio
import pytest
from serverkit import connect, make_config, running

from commy import protocol
from commy.errors import ConnectionLost, PermissionDenied, Unauthorized
from commy.transports.base import ClientOptions
from commy.transports.inprocess import InProcessTransport

pytestmark = pytest.mark.anyio

# A valid example of every request; the test fails if a message type is added without one.
SAMPLES = {
    "Authenticate": {"tenant": "a"},
    "CreateTenant": {"name": "c"},
    "DeleteTenant": {"name": "b"},
    "ListTenants": {},
    "CreateService": {"tenant": "b", "service": "new"},
    "GetService": {"tenant": "b", "service": "s"},
    "DeleteService": {"tenant": "b", "service": "s"},
    "ListServices": {"tenant": "b"},
    "AllocateVariable": {"tenant": "b", "service": "s", "name": "y", "var_type": "i64"},
    "DeallocateVariable": {"tenant": "b", "service": "s", "name": "x"},
    "ReadVariable": {"tenant": "b", "service": "s", "name": "x"},
    "WriteVariable": {"tenant": "b", "service": "s", "name": "x", "value": 1},
    "ReadService": {"tenant": "b", "service": "s"},
    "Subscribe": {"tenant": "b", "service": "s"},
    "Unsubscribe": {"tenant": "b", "service": "s"},
    "GetServiceFilePath": {"tenant": "b", "service": "s"},
    "ReportVariableChanges": {"tenant": "b", "service": "s", "names": ["x"]},
    "Heartbeat": {},
    "Disconnect": {},
    "Logout": {},
    "Grant": {"tenant": "b", "principal": "p", "service": "s*", "permission": "read"},
    "Revoke": {"tenant": "b", "principal": "p", "service": "s*"},
    "ListGrants": {"tenant": "b"},
    "CreateApiKey": {"tenant": "b", "principal": "p"},
    "RevokeApiKey": {"key_id": "abcdefabcdef"},
    "ListApiKeys": {"tenant": "b"},
}
OPEN = {"Authenticate", "Heartbeat"}
# not tenant-scoped: Logout always succeeds, RevokeApiKey answers NOT_FOUND for another
# tenant's key id (test_security_matrix.py covers both)
UNSCOPED = {"Disconnect", "Logout", "RevokeApiKey"}


def test_samples_cover_every_request():
    assert set(SAMPLES) == set(protocol.REQUESTS)
    for kind, fields in SAMPLES.items():
        protocol.decode(protocol.encode({"type": kind, "id": 1, **fields}))


class Raw:
    """A bare connection speaking the protocol by hand."""

    def __init__(self, conn):
        self.conn = conn
        self.ids = iter(range(1, 1_000_000))

    async def ask(self, kind: str, **fields) -> dict:
        mid = next(self.ids)
        await self.conn.send(protocol.encode({"type": kind, "id": mid, **fields}))
        with anyio.fail_after(5):
            while True:
                msg = protocol.decode(await self.conn.receive(), direction="response")
                if msg.get("id") == mid:
                    return msg


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path / "data")


async def _setup(server):
    """Tenants a and b, service s (variable x) in both; keys of several principals."""
    store = server.store
    keys = {"server": server.create_admin_key()}
    for t in ("a", "b"):
        store.create_tenant(t)
    keys["a_admin"], _ = store.create_api_key("a", "boss", roles=["tenant-admin"])
    keys["b_admin"], _ = store.create_api_key("b", "boss", roles=["tenant-admin"])
    keys["a_reader"], _ = store.create_api_key("a", "reader", grants={"s": "read"})
    keys["a_writer"], _ = store.create_api_key("a", "writer", grants={"s": "write"})
    keys["a_nobody"], _ = store.create_api_key("a", "nobody")
    return keys


async def _make_services(url, config, keys):
    for t in ("a", "b"):
        async with connect(url, config, t, keys[f"{t}_admin"]) as c:
            await c.create_service("s")
            await c.allocate_variable("s", "x", "i64")


@pytest.mark.parametrize("kind", sorted(set(SAMPLES) - OPEN))
async def test_unauthenticated_requests_are_refused(config, kind):
    async with running(config) as (server, url):
        keys = await _setup(server)
        await _make_services(url, config, keys)
        raw = Raw(await InProcessTransport().connect(url, ClientOptions()))
        reply = await raw.ask(kind, **SAMPLES[kind])
        assert reply["type"] == "Error" and reply["code"] == "UNAUTHORIZED", reply
        if kind != "Disconnect":  # a Disconnect ends the connection even so
            assert (await raw.ask("Heartbeat"))["type"] == "Heartbeat"  # the connection survives
        await raw.conn.aclose()


@pytest.mark.parametrize("kind", sorted(set(SAMPLES) - OPEN - UNSCOPED))
async def test_cross_tenant_requests_are_refused(config, kind):
    async with running(config) as (server, url):
        keys = await _setup(server)
        await _make_services(url, config, keys)
        raw = Raw(await InProcessTransport().connect(url, ClientOptions()))
        ok = await raw.ask("Authenticate", tenant="a", api_key=keys["a_admin"])
        assert ok["type"] == "Authenticated"
        reply = await raw.ask(kind, **SAMPLES[kind])  # every sample addresses tenant b
        assert reply["type"] == "Error" and reply["code"] == "PERMISSION_DENIED", reply
        # ... and nothing in tenant b changed
        async with connect(url, config, "b", keys["b_admin"]) as c:
            assert await c.list_services() == ["s"]
            assert sorted((await c.get_service("s")).variables) == ["x"]
        await raw.conn.aclose()


async def test_keys_are_bound_to_their_tenant(config):
    async with running(config) as (server, url):
        keys = await _setup(server)
        with pytest.raises(Unauthorized, match="another tenant"):
            async with connect(url, config, "b", keys["a_admin"]):
                pass
        with pytest.raises(Unauthorized):
            async with connect(url, config, "a", "commy_" + "x" * 43):
                pass
        with pytest.raises(Unauthorized):
            async with connect(url, config, "a", "not-a-key"):
                pass
        with pytest.raises(Unauthorized):
            async with connect(url, config, "a", None):
                pass
        # the server admin may authenticate to a tenant that does not exist yet, to create it
        async with connect(url, config, "fresh", keys["server"]) as c:
            await c.create_tenant("fresh")
            await c.create_service("svc")
        key_id = keys["a_reader"][len("commy_") : len("commy_") + 12]
        server.store.revoke_api_key(key_id)
        with pytest.raises(Unauthorized, match="revoked"):
            async with connect(url, config, "a", keys["a_reader"]):
                pass


async def test_too_many_failed_authentications_close_the_connection(config):
    async with running(config) as (server, url):
        await _setup(server)
        raw = Raw(await InProcessTransport().connect(url, ClientOptions()))
        with pytest.raises(ConnectionLost):
            for _ in range(10):
                reply = await raw.ask("Authenticate", tenant="a", api_key="commy_" + "y" * 43)
                assert reply["code"] == "UNAUTHORIZED"


async def test_grants_read_write_admin(config):
    async with running(config) as (server, url):
        keys = await _setup(server)
        await _make_services(url, config, keys)
        async with connect(url, config, "a", keys["a_reader"]) as c:
            assert await c.read_variable("s", "x") == 0
            with pytest.raises(PermissionDenied):
                await c.write_variable("s", "x", 1)
            with pytest.raises(PermissionDenied):
                await c.allocate_variable("s", "y", "i64")
            with pytest.raises(PermissionDenied):
                await c.delete_service("s")
            with pytest.raises(PermissionDenied):
                await c.create_service("t")
            assert await c.list_services() == ["s"]
            vf = await c.get_virtual_service_file("s")
            assert vf.is_local and vf.readonly
            with pytest.raises(PermissionDenied):
                vf.write("x", 5)
            vf.close()
        async with connect(url, config, "a", keys["a_reader"], locality="remote") as c:
            vf = await c.get_virtual_service_file("s")
            assert not vf.is_local and vf.readonly
            with pytest.raises(PermissionDenied):
                vf.write("x", 5)
        async with connect(url, config, "a", keys["a_writer"]) as c:
            await c.write_variable("s", "x", 7)
            await c.allocate_variable("s", "y", "i64")
            with pytest.raises(PermissionDenied):
                await c.deallocate_variable("s", "y")
            with pytest.raises(PermissionDenied):
                await c.delete_service("s")
        async with connect(url, config, "a", keys["a_nobody"]) as c:
            with pytest.raises(PermissionDenied):
                await c.read_variable("s", "x")
            assert await c.list_services() == []
        server.store.set_grant("a", "nobody", "*", "admin")  # grants apply live
        async with connect(url, config, "a", keys["a_nobody"]) as c:
            assert await c.read_variable("s", "x") == 7
            await c.deallocate_variable("s", "y")


async def test_garbage_never_breaks_the_connection(config):
    import random

    rng = random.Random(1234)
    pieces = ['{', '}', '[', ']', '"v"', ':', '1', ',', '"id"', '"type"', '"Heartbeat"', '"GetService"',
              '"service"', '"x"', 'null', 'true', '-1', '1e999', '"\\u0000"', '9' * 30, ' ']
    async with running(config) as (server, url):
        await _setup(server)
        raw = Raw(await InProcessTransport().connect(url, ClientOptions()))
        for i in range(300):
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
            if i % 3 == 0:
                text = f'{{"v":1,"id":{10_000 + i},' + text
            await raw.conn.send(text)
        await raw.conn.send("x" * (config.server.max_message_size + 1))
        # every answer so far is an error with a protocol code; the connection still works
        codes = set()
        while True:
            msg = protocol.decode(await raw.conn.receive(), direction="response")
            if msg["type"] == "Error":
                codes.add(msg["code"])
            if msg["type"] == "Error" and msg["code"] == "LIMIT_EXCEEDED":
                break
        assert codes <= {"INVALID_REQUEST", "UNAUTHORIZED", "LIMIT_EXCEEDED"}
        assert (await raw.ask("Heartbeat"))["type"] == "Heartbeat"
        await raw.conn.aclose()


def test_key_ids_never_start_like_a_command_line_option() -> None:
    from commy.auth.api_key import generate_key, key_id_of

    for _ in range(2000):  # ~1 in 32 tokens starts with "-" or "_": all are redrawn
        key, key_id, _digest = generate_key()
        assert key_id == key_id_of(key) and key_id[0].isalnum()
