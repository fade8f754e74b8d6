"""The blocking client's direct requests (`commy.direct`): a blocking connection of its
own, from the calling thread to the socket; against a real WSS server in another process,
plus the request loop against a scripted connection."""

from __future__ import annotations

import threading

import pytest
from procserver import server_process

import commy
from commy import protocol
from commy.config import ClientConfig, Config
from commy.direct import DirectRequests, run_without_loop
from commy.errors import ConnectionLost, InternalError, PermissionDenied, Timeout, VariableNotFound


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with server_process(tmp_path_factory.mktemp("sync-direct")) as info:
        with _connect(info, "direct") as c:
            c.create_tenant("direct")
            c.create_service("svc")
            c.allocate_variable("svc", "n", "i64", initial=0)
            c.allocate_variable("svc", "label", "str[16]", initial="")
        yield info


def _connect(server, tenant="direct", **client):
    config = Config(client=ClientConfig(timeout=20.0, **client))
    return commy.connect_sync(
        server.url, tenant=tenant, api_key=server.admin_key, ssl_context=server.ssl_context(),
        config=config, locality="remote",
    )


def test_requests_use_their_own_blocking_connection(server) -> None:
    with _connect(server) as c:
        assert c._direct is not None
        c.write_variable("svc", "n", 5)
        assert c._direct._conn is not None  # the request went over the direct connection
        assert c.read_variable("svc", "n") == 5
        with pytest.raises(VariableNotFound):
            c.read_variable("svc", "missing")
        assert c.read_variable("svc", "n") == 5  # an error leaves the connection usable
        assert len(c.read_service("svc")) > 0  # a chunked snapshot is reassembled
    assert c._direct._conn is None


def test_switched_off_by_config(server) -> None:
    with _connect(server, blocking_requests=False) as c:
        assert c._direct is None
        c.write_variable("svc", "n", 6)
        assert c.read_variable("svc", "n") == 6


def test_polling_for_answers_gives_the_same_answers(server) -> None:
    """``client.spin_us``: the blocking connection polls before it sleeps; the answers,
    errors and pairing of replies to requests are unchanged."""
    with _connect(server, spin_us=300) as c:
        conn = c._direct._connection()
        assert conn._spin == pytest.approx(300e-6)
        for i in range(200):
            c.write_variable("svc", "n", i)
            assert c.read_variable("svc", "n") == i
        with pytest.raises(VariableNotFound):
            c.read_variable("svc", "missing")
        assert len(c.read_service("svc")) > 0


def test_a_thread_reads_its_own_mirror_writes(server) -> None:
    """Mirror writes travel on the event loop's connection, direct requests on another:
    a direct request first waits until the server applied this thread's mirror writes."""
    with _connect(server) as c:
        vf = c.get_virtual_service_file("svc")
        assert not vf.is_local
        for i in range(1, 201):
            vf.write("n", i)
            assert c.read_variable("svc", "n") == i
        vf.close()


def test_concurrent_threads_each_get_their_own_answer(server) -> None:
    with _connect(server) as c:
        c.allocate_variable("svc", "t0", "i64", initial=0)
        c.allocate_variable("svc", "t1", "i64", initial=0)
        c.allocate_variable("svc", "t2", "i64", initial=0)
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for i in range(150):
                    c.write_variable("svc", f"t{k}", i * 10 + k)
                    assert c.read_variable("svc", f"t{k}") == i * 10 + k
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for k in range(3):
            c.deallocate_variable("svc", f"t{k}")


def test_a_lost_connection_raises_once_then_reconnects(server) -> None:
    with _connect(server) as c:
        c.write_variable("svc", "n", 1)
        c._direct._conn._sock.close()  # the network drops the connection under us
        with pytest.raises(ConnectionLost, match="may or may not have been applied"):
            c.read_variable("svc", "n")
        assert c.read_variable("svc", "n") == 1  # a new connection, authenticated again


