"""Third-party authenticators: the example distribution (tests/plugins/commy_example_auth,
installed with its entry point) is discovered, used in the configured order, and turned
off by the disable list — over a real TLS connection."""

from __future__ import annotations

import importlib.metadata

import pytest
from commy_example_auth import SECRET_ENV, make_token
from securitykit import Raw, client_ctx, connect, make_pki, running, tls_config

from commy.errors import PluginError
from commy.plugins import load_plugins

pytestmark = pytest.mark.anyio
SECRET = b"s3cret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("plugins"))


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET.decode())


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_example_authenticator_is_found_through_its_entry_point():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="commy")}
    assert eps["example_auth"].value == "commy_example_auth"
    plugins = load_plugins()
    (reg,) = [r for r in plugins.authenticators if r.name == "example_token"]
    assert reg.plugin == "example_auth"
    assert "example_token" not in [r.name for r in load_plugins(disable=["example_auth"]).authenticators]


async def _login(url, pki, **fields) -> dict:
    raw = await Raw.open(url, client_ctx(pki))
    try:
        return await raw.ask("Authenticate", tenant="a", **fields)
    finally:
        await raw.aclose()


async def test_third_party_authenticator_order_accept_reject_and_pass(tmp_path, pki):
    config = tls_config(tmp_path / "data", pki, authenticators=["example_token", "api_key"])
    async with running(config) as (server, url):
        server.store.create_tenant("a")
        key, _ = server.store.create_api_key("a", "keyuser", roles=["tenant-admin"])
        async with connect(url, config, "a", key, ctx=client_ctx(pki)) as admin:  # token passes → api_key
            assert admin.principal == "keyuser"
            await admin.create_service("s")
            await admin.allocate_variable("s", "x", "i64", initial=3)
        token = make_token(SECRET, "a", "tok")
        ok = await _login(url, pki, credentials={"token": token})
        assert ok["type"] == "Authenticated" and ok["principal"] == "tok"
        # the plugin's principal works with the plugin's grants (read on every service)
        raw = await Raw.open(url, client_ctx(pki))
        assert (await raw.ask("Authenticate", tenant="a", credentials={"token": token}))["type"] == "Authenticated"
        assert (await raw.ask("ReadVariable", service="s", name="x"))["value"] == 3
        assert (await raw.ask("WriteVariable", service="s", name="x", value=4))["code"] == "PERMISSION_DENIED"
        await raw.aclose()
        # a Reject ends the attempt: the valid API key behind it is never tried
        bad = await _login(url, pki, credentials={"token": "tok:00"}, api_key=key)
        assert bad["code"] == "UNAUTHORIZED" and "bad token" in bad["message"]
        # a token for another tenant does not verify here
        other = await _login(url, pki, credentials={"token": make_token(SECRET, "b", "tok")})
        assert other["code"] == "UNAUTHORIZED"
    # the other order: api_key first accepts a valid key before the token is looked at
    config = tls_config(tmp_path / "data2", pki, authenticators=["api_key", "example_token"])
    async with running(config) as (server, url):
        server.store.create_tenant("a")
        key, _ = server.store.create_api_key("a", "keyuser")
        both = await _login(url, pki, credentials={"token": make_token(SECRET, "a", "tok")}, api_key=key)
        assert both["principal"] == "keyuser"


async def test_disabled_authenticator_plugin_is_off(tmp_path, pki):
    config = tls_config(tmp_path / "data", pki, authenticators=["example_token", "api_key"])
    config.plugins.disable = ["example_auth"]
    with pytest.raises(PluginError, match="example_token"):
        async with running(config):
            pass
    config.server.authenticators = ["api_key"]
    async with running(config) as (server, url):
        server.store.create_tenant("a")
        reply = await _login(url, pki, credentials={"token": make_token(SECRET, "a", "tok")})
        assert reply["code"] == "UNAUTHORIZED"
