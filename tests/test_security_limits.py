"""Limits, name validation, config-given access, and local-path safety."""

from __future__ import annotations

import os
import stat

import anyio
import pytest
from serverkit import connect, make_config, running

from commy import protocol
from commy.config import AccessConfig, LimitsConfig, load_config
from commy.errors import (
    ConfigError,
    ConnectionLost,
    InvalidRequest,
    LimitExceeded,
    PermissionDenied,
)
from commy.transports.base import ClientOptions
from commy.transports.inprocess import InProcessTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _config(tmp_path, **limits):
    cfg = make_config(tmp_path / "data")
    cfg.limits = LimitsConfig(**limits)
    return cfg


async def _admin(server, url, config):
    key = server.create_admin_key()
    server.store.create_tenant("a")
    return key


async def test_limits_services_variables_size_subscriptions(tmp_path):
    config = _config(tmp_path, max_services_per_tenant=2, max_variables_per_service=3,
                     max_service_size=64 * 1024, max_subscriptions=1)
    async with running(config) as (server, url):
        key = await _admin(server, url, config)
        async with connect(url, config, "a", key) as c:
            await c.create_service("s1")
            await c.create_service("s2")
            with pytest.raises(LimitExceeded, match="limits.max_services_per_tenant"):
                await c.create_service("s3")
            for i in range(3):
                await c.allocate_variable("s1", f"v{i}", "i64")
            with pytest.raises(LimitExceeded, match="limits.max_variables_per_service"):
                await c.allocate_variable("s1", "v3", "i64")
            with pytest.raises(LimitExceeded, match="limits.max_service_size"):
                await c.allocate_variable("s2", "big", "bytes[30000]")
            await c.allocate_variable("s2", "small", "bytes[1000]")  # still fits
            async with c.subscribe("s1"):
                with pytest.raises(LimitExceeded, match="limits.max_subscriptions"):
                    async with c.subscribe("s2"):
                        pass
            assert await c.list_services() == ["s1", "s2"]


async def test_limits_auth_attempts_per_connection(tmp_path):
    config = _config(tmp_path, max_auth_failures=2)
    async with running(config) as (server, url):
        await _admin(server, url, config)
        conn = await InProcessTransport().connect(url, ClientOptions())
        for i in range(2):
            await conn.send(protocol.encode({"type": "Authenticate", "id": i, "tenant": "a", "api_key": "nope"}))
        with anyio.fail_after(5), pytest.raises(ConnectionLost):
            while True:
                msg = protocol.decode(await conn.receive(), direction="response")
                assert msg["code"] == "UNAUTHORIZED"


async def test_limits_slow_consumer_is_disconnected_memory_bounded(tmp_path):
    config = _config(tmp_path, max_pending_pushes=20)
    config.server.push_timeout = 30  # the pending limit, not the timeout, must end it
    async with running(config) as (server, url):
        key = await _admin(server, url, config)
        async with connect(url, config, "a", key) as c:
            await c.create_service("s")
            for i in range(40):
                await c.allocate_variable("s", f"v{i}", "i64")
            # a subscriber that never reads: its transport buffer holds one message
            slow = await InProcessTransport(buffer=1).connect(url, ClientOptions())
            await slow.send(protocol.encode({"type": "Authenticate", "id": 1, "tenant": "a", "api_key": key}))
            await slow.send(protocol.encode({"type": "Subscribe", "id": 2, "tenant": "a", "service": "s"}))
            await anyio.sleep(0.2)
            sessions = len(server._sessions)
            with anyio.fail_after(10):
                round_ = 0
                while len(server._sessions) == sessions:
                    round_ += 1
                    for i in range(40):  # distinct variables: coalescing alone cannot hold them
                        await c.write_variable("s", f"v{i}", round_)
                    await anyio.sleep(0.01)
            assert all(len(s._pending) == 0 or s._pending_count <= 20 for s in server._sessions.values())
            assert await c.read_variable("s", "v0") == round_  # the fast client is unaffected
            await slow.aclose()


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 65, "a\x00b", "a b", "..", "é"])
async def test_names_are_validated(tmp_path, bad):
    config = _config(tmp_path)
    async with running(config) as (server, url):
        key = await _admin(server, url, config)
        async with connect(url, config, "a", key) as c:
            with pytest.raises(InvalidRequest):
                await c.create_service(bad)
            with pytest.raises(InvalidRequest):
                await c.create_tenant(bad)
            await c.create_service("ok")
            if bad:
                with pytest.raises(InvalidRequest):
                    await c.allocate_variable("ok", bad, "i64")
    assert sorted(p for p in os.listdir(config.data_path) if not p.startswith("service_")) == ["commy.sqlite3"]


