"""WSS transport plugin over real TLS sockets (trustme certificates), asyncio and trio.

The handler here is a plain echo, so these tests depend on the transport contract
only, not on the server core (that end-to-end test lives in test_wss_server.py).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import textwrap

import anyio
import pytest
import trustme
from commy_transport_wss import _frames
from commy_transport_wss._frames import Decoder, ProtocolViolation, encode_frame, encode_message

from commy.errors import ConfigError, ConnectionLost
from commy.plugins import get_plugins
from commy.transports.base import ClientOptions, ServerOptions

pytestmark = pytest.mark.anyio

CLIENTS = ["wss", "wss-lean"]


# -- certificates -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "localhost", "::1")


def server_context(server_cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(ctx)
    return ctx


def client_context(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


# -- helpers ------------------------------------------------------------------------


def transport(name: str):
    return get_plugins().transports.get(name)()


async def echo(conn) -> None:
    while True:
        await conn.send(await conn.receive())


@contextlib.asynccontextmanager
async def running(handler, options: ServerOptions, name: str = "wss"):
    async with anyio.create_task_group() as tg:
        url = await tg.start(lambda task_status: transport(name).serve(handler, options, task_status=task_status))
        yield url
        tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def connected(client: str, url: str, options: ClientOptions):
    conn = await transport(client).connect(url, options)
    try:
        yield conn
    finally:
        await conn.aclose()


# -- the frame codec ----------------------------------------------------------------


def test_mask_round_trip() -> None:
    key = b"\x01\x02\x03\xfe"
    for n in (0, 1, 3, 4, 5, 125, 1000, 70000):
        data = os.urandom(n)
        masked = _frames.mask(data, key)
        assert len(masked) == n
        assert _frames.mask(masked, key) == data
        assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_masking_keys_are_random_and_not_shared_with_a_forked_child() -> None:
    keys = [_frames._mask_keys.next() for _ in range(3000)]  # spans several batches
    assert all(len(k) == 4 for k in keys)
    assert len(set(keys)) > 2990  # 4 random bytes: a handful of collisions at most
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child draws its own keys, not the parent's next ones
        os.write(write, b"".join(_frames._mask_keys.next() for _ in range(8)))
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    os.close(write)
    parent = b"".join(_frames._mask_keys.next() for _ in range(8))
    assert len(child) == 32 and child != parent


def test_decoder_fragments_control_frames_and_chunked_feeding() -> None:
    dec = Decoder(expect_masked=True, max_message_size=1 << 20)
    text = ("héllo " * 5000).encode()
    wire = encode_message(text, masked=True, fragment_size=1000)
    # a ping between the first and second fragment: control frames may interleave
    first_len = 2 + 2 + 4 + 1000
    wire = wire[:first_len] + encode_frame(_frames.OP_PING, b"p", masked=True) + wire[first_len:]
    events = []
    for i in range(0, len(wire), 777):  # arbitrary split points across headers
        dec.feed(wire[i : i + 777])
        while (ev := dec.next_event()) is not None:
            events.append(ev)
    assert events == [(_frames.OP_PING, b"p"), (_frames.OP_TEXT, text)]


def test_decoder_rejects_bad_frames() -> None:
    dec = Decoder(expect_masked=True, max_message_size=100)
    dec.feed(encode_frame(_frames.OP_TEXT, b"x", masked=False))
    with pytest.raises(ProtocolViolation) as info:
        dec.next_event()
    assert info.value.code == _frames.CLOSE_PROTOCOL_ERROR
    dec = Decoder(expect_masked=False, max_message_size=100)
    # only the header of a huge frame: refused before its payload is buffered
    dec.feed(encode_frame(_frames.OP_TEXT, b"x" * 1000, masked=False)[:10])
    with pytest.raises(ProtocolViolation) as info:
        dec.next_event()
    assert info.value.code == _frames.CLOSE_TOO_BIG
    dec = Decoder(expect_masked=False, max_message_size=100)
    dec.feed(encode_frame(_frames.OP_CONT, b"x", masked=False))
    with pytest.raises(ProtocolViolation):
        dec.next_event()


# -- over real TLS sockets ----------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
async def test_echo_round_trip(client, ca, server_cert) -> None:
    async with running(echo, ServerOptions(ssl_context=server_context(server_cert))) as url:
        assert url.startswith("wss://127.0.0.1:") and url.endswith("/commy")
        async with connected(client, url, ClientOptions(ssl_context=client_context(ca))) as conn:
            for text in ("hello", "", "ünïcödé ✓", "x" * 70000):
                await conn.send(text)
                assert await conn.receive() == text
            assert conn.peer.tls and conn.peer.same_host


@pytest.mark.parametrize("client", CLIENTS)
async def test_large_fragmented_message_both_ways(client, ca, server_cert) -> None:
    big = "0123456789abcdef" * (1 << 16)  # 1 MiB
    # Both ends split messages into 64 KiB frames (httpx-ws sends one frame; the server
    # still fragments its echo), so reassembly is exercised in both directions.
    sopts = ServerOptions(
        ssl_context=server_context(server_cert), max_message_size=4 << 20,
        extra={"fragment_size": 1 << 16},
    )
    copts = ClientOptions(
        ssl_context=client_context(ca), max_message_size=4 << 20, extra={"fragment_size": 1 << 16}
    )
    async with running(echo, sopts) as url, connected(client, url, copts) as conn:
        for _ in range(2):
            await conn.send(big)
            assert await conn.receive() == big


@pytest.mark.parametrize("client", CLIENTS)
async def test_message_over_limit_closes_with_1009(client, ca, server_cert) -> None:
    sopts = ServerOptions(ssl_context=server_context(server_cert), max_message_size=1000)
    async with running(echo, sopts) as url:
        async with connected(client, url, ClientOptions(ssl_context=client_context(ca))) as conn:
            await conn.send("a" * 1000)  # at the limit: fine
            assert await conn.receive() == "a" * 1000
            await conn.send("b" * 1001)
            with pytest.raises(ConnectionLost) as info:
                await conn.receive()
            assert info.value.details.get("close_code") == 1009
        # the listener survives
        async with connected(client, url, ClientOptions(ssl_context=client_context(ca))) as conn:
            await conn.send("still here")
            assert await conn.receive() == "still here"


async def test_tls_is_required_unless_opted_out() -> None:
    with pytest.raises(ConfigError, match="TLS"):
        await transport("wss").serve(echo, ServerOptions())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
async def test_plain_ws_refuses_non_loopback(host) -> None:
    with pytest.raises(ConfigError, match="non-loopback"):
        await transport("wss").serve(echo, ServerOptions(host=host, allow_insecure=True))


@pytest.mark.parametrize("client", CLIENTS)
async def test_plain_ws_on_loopback_with_opt_in(client) -> None:
    async with running(echo, ServerOptions(allow_insecure=True)) as url:
        assert url.startswith("ws://127.0.0.1:")
        async with connected(client, url, ClientOptions()) as conn:
            assert not conn.peer.tls
            await conn.send("plain")
            assert await conn.receive() == "plain"


@pytest.mark.parametrize("client", CLIENTS)
async def test_mtls_server_sees_client_certificate(client, ca, server_cert) -> None:
    client_ca = trustme.CA()
    alice = client_ca.issue_cert("alice@example.org", common_name="alice")
    seen = []

    async def handler(conn):
        seen.append(conn.peer)
        await echo(conn)

    sopts = ServerOptions(ssl_context=server_context(server_cert, client_ca))
    async with running(handler, sopts) as url:
        async with connected(client, url, ClientOptions(ssl_context=client_context(ca, alice))) as conn:
            await conn.send("who am i")
            assert await conn.receive() == "who am i"
    (peer,) = seen
    subject = dict(pair for rdn in peer.peer_certificate["subject"] for pair in rdn)
    assert subject["commonName"] == "alice"
    assert peer.peer_certificate_der and peer.peer_certificate_der[0] == 0x30  # DER SEQUENCE
    assert peer.tls and peer.same_host and peer.remote_address.startswith("127.0.0.1:")
    assert peer.transport == "wss"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("who", ["no certificate", "foreign CA"])
async def test_mtls_refuses_clients_without_a_trusted_certificate(client, who, ca, server_cert) -> None:
    client_ca = trustme.CA()
    cert = trustme.CA().issue_cert("mallory", common_name="mallory") if who == "foreign CA" else None
    called = []

    async def handler(conn):
        called.append(conn)
        await echo(conn)

    sopts = ServerOptions(ssl_context=server_context(server_cert, client_ca))
    async with running(handler, sopts) as url:
        # TLS 1.3 finishes the client's handshake before the server checks its
        # certificate, so the refusal shows during the upgrade, still inside connect().
        with pytest.raises(ConnectionLost):
            conn = await transport(client).connect(url, ClientOptions(ssl_context=client_context(ca, cert)))
            try:
                await conn.send("let me in")
                await conn.receive()
            finally:
                await conn.aclose()
    assert called == []


@pytest.mark.parametrize("client", CLIENTS)
async def test_client_refuses_untrusted_server(client, server_cert) -> None:
    async with running(echo, ServerOptions(ssl_context=server_context(server_cert))) as url:
        with pytest.raises(ConnectionLost):
            await transport(client).connect(url, ClientOptions(ssl_context=ssl.create_default_context()))


@pytest.mark.parametrize("client", CLIENTS)
async def test_100_concurrent_messages_on_one_connection(client, ca, server_cert) -> None:
    async with running(echo, ServerOptions(ssl_context=server_context(server_cert))) as url:
        async with connected(client, url, ClientOptions(ssl_context=client_context(ca))) as conn:
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(conn.send, f"message {i} " + "x" * i)
            got = {await conn.receive() for _ in range(100)}
            assert got == {f"message {i} " + "x" * i for i in range(100)}


async def test_handlers_run_concurrently(ca, server_cert) -> None:
    # Client A's handler blocks until client B has been served: only works if each
    # connection has its own task.
    b_served = anyio.Event()

    async def handler(conn):
        msg = await conn.receive()
        if msg == "A":
            await b_served.wait()
        else:
            b_served.set()
        await conn.send(msg)

    async with running(handler, ServerOptions(ssl_context=server_context(server_cert))) as url:
        opts = ClientOptions(ssl_context=client_context(ca))
        async with connected("wss-lean", url, opts) as a, connected("wss-lean", url, opts) as b:
            await a.send("A")
            await b.send("B")
            with anyio.fail_after(5):
                assert await b.receive() == "B"
                assert await a.receive() == "A"


async def test_broken_connections_do_not_kill_the_listener(ca, server_cert) -> None:
    async def handler(conn):
        msg = await conn.receive()
        if msg == "crash":
            raise RuntimeError("handler bug")
        await conn.send(msg)

    async with running(handler, ServerOptions(ssl_context=server_context(server_cert))) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        # garbage instead of TLS
        async with await anyio.connect_tcp("127.0.0.1", port) as raw:
            await raw.send(b"GET / HTTP/1.1\r\n\r\n")
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await raw.receive()
        # TLS, then garbage instead of the HTTP upgrade
        async with await anyio.connect_tcp(
            "127.0.0.1", port, ssl_context=client_context(ca), tls_standard_compatible=False
        ) as tls:
            await tls.send(b"NOT HTTP\r\n\r\n")
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await tls.receive()
        # a handler that raises, then a client that vanishes mid-message
        opts = ClientOptions(ssl_context=client_context(ca))
        async with connected("wss-lean", url, opts) as conn:
            await conn.send("crash")
            with pytest.raises(ConnectionLost):
                await conn.receive()
        conn = await transport("wss-lean").connect(url, opts)
        await conn._stream.send(encode_frame(_frames.OP_TEXT, b"half", masked=True)[:5])
        await conn._stream.aclose()
        async with connected("wss", url, opts) as conn:
            await conn.send("alive")
            assert await conn.receive() == "alive"


async def test_server_answers_pings(ca, server_cert) -> None:
    async with running(echo, ServerOptions(ssl_context=server_context(server_cert))) as url:
        async with connected("wss", url, ClientOptions(ssl_context=client_context(ca))) as conn:
            with anyio.fail_after(5):
                pong = await conn._ws.ping(b"are you there")
                await pong.wait()
            await conn.send("after ping")
            assert await conn.receive() == "after ping"


async def test_lean_client_answers_pings_and_close(ca, server_cert) -> None:
    async def handler(conn):
        await conn._write(encode_frame(_frames.OP_PING, b"ping!", masked=False))
        await conn.send("first")
        # the client's pong arrives before its echo of "first"
        assert await conn.receive() == "first"
        await conn.aclose()

    async with running(handler, ServerOptions(ssl_context=server_context(server_cert))) as url:
        async with connected("wss-lean", url, ClientOptions(ssl_context=client_context(ca))) as conn:
            assert await conn.receive() == "first"
            await conn.send("first")
            with pytest.raises(ConnectionLost) as info:
                await conn.receive()
            assert info.value.details.get("close_code") == 1000
            with pytest.raises(ConnectionLost):
                await conn.send("too late")


# -- a server in another process ----------------------------------------------------

SERVER_SCRIPT = textwrap.dedent(
    """
    import ssl, sys
    import anyio
    from commy.plugins import get_plugins
    from commy.transports.base import ServerOptions

    async def echo(conn):
        while True:
            await conn.send(await conn.receive())

    async def main():
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sys.argv[1])
        t = get_plugins().transports.get("wss")()
        async with anyio.create_task_group() as tg:
            url = await tg.start(lambda task_status: t.serve(echo, ServerOptions(ssl_context=ctx), task_status=task_status))
            print(url, flush=True)
            await anyio.sleep_forever()

    try:
        import uvloop  # noqa: F401
        opts = {"use_uvloop": True}
    except ImportError:
        opts = {}
    anyio.run(main, backend_options=opts)
    """
)


@pytest.fixture
def echo_server_process(server_cert, tmp_path):
    pem = tmp_path / "server.pem"
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(pem)], stdout=subprocess.PIPE, text=True
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("wss://"), f"server did not start (exit {proc.poll()})"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("client", CLIENTS)
async def test_server_in_another_process(client, ca, echo_server_process) -> None:
    async with connected(client, echo_server_process, ClientOptions(ssl_context=client_context(ca))) as conn:
        for i in range(50):
            await conn.send(f"ping {i}")
            assert await conn.receive() == f"ping {i}"
        big = "z" * (512 << 10)
        await conn.send(big)
        assert await conn.receive() == big


@pytest.mark.parametrize("client", CLIENTS)
async def test_connection_may_close_in_other_scopes_and_tasks(client, ca, server_cert) -> None:
    # commy.connect closes its connection inside a shielded scope, after its own task
    # group: a transport that ties the connection to a cancel-scope nesting breaks there.
    opts = ClientOptions(ssl_context=client_context(ca))
    async with running(echo, ServerOptions(ssl_context=server_context(server_cert))) as url:
        conn = await transport(client).connect(url, opts)
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.send, "in a task group")
        assert await conn.receive() == "in a task group"
        with anyio.CancelScope(shield=True):
            await conn.aclose()
        await anyio.sleep(0)  # this task must not have inherited a cancelled scope

        opened = []

        async def opener(task_status=anyio.TASK_STATUS_IGNORED):
            opened.append(await transport(client).connect(url, opts))
            task_status.started()

        async with anyio.create_task_group() as tg:
            await tg.start(opener)
        (other,) = opened  # opened by a task that has ended
        await other.send("opened elsewhere")
        assert await other.receive() == "opened elsewhere"
        await other.aclose()
        with pytest.raises(ConnectionLost):
            await other.send("closed")