def test_the_direct_connection_has_the_clients_identity(server) -> None:
    with _connect(server) as admin:
        key = admin.request(
            "CreateApiKey", tenant="direct", principal="reader", grants={"svc": "read"}, description=""
        )["key"]
    config = Config(client=ClientConfig(timeout=20.0))
    with commy.connect_sync(
        server.url, tenant="direct", api_key=key, ssl_context=server.ssl_context(), config=config
    ) as c:
        assert c.principal == "reader"
        assert c.read_variable("svc", "n") is not None
        with pytest.raises(PermissionDenied):
            c.write_variable("svc", "n", 3)
        assert c._direct._conn is not None


# -- the request loop against a scripted connection -----------------------------------


class ScriptedConnection:
    """Answers each request with what ``script(request)`` returns (a list of replies)."""

    def __init__(self, script) -> None:
        self.script = script
        self.inbox: list[str] = []
        self.closed = False

    def send(self, message: str) -> None:
        request = protocol.decode(message)
        self.inbox += [protocol.encode(r) for r in self.script(request)]

    def receive(self, timeout=None) -> str:
        if not self.inbox:
            raise Timeout("nothing came")
        return self.inbox.pop(0)

    def close(self) -> None:
        self.closed = True


def _direct(script) -> tuple[DirectRequests, list[ScriptedConnection]]:
    made: list[ScriptedConnection] = []

    def connect():
        made.append(ScriptedConnection(script))
        return made[-1]

    return DirectRequests(connect, tenant="t", auth_fields={"tenant": "t", "api_key": "k"}, timeout=1.0), made


def test_stray_answers_are_skipped_and_snapshots_joined() -> None:
    def script(req):
        mid = req["id"]
        if req["type"] == "Authenticate":
            return [{"type": "Authenticated", "id": mid, "principal": "p", "tenant": "t", "roles": []}]
        return [
            {"type": "Heartbeat", "id": mid + 1000},  # not ours: dropped
            {"type": "ServiceSnapshot", "id": mid, "tenant": "t", "service": "s", "chunk": 1, "chunks": 2,
             "size": 6, "data": protocol.b64encode(b"def")},
            {"type": "ServiceSnapshot", "id": mid, "tenant": "t", "service": "s", "chunk": 0, "chunks": 2,
             "size": 6, "data": protocol.b64encode(b"abc")},
        ]

    direct, _made = _direct(script)
    assert direct.call("read_service", "s") == b"abcdef"


def test_a_timeout_drops_the_connection() -> None:
    def script(req):
        if req["type"] == "Authenticate":
            return [{"type": "Authenticated", "id": req["id"], "principal": "p", "tenant": "t", "roles": []}]
        return []  # never answers

    direct, made = _direct(script)
    with pytest.raises(Timeout):
        direct.call("heartbeat")
    assert direct._conn is None
    with pytest.raises(Timeout):
        direct.call("heartbeat")
    assert len(made) == 2  # a fresh connection for the next call


def test_a_coroutine_that_would_suspend_is_refused() -> None:
    import types

    @types.coroutine
    def suspend():
        yield "the event loop"

    async def needs_a_loop():
        await suspend()

    with pytest.raises(InternalError):
        run_without_loop(needs_a_loop())


@pytest.mark.anyio
async def test_flush_waits_for_queued_mirror_writes(server) -> None:
    """`Client.flush()` (async API) returns once the server applied the mirror's writes."""
    config = Config(client=ClientConfig(timeout=20.0))
    async with commy.connect(
        server.url, tenant="direct", api_key=server.admin_key, ssl_context=server.ssl_context(),
        config=config, locality="remote",
    ) as c:
        vf = await c.get_virtual_service_file("svc")
        for i in range(50):
            vf.write("label", f"v{i}")
        await c.flush()
        assert await c.read_variable("svc", "label") == "v49"
        assert c.write_errors == []
        vf.close()
