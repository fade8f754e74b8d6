"""mTLS over a real TLS socket: certificates from `commy certs`, the `mtls` authenticator."""

from __future__ import annotations

import ssl
import stat

import anyio
import pytest
from securitykit import client_ctx, connect, make_pki, running, tls_config

from commy import certs, cli
from commy.config import MtlsConfig
from commy.errors import CommyError, ConfigError, PermissionDenied, Unauthorized

pytestmark = pytest.mark.anyio

#: what a refused TLS handshake may surface as on the client side (TLS 1.3 reports a
#: client-certificate failure only on the first read after the handshake)
REFUSED = (CommyError, ssl.SSLError, OSError, anyio.BrokenResourceError, anyio.EndOfStream)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("mtls"))


def _setup(server) -> str:
    store = server.store
    store.create_tenant("a")
    store.create_tenant("b")
    store.set_grant("a", "alice", "s*", "read")
    key, _ = store.create_api_key("a", "boss", roles=["tenant-admin"])
    return key


async def _refused(url, config, ctx, tenant: str = "a") -> BaseException:
    with pytest.raises(REFUSED) as info:
        with anyio.fail_after(10):
            async with connect(url, config, tenant, ctx=ctx) as c:
                await c.heartbeat()
    return info.value


async def test_mtls_valid_client_cert_is_accepted_and_mapped(tmp_path, pki):
    config = tls_config(tmp_path / "data", pki)
    async with running(config) as (server, url):
        key = _setup(server)
        async with connect(url, config, "a", key, ctx=client_ctx(pki)) as boss:
            await boss.create_service("s1")
            await boss.allocate_variable("s1", "x", "i64", initial=5)
        async with connect(url, config, "a", ctx=client_ctx(pki, pki.alice)) as alice:
            assert alice.principal == "alice"
            assert await alice.read_variable("s1", "x") == 5
            with pytest.raises(PermissionDenied):
                await alice.write_variable("s1", "x", 6)
            # the session knows which certificate proved it
            (session,) = [s for s in server._sessions.values() if s.principal and s.principal.name == "alice"]
            assert session.principal.credential.startswith("mtls:")
            assert session.conn.peer.peer_certificate is not None


async def test_mtls_foreign_ca_expired_and_missing_certs_are_refused(tmp_path, pki):
    config = tls_config(tmp_path / "data", pki)
    async with running(config) as (server, url):
        _setup(server)
        await _refused(url, config, client_ctx(pki, pki.foreign))  # chain does not verify
        await _refused(url, config, client_ctx(pki, pki.expired))  # expired yesterday
        # no certificate: the handshake is allowed (API-key clients), authentication is not
        with pytest.raises(Unauthorized):
            async with connect(url, config, "a", ctx=client_ctx(pki)):
                pass
        # a certificate of tenant a does not open tenant b
        with pytest.raises(Unauthorized, match="belongs to tenant 'a'"):
            async with connect(url, config, "b", ctx=client_ctx(pki, pki.alice)):
                pass
        # the server is unharmed
        async with connect(url, config, "a", ctx=client_ctx(pki, pki.alice)) as alice:
            assert alice.principal == "alice"


async def test_mtls_required_refuses_the_handshake_without_a_cert(tmp_path, pki):
    config = tls_config(tmp_path / "data", pki, client_cert_required=True)
    async with running(config) as (server, url):
        key = _setup(server)
        await _refused(url, config, client_ctx(pki))  # not even an API key gets in
        with pytest.raises(REFUSED):
            async with connect(url, config, "a", key, ctx=client_ctx(pki)):
                pass
        async with connect(url, config, "a", ctx=client_ctx(pki, pki.alice)) as alice:
            assert alice.principal == "alice"


async def test_mtls_rules_map_cn_and_unknown_tenants_are_refused(tmp_path, pki):
    rules = MtlsConfig(rules=["cn:bob => a/robert", "uri:commy://{tenant}/{principal}"])
    config = tls_config(tmp_path / "data", pki, mtls=rules)
    ghost = certs.issue_client_cert(pki.root, "casper", "ghost", stem="client-ghost")
    async with running(config) as (server, url):
        _setup(server)
        server.store.set_grant("a", "robert", "*", "write")
        async with connect(url, config, "a", ctx=client_ctx(pki, pki.bob_cn)) as bob:
            assert bob.principal == "robert"
        # a valid certificate naming a tenant that does not exist
        with pytest.raises(Unauthorized, match="unknown tenant"):
            async with connect(url, config, "ghost", ctx=client_ctx(pki, ghost)):
                pass


def test_mtls_bad_rules_are_config_errors():
    from commy.auth.mtls import parse_rule

    for bad in ("cn", "subject:{principal}", "cn:{principal}", "cn:x => nobody", "cn:{principal} => {tenant}/{principal}"):
        with pytest.raises(ConfigError):
            parse_rule(bad)
    rule = parse_rule("cn:{principal}@{tenant}")
    assert rule.apply("alice@acme") == ("acme", "alice")
    assert rule.apply("alice@ac/me") is None
    assert parse_rule("dns:*.example.com => acme/edge").apply("n1.example.com") == ("acme", "edge")


async def test_mtls_dev_certificate_is_generated_into_the_data_dir(tmp_path, pki):
    config = tls_config(tmp_path / "data", pki, cert_file=None, key_file=None, client_ca_file=None,
                        authenticators=["api_key"])
    async with running(config) as (server, url):
        key = server.create_admin_key()
        tls_dir = tmp_path / "data" / "tls"
        assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((tls_dir / "server-key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE((tls_dir / "ca-key.pem").stat().st_mode) == 0o600
        ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
        async with connect(url, config, "a", key, ctx=ctx) as c:
            await c.create_tenant("a")
            assert await c.list_tenants() == ["a"]


def test_mtls_certs_command_makes_a_working_set(tmp_path, capsys):
    d = tmp_path / "certs"
    assert cli.main(["certs", "init", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "client_ca_file" in out and 'authenticators = ["mtls", "api_key"]' in out
    assert cli.main(["certs", "client", "alice", "--tenant", "acme", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "client-alice.pem" in out and "commy://acme/alice" in out
    assert cli.main(["certs", "init", "--dir", str(d)]) == 1  # no silent CA replacement
    for name in ("ca-key.pem", "server-key.pem", "client-alice-key.pem"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "client-alice.pem", d / "client-alice-key.pem")  # a valid pair
