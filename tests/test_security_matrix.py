"""The permission matrix over a real TLS connection: every request type × every kind of
caller → the outcome documented in docs/security.md (the table there is checked against
`EXPECTED`). Plus the known weaknesses of the original system, one test each."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from securitykit import Raw, client_ctx, connect, make_pki, running, tls_config

from commy import cli, protocol
from commy.server.store import Store

pytestmark = pytest.mark.anyio

DOCS = Path(__file__).resolve().parent.parent / "docs" / "security.md"
COLUMNS = ["unauthenticated", "other tenant", "read", "write", "admin", "tenant admin", "revoked"]
BOGUS_KEY = "commy_" + "Q" * 43

# A valid request of every type, aimed at tenant "a" (service s, variable x).
SAMPLES = {
    "Authenticate": {"tenant": "a", "api_key": BOGUS_KEY},
    "Heartbeat": {},
    "Logout": {},
    "Disconnect": {},
    "CreateTenant": {"name": "c"},
    "DeleteTenant": {"name": "b"},
    "ListTenants": {},
    "CreateService": {"tenant": "a", "service": "s2"},
    "GetService": {"tenant": "a", "service": "s"},
    "DeleteService": {"tenant": "a", "service": "s"},
    "ListServices": {"tenant": "a"},
    "AllocateVariable": {"tenant": "a", "service": "s", "name": "y", "var_type": "i64"},
    "DeallocateVariable": {"tenant": "a", "service": "s", "name": "x"},
    "ReadVariable": {"tenant": "a", "service": "s", "name": "x"},
    "WriteVariable": {"tenant": "a", "service": "s", "name": "x", "value": 1},
    "ReadService": {"tenant": "a", "service": "s"},
    "Subscribe": {"tenant": "a", "service": "s"},
    "Unsubscribe": {"tenant": "a", "service": "s"},
    "GetServiceFilePath": {"tenant": "a", "service": "s"},
    "ReportVariableChanges": {"tenant": "a", "service": "s", "names": ["x"]},
    "Grant": {"tenant": "a", "principal": "temp", "service": "t*", "permission": "read"},
    "Revoke": {"tenant": "a", "principal": "temp", "service": "t*"},
    "ListGrants": {"tenant": "a"},
    "CreateApiKey": {"tenant": "a", "principal": "temp"},
    "RevokeApiKey": {"key_id": "<a throwaway key of tenant a>"},
    "ListApiKeys": {"tenant": "a"},
}

U, P, INV, NF = "UNAUTHORIZED", "PERMISSION_DENIED", "INVALID_REQUEST", "NOT_FOUND"
OK = "ok"
_ALL_OK = [OK] * 7
_SERVER_ADMIN = [U, P, P, P, P, P, U]
_READ = [U, P, OK, OK, OK, OK, U]
_WRITE = [U, P, P, OK, OK, OK, U]
_ADMIN = [U, P, P, P, OK, OK, U]
_TENANT_ADMIN = [U, P, P, P, P, OK, U]
EXPECTED: dict[str, list[str]] = {
    "Authenticate": [U, INV, INV, INV, INV, INV, U],
    "Heartbeat": _ALL_OK,
    "Logout": [U, OK, OK, OK, OK, OK, U],
    "Disconnect": [U, OK, OK, OK, OK, OK, U],
    "CreateTenant": _SERVER_ADMIN,
    "DeleteTenant": _SERVER_ADMIN,
    "ListTenants": _SERVER_ADMIN,
    "CreateService": _ADMIN,
    "GetService": _READ,
    "DeleteService": _ADMIN,
    "ListServices": _READ,
    "AllocateVariable": _WRITE,
    "DeallocateVariable": _ADMIN,
    "ReadVariable": _READ,
    "WriteVariable": _WRITE,
    "ReadService": _READ,
    "Subscribe": _READ,
    "Unsubscribe": _READ,
    "GetServiceFilePath": _READ,
    "ReportVariableChanges": _WRITE,
    "Grant": _TENANT_ADMIN,
    "Revoke": _TENANT_ADMIN,
    "ListGrants": _TENANT_ADMIN,
    "CreateApiKey": _TENANT_ADMIN,
    # another tenant's key id is "not found": key ids of other tenants are not disclosed
    "RevokeApiKey": [U, NF, P, P, P, OK, U],
    "ListApiKeys": _TENANT_ADMIN,
}


def test_matrix_covers_every_request_and_matches_the_docs():
    assert set(SAMPLES) == set(protocol.REQUESTS) == set(EXPECTED)
    for kind, fields in SAMPLES.items():
        protocol.decode(protocol.encode({"type": kind, "id": 1, **fields}))
    # docs/security.md carries the same table
    text = DOCS.read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `(\w+)` \|(.*)\|\s*$", line)
        if m and m.group(1) in EXPECTED:
            rows[m.group(1)] = [c.strip().strip("`") for c in m.group(2).split("|")]
    assert rows == EXPECTED, "docs/security.md permission matrix differs from the test"


def matrix_markdown() -> str:
    """The table for docs/security.md (print it after changing EXPECTED)."""
    lines = ["| request | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for kind, row in EXPECTED.items():
        lines.append(f"| `{kind}` | " + " | ".join(f"`{c}`" if c != OK else OK for c in row) + " |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("matrix"))


@pytest.fixture
def anyio_backend():
    return "asyncio"  # the matrix is about the server's rules, not the event loop


class World:
    """Tenants a and b, service a/s with variable x, and a key per kind of caller."""

    def __init__(self, server, url, config, pki) -> None:
        self.server, self.url, self.config, self.pki = server, url, config, pki
        store = server.store
        self.keys = {"server": server.create_admin_key()}
        for t in ("a", "b"):
            store.create_tenant(t)
        self.keys["other tenant"], _ = store.create_api_key("b", "boss", roles=["tenant-admin"])
        self.keys["read"], _ = store.create_api_key("a", "reader", grants={"s": "read"})
        self.keys["write"], _ = store.create_api_key("a", "writer", grants={"s": "write"})
        self.keys["admin"], _ = store.create_api_key("a", "svcadmin", grants={"s*": "admin"})
        self.keys["tenant admin"], _ = store.create_api_key("a", "boss", roles=["tenant-admin"])

    async def reset(self, admin) -> None:
        services = await admin.list_services(tenant="a")
        if "s2" in services:
            await admin.delete_service("s2", tenant="a")
        if "s" not in services:
            await admin.create_service("s", tenant="a")
        info = await admin.get_service("s", tenant="a")
        if "y" in info.variables:
            await admin.deallocate_variable("s", "y", tenant="a")
        if "x" not in info.variables:
            await admin.allocate_variable("s", "x", "i64", tenant="a")
        await admin.write_variable("s", "x", 0, tenant="a")

    async def unchanged(self, admin) -> None:
        assert sorted(await admin.list_tenants()) == ["a", "b"]
        assert await admin.list_services(tenant="a") == ["s"]
        assert sorted((await admin.get_service("s", tenant="a")).variables) == ["x"]
        assert await admin.read_variable("s", "x", tenant="a") == 0

    async def caller(self, column: str, admin) -> Raw:
        raw = await Raw.open(self.url, client_ctx(self.pki))
        if column == "unauthenticated":
            return raw
        tenant = "b" if column == "other tenant" else "a"
        key = self.keys.get(column)
        if column == "revoked":
            made = await admin.create_api_key("w2", grants={"s": "write"}, tenant="a")
            key = made["key"]
        reply = await raw.ask("Authenticate", tenant=tenant, api_key=key)
        assert reply["type"] == "Authenticated", reply
        if column == "revoked":
            await admin.revoke_api_key(made["key_id"])
        return raw


@pytest.mark.parametrize("column", COLUMNS)
async def test_matrix_every_request_for(tmp_path, pki, column):
    config = tls_config(tmp_path / "data", pki)
    col = COLUMNS.index(column)
    async with running(config) as (server, url):
        world = World(server, url, config, pki)
        async with connect(url, config, "a", world.keys["server"], ctx=client_ctx(pki)) as admin:
            for kind, fields in SAMPLES.items():
                await world.reset(admin)
                if kind == "RevokeApiKey":
                    fields = {"key_id": (await admin.create_api_key("temp", tenant="a"))["key_id"]}
                raw = await world.caller(column, admin)
                try:
                    reply = await raw.ask(kind, **fields)
                finally:
                    await raw.aclose()
                got = OK if reply["type"] != "Error" else reply["code"]
                if got in ("SERVICE_NOT_FOUND", "TENANT_NOT_FOUND"):
                    got = NF
                want = EXPECTED[kind][col]
                assert got == want, f"{kind} as {column}: {reply}"
                if want != OK:
                    await world.unchanged(admin)


# ---------------------------------------------------------------- known weaknesses


@pytest.fixture
async def world(tmp_path, pki):
    config = tls_config(tmp_path / "data", pki)
    async with running(config) as (server, url):
        w = World(server, url, config, pki)
        async with connect(url, config, "a", w.keys["server"], ctx=client_ctx(pki)) as admin:
            await w.reset(admin)
            await admin.create_service("secret", tenant="b")
            await admin.allocate_variable("secret", "pin", "i64", initial=1234, tenant="b")
            w.admin = admin
            yield w


async def test_matrix_weakness_cross_tenant_access_by_guessed_service_id(world):
    b_info = await world.admin.get_service("secret", tenant="b")
    raw = await world.caller("tenant admin", world.admin)
    # the id is a valid name, but services are addressed by (tenant, name), never by id
    for tenant in ("a", "b"):
        for kind in ("GetService", "ReadService", "Subscribe", "GetServiceFilePath"):
            reply = await raw.ask(kind, tenant=tenant, service=b_info.service_id)
            assert reply["code"] in ("SERVICE_NOT_FOUND", "PERMISSION_DENIED"), reply
        reply = await raw.ask("ReadVariable", tenant=tenant, service=b_info.service_id, name="pin")
        assert reply["code"] in ("SERVICE_NOT_FOUND", "PERMISSION_DENIED"), reply
    assert (await raw.ask("ReadVariable", tenant="b", service="secret", name="pin"))["code"] == "PERMISSION_DENIED"
    assert (await raw.ask("ListServices", tenant="b"))["code"] == "PERMISSION_DENIED"
    listed = await raw.ask("ListServices")
    assert b_info.service_id not in str(listed)
    await raw.aclose()


async def test_matrix_weakness_unauthenticated_data_operations(world):
    raw = await world.caller("unauthenticated", world.admin)
    for kind in ("ReadVariable", "WriteVariable", "Subscribe", "ReadService", "GetServiceFilePath",
                 "AllocateVariable", "CreateService", "ListServices", "Grant", "CreateApiKey"):
        reply = await raw.ask(kind, **SAMPLES[kind])
        assert reply["code"] == "UNAUTHORIZED", reply
    assert (await raw.ask("Heartbeat"))["type"] == "Heartbeat"  # the connection survives
    assert await world.admin.read_variable("s", "x", tenant="a") == 0
    await raw.aclose()


async def test_matrix_weakness_unknown_tenant(world):
    raw = await world.caller("unauthenticated", world.admin)
    # a valid key, the wrong tenant: refused whether or not that tenant exists
    for tenant in ("ghost", "b"):
        reply = await raw.ask("Authenticate", tenant=tenant, api_key=world.keys["read"])
        assert reply["code"] == "UNAUTHORIZED", reply
    reply = await raw.ask("Authenticate", tenant="../a", api_key=world.keys["read"])
    assert reply["code"] == "INVALID_REQUEST", reply
    assert "ghost" not in world.server.store.list_tenants()
    await raw.aclose()


async def _subscribed(world, key: str) -> Raw:
    raw = await Raw.open(world.url, client_ctx(world.pki))
    assert (await raw.ask("Authenticate", tenant="a", api_key=key))["type"] == "Authenticated"
    assert (await raw.ask("Subscribe", tenant="a", service="s"))["type"] == "Subscribed"
    return raw


async def test_matrix_weakness_subscriptions_end_on_logout_and_revoke(world):
    admin = world.admin
    control = await _subscribed(world, world.keys["read"])
    logout = await _subscribed(world, world.keys["read"])
    key_made = await admin.create_api_key("kuser", grants={"s": "read"}, tenant="a")
    key_revoked = await _subscribed(world, key_made["key"])
    grant_user = await admin.create_api_key("guser", grants={"s*": "read"}, tenant="a")
    grant_revoked = await _subscribed(world, grant_user["key"])
    # revoked "from another process": a second Store on the same database
    offline_user = await admin.create_api_key("ouser", grants={"s": "read"}, tenant="a")
    offline = await _subscribed(world, offline_user["key"])

    assert (await logout.ask("Logout"))["type"] == "Ok"
    await admin.revoke_api_key(key_made["key_id"])
    await admin.revoke("guser", "s*", tenant="a")
    other_process = Store(world.config.data_path)
    other_process.revoke_api_key(offline_user["key_id"])
    other_process.close()
    await anyio.sleep(0.6)  # the server notices foreign store writes within ~0.25 s

    await admin.write_variable("s", "x", 99, tenant="a")
    got = await control.drain_pushes(0.5)
    assert any(m["type"] == "VariablesUpdated" and m["variables"][0]["value"] == 99 for m in got), got
    for raw, closed_code in ((logout, None), (key_revoked, "UNAUTHORIZED"), (grant_revoked, "PERMISSION_DENIED"),
                             (offline, "UNAUTHORIZED")):
        pushes = await raw.drain_pushes(0.1)
        assert not [m for m in pushes if m["type"] == "VariablesUpdated"], pushes
        if closed_code:
            assert [m["code"] for m in pushes if m["type"] == "SubscriptionClosed"] == [closed_code], pushes
    # later requests are refused: UNAUTHORIZED for a revoked key / logout, PERMISSION_DENIED for a grant
    assert (await logout.ask("ReadVariable", **SAMPLES["ReadVariable"]))["code"] == "UNAUTHORIZED"
    assert (await key_revoked.ask("ReadVariable", **SAMPLES["ReadVariable"]))["code"] == "UNAUTHORIZED"
    assert (await offline.ask("ReadVariable", **SAMPLES["ReadVariable"]))["code"] == "UNAUTHORIZED"
    assert (await grant_revoked.ask("ReadVariable", **SAMPLES["ReadVariable"]))["code"] == "PERMISSION_DENIED"
    assert (await grant_revoked.ask("Subscribe", tenant="a", service="s"))["code"] == "PERMISSION_DENIED"
    # a revoked key cannot come back
    reply = await key_revoked.ask("Authenticate", tenant="a", api_key=key_made["key"])
    assert reply["code"] == "UNAUTHORIZED"
    for raw in (control, logout, key_revoked, grant_revoked, offline):
        await raw.aclose()


async def test_matrix_grants_by_glob_and_roles_through_admin_messages(world):
    admin = world.admin
    boss = await world.caller("tenant admin", admin)
    await admin.create_service("sensor-1", tenant="a")
    await admin.create_service("motor-1", tenant="a")
    made = await boss.ask("CreateApiKey", tenant="a", principal="eve", grants={"sensor-*": "read"})
    assert made["type"] == "ApiKeyCreated"
    async with connect(world.url, world.config, "a", made["key"], ctx=client_ctx(world.pki)) as eve:
        assert sorted(await eve.list_services()) == ["sensor-1"]
        assert (await boss.ask("Grant", tenant="a", principal="eve", service="motor-?",
                               permission="write"))["type"] == "Ok"
        assert sorted(await eve.list_services()) == ["motor-1", "sensor-1"]
        grants = (await boss.ask("ListGrants", tenant="a", principal="eve"))["grants"]
        assert {(g["service"], g["permission"]) for g in grants} == {("sensor-*", "read"), ("motor-?", "write")}
        assert await eve.list_grants("eve") == grants  # everyone may list their own grants
        # roles: a tenant admin may make tenant admins, never server admins
        assert (await boss.ask("Grant", tenant="a", principal="eve", role="tenant-admin"))["type"] == "Ok"
        await anyio.sleep(0)
        await eve.create_service("eves")  # the live session gained the role
        reply = await boss.ask("Grant", tenant="a", principal="eve", role="server-admin")
        assert reply["code"] == "PERMISSION_DENIED"
        assert (await boss.ask("Revoke", tenant="a", principal="eve", role="tenant-admin"))["type"] == "Ok"
        with pytest.raises(Exception, match="needs admin"):
            await eve.create_service("eves2")
        reply = await boss.ask("Grant", tenant="a", principal="eve", service="../x", permission="read")
        assert reply["code"] == "INVALID_REQUEST"
        keys = (await boss.ask("ListApiKeys"))["keys"]
        assert {k["principal"] for k in keys} >= {"eve", "boss"} and all(k["tenant"] == "a" for k in keys)
    await boss.aclose()


async def test_matrix_cli_grant_revoke_and_keys_against_a_running_server(world, tmp_path):
    boss_key = world.keys["tenant admin"]
    common = ["--url", world.url, "--tenant", "a", "--api-key", boss_key, "--ca-file", str(world.pki.ca)]

    def run(*argv: str) -> int:
        return cli.main(list(argv))

    assert await anyio.to_thread.run_sync(run, "grant", "zed", "s", "write", *common) == 0
    assert world.server.permissions.level(_principal("a", "zed"), "a", "s") == 2
    assert await anyio.to_thread.run_sync(run, "revoke", "zed", "s", *common) == 0
    assert world.server.permissions.level(_principal("a", "zed"), "a", "s") == 0
    assert await anyio.to_thread.run_sync(run, "keys", "create", "--principal", "zed", "--grant", "s=read",
                                          *common) == 0
    assert any(r.principal == "zed" for r in world.server.store.list_api_keys("a"))
    assert await anyio.to_thread.run_sync(run, "grants", *common) == 0


def _principal(tenant: str, name: str):
    from commy.auth.base import Principal

    return Principal(tenant, name)