def test_limits_and_access_config_from_file_and_env(tmp_path):
    f = tmp_path / "commy.toml"
    f.write_text('[limits]\nmax_services_per_tenant = 9\n[access]\ngrants = ["a/bob:s*=write"]\n'
                 '[mtls]\nrules = ["cn:{principal}@{tenant}"]\n')
    cfg = load_config(f, environ={"COMMY_LIMITS_MAX_VARIABLES_PER_SERVICE": "7",
                                  "COMMY_ACCESS_ROLES": "a/carol=tenant-admin"})
    assert cfg.limits.max_services_per_tenant == 9 and cfg.limits.max_variables_per_service == 7
    assert cfg.access.grants == ["a/bob:s*=write"] and cfg.access.roles == ["a/carol=tenant-admin"]
    assert cfg.mtls.rules == ["cn:{principal}@{tenant}"]
    with pytest.raises(ConfigError):
        load_config(f, environ={"COMMY_LIMITS_MAX_SERVICES": "1"})


async def test_access_grants_and_roles_from_config(tmp_path):
    config = _config(tmp_path)
    config.access = AccessConfig(grants=["a/bob:s*=write"], roles=["a/carol=tenant-admin"])
    async with running(config) as (server, url):
        admin = await _admin(server, url, config)
        bob, _ = server.store.create_api_key("a", "bob")
        carol, _ = server.store.create_api_key("a", "carol")
        async with connect(url, config, "a", admin) as c:
            await c.create_service("s1")
            await c.create_service("t1")
            await c.allocate_variable("s1", "x", "i64")
        async with connect(url, config, "a", bob) as c:
            await c.write_variable("s1", "x", 5)
            with pytest.raises(PermissionDenied):
                await c.get_service("t1")
            grants = await c.list_grants("bob")
            assert grants == [{"principal": "bob", "service": "s*", "permission": "write", "source": "config"}]
        async with connect(url, config, "a", carol) as c:
            assert "tenant-admin" in c.roles
            await c.delete_service("t1")
    bad = make_config(tmp_path / "d2")
    bad.access = AccessConfig(grants=["a/bob:../x=write"])
    with pytest.raises(ConfigError):
        async with running(bad):
            pass


async def test_local_path_safety_modes_and_readonly_mapping(tmp_path):
    config = _config(tmp_path)
    async with running(config) as (server, url):
        admin = await _admin(server, url, config)
        reader, _ = server.store.create_api_key("a", "reader", grants={"s": "read"})
        nobody, _ = server.store.create_api_key("a", "nobody")
        async with connect(url, config, "a", admin) as c:
            await c.create_service("s")
            await c.allocate_variable("s", "x", "i64", initial=1)
            info = await c.request("GetServiceFilePath", service="s")
            assert info["readonly"] is False and info["permission"] == "admin"
        assert stat.S_IMODE(config.data_path.stat().st_mode) == 0o700
        for name in os.listdir(config.data_path):
            mode = stat.S_IMODE((config.data_path / name).stat().st_mode)
            assert mode & 0o077 == 0, (name, oct(mode))
        async with connect(url, config, "a", reader) as c:
            info = await c.request("GetServiceFilePath", service="s")
            assert info["readonly"] is True and info["permission"] == "read"
            vf = await c.get_virtual_service_file("s")
            assert vf.is_local and vf.readonly and vf.read("x") == 1
            with pytest.raises(PermissionDenied):
                vf.write("x", 2)
            vf.close()
        async with connect(url, config, "a", nobody) as c:
            with pytest.raises(PermissionDenied):
                await c.request("GetServiceFilePath", service="s")
