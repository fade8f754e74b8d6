"""Hostile input against a live server over TLS.

`commy serve` runs in a subprocess (TLS from its config file). Worker-thread clients speak
WebSocket by hand over blocking TLS sockets and send hypothesis-generated frames:
malformed, truncated, oversized and wrongly typed JSON, bad UTF-8, raw bytes, deep
nesting, huge numbers, broken WebSocket framing — at least `MIN_FRAMES` in all, many per
write. Meanwhile two well-behaved clients write and receive pushes on their own tenant
and must see every single update. The server must never crash, never log a traceback,
answer only with valid protocol messages and typed errors (never INTERNAL_ERROR), and
close a connection only with a clear WebSocket close code.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from securitykit import make_pki

import commy
from commy import protocol
from commy.config import ClientConfig, Config
from commy.server.store import Store

MIN_FRAMES = 10_000
BATCHES = 70
#: each generated text frame also goes out truncated at this many points (cheap variety:
#: generating a frame costs hypothesis ~4 ms, sending one costs the server ~0.1 ms)
TRUNCATIONS = 3
MAX_MESSAGE = 64 * 1024
CHUNK = 256 * 1024
#: close codes a hostile connection may get: protocol error, unsupported data (binary),
#: invalid UTF-8, too big, normal (e.g. after too many failed authentications)
CLEAR_CODES = {1000, 1002, 1003, 1007, 1009}


@pytest.fixture
def anyio_backend():
    return "asyncio"


# ---------------------------------------------------------------- the server process


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    pki = make_pki(root)
    data = root / "data"
    store = Store(data)
    store.create_tenant("good")
    store.create_tenant("h")
    good_key, _ = store.create_api_key("good", "owner", roles=["tenant-admin"])
    hostile_key, _ = store.create_api_key("h", "mallory", roles=["tenant-admin"])
    store.close()
    cfg = root / "commy.toml"
    cfg.write_text(
        f"""data_dir = "{data}"
[kernel]
name = "python"
[server]
host = "127.0.0.1"
port = 0
tls = true
cert_file = "{pki.server.cert_file}"
key_file = "{pki.server.key_file}"
client_ca_file = "{pki.ca}"
authenticators = ["mtls", "api_key"]
max_message_size = {MAX_MESSAGE}
[limits]
max_services_per_tenant = 50
max_variables_per_service = 64
max_service_size = 1048576
""",
        encoding="utf-8",
    )
    log = (root / "server.log").open("w+")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMY_")}
    env["COMMY_LOG_LEVEL"] = os.environ.get("HOSTILE_LOG_LEVEL", "ERROR")
    proc = subprocess.Popen(
        [sys.executable, "-m", "commy.cli", "--config", str(cfg), "serve"],
        stderr=subprocess.PIPE, stdout=log, text=True, env=env,
    )
    try:
        url, lines = None, []
        for _ in range(50):
            line = proc.stderr.readline()
            lines.append(line)
            m = re.search(r"listening on (wss://\S+)", line)
            if m:
                url = m.group(1)
                break
            if not line:
                break
        assert url, f"server did not start: {''.join(lines)}"

        # keep draining stderr into the log file (a full pipe would block the server)
        def pump():
            for line in proc.stderr:
                log.write(line)
                log.flush()

        import threading

        threading.Thread(target=pump, daemon=True).start()
        yield {"url": url, "pki": pki, "good": good_key, "hostile": hostile_key, "proc": proc,
               "log": root / "server.log"}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


# ---------------------------------------------------------------- a raw WebSocket client


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class WsClient:
    def __init__(self, url: str, ctx: ssl.SSLContext) -> None:
        m = re.match(r"wss://([^:/]+):(\d+)(/\S*)", url)
        assert m
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        raw = socket.create_connection((host, port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        self.last = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "server closed during the upgrade"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.ids = 1 << 40

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (ssl.SSLError, OSError):
            pass  # the server closed mid-write (e.g. a frame over the limit): receive() tells why

    def send_text(self, text: str) -> None:
        self.sock.sendall(ws_frame(1, text.encode()))

    def _read(self) -> None:
        try:
            chunk = self.sock.recv(1 << 18)
        except (ssl.SSLError, OSError) as exc:
            self.why = repr(exc)
            chunk = b""
        if not chunk:
            raise Closed(None)
        self.buf += chunk

    def receive(self) -> str:
        """The next text message (unmasked server frames); Closed at a close frame / EOF."""
        while True:
            while len(self.buf) < 2:
                self._read()
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                while len(self.buf) < 4:
                    self._read()
                n, off = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                while len(self.buf) < 10:
                    self._read()
                n, off = int.from_bytes(self.buf[2:10], "big"), 10
            assert not b1 & 0x80, ("server frames are never masked", self.buf[:80], self.last)
            while len(self.buf) < off + n:
                self._read()
            payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
            self.last = payload[:200]
            opcode = b0 & 0x0F
            if opcode == 8:
                raise Closed(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None)
            if opcode == 1:
                assert b0 & 0x80, "the server sends whole messages here"
                return payload.decode("utf-8")
            # ping/pong: nothing to do

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- frame strategies

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
NAMES = ["a", "h", "s", "x", "good", "g", "counter", "", "..", "../etc", "a/b", "x" * 70, "\x00", "é", "*", "s*"]
TYPES = ["i64", "u8", "f64", "bool", "str[16]", "bytes[4]", "i32[3]", "zz", "str[99999999]", "bytes[-1]",
         "i64[0]", "f64[100000]", ""]


@st.composite
def requestish(draw) -> dict:
    """Something shaped like a request, each field right, wrongly typed, or missing."""
    kind = draw(st.sampled_from(sorted(protocol.REQUESTS)) | st.text(max_size=10))
    msg: dict = {}
    if draw(st.integers(0, 9)):
        msg["v"] = draw(st.sampled_from([1, 1, 1, 0, 2, "1", None, 1.0, 2**64, -1]))
    if draw(st.integers(0, 9)):
        msg["id"] = draw(st.integers(0, 2**53 - 1) | st.integers(min_value=-(2**70), max_value=2**70)
                         | st.floats() | st.text(max_size=4) | st.none())
    msg["type"] = kind
    for field in protocol.REQUESTS.get(kind, {}):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            continue
        if choice == 1:
            msg[field] = draw(json_values)
        elif field == "var_type":
            msg[field] = draw(st.sampled_from(TYPES))
        elif field in ("value", "initial"):
            msg[field] = draw(json_values)
        elif field == "names":
            msg[field] = draw(st.lists(st.sampled_from(NAMES), max_size=3))
        elif field in ("ephemeral", "persistent", "server_wide"):
            msg[field] = draw(st.booleans())
        else:
            msg[field] = draw(st.sampled_from(NAMES))
    if draw(st.integers(0, 7)) == 0:
        msg[draw(st.text(max_size=6))] = draw(json_values)
    return msg


def _dumps(msg) -> str:
    return json.dumps(msg)  # the json module writes what orjson refuses (2**80, NaN)


# kinds of frame: ("text", str) keeps the connection; ("closing", bytes, expect_eof)
text_frames = st.one_of(
    requestish().map(_dumps),
    json_values.map(_dumps),
    st.tuples(requestish().map(_dumps), st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
    st.text(max_size=40),
    st.integers(1, 5000).map(lambda d: '{"v":1,"id":7,"type":"Heartbeat","x":' + "[" * d + "]" * d + "}"),
    st.integers(1, 5000).map(lambda d: "{\"a\":" * d + "1" + "}" * d),
    st.sampled_from(["1e999", '{"v":1e999}', '{"v":1,"id":1e400,"type":"Heartbeat"}', "9" * 5000,
                     '{"v":1,"id":-0,"type":"Heartbeat"}', "\ufeff{}", '{"v":1,"id":1,"type":"Heartbeat"}' * 3,
                     '{"v":1,"id":18446744073709551616,"type":"Heartbeat"}', "null", "[]", '""']),
    st.integers(MAX_MESSAGE // 2, MAX_MESSAGE - 128).map(  # just under the limit
        lambda n: '{"v":1,"id":9,"type":"WriteVariable","service":"s","name":"x","value":"' + "A" * n + '"}'),
)


def _closing(kind: str, data: bytes) -> bytes:
    if kind == "utf8":
        return ws_frame(1, data + b"\xff\xfe\xc0")
    if kind == "binary":
        return ws_frame(2, data)
    if kind == "oversized":
        return ws_frame(1, b"[" * (MAX_MESSAGE + 1 + len(data)))
    if kind == "unmasked":
        return ws_frame(1, b'{"v":1}', masked=False)
    if kind == "opcode":
        return ws_frame(3 + len(data) % 5, data)
    if kind == "rsv":
        return ws_frame(1, b"{}", rsv=1 + len(data) % 7)
    if kind == "fragmented-ping":
        return ws_frame(9, data, fin=False)
    if kind == "garbage":
        return data + os.urandom(16)
    if kind == "truncated":
        return ws_frame(1, b'{"v":1,"id":1,"type":"Heartbeat"}' + data)[:-3]
    raise AssertionError(kind)


CLOSING_KINDS = ["utf8", "binary", "oversized", "unmasked", "opcode", "rsv", "fragmented-ping", "garbage",
                 "truncated"]
closing_frames = st.tuples(st.sampled_from(CLOSING_KINDS), st.binary(max_size=64))
batches = st.tuples(
    st.booleans(),  # authenticate first (as tenant admin of the hostile tenant)
    st.lists(text_frames, min_size=40, max_size=60),
    st.none() | closing_frames,
)


# ---------------------------------------------------------------- the hostile worker


class Hostile:
    def __init__(self, server) -> None:
        self.url = server["url"]
        self.key = server["hostile"]
        self.ctx = ssl.create_default_context(cafile=str(server["pki"].ca))
        self.client: WsClient | None = None
        self.authenticated = False
        self.frames = 0
        self.codes: dict[str, int] = {}
        self.closes: dict[int | None, int] = {}
        self.replies = 0
        self.sentinel = 0

    def _conn(self) -> WsClient:
        if self.client is None:
            self.client = WsClient(self.url, self.ctx)
            self.authenticated = False
        return self.client

    def _drop(self, code: int | None) -> None:
        self.closes[code] = self.closes.get(code, 0) + 1
        if self.client is not None:
            self.client.close()
        self.client = None

    def _check(self, text: str) -> dict:
        msg = protocol.decode(text, direction="response", max_size=1 << 30)  # a valid protocol message
        if msg["type"] == "Error":
            assert msg["code"] != "INTERNAL_ERROR", msg
            self.codes[msg["code"]] = self.codes.get(msg["code"], 0) + 1
        self.replies += 1
        return msg

    def run_batch(self, auth: bool, texts: list[str], closing) -> None:
        c = self._conn()
        try:
            if auth and not self.authenticated:
                c.send_text(protocol.encode({"type": "Authenticate", "id": 1, "tenant": "h", "api_key": self.key}))
                self.authenticated = True
            payloads = []
            for t in texts:
                data = t.encode("utf-8", "surrogatepass")
                payloads.append(data)
                rng = random.Random(data)
                for _ in range(TRUNCATIONS if len(data) > 1 else 0):
                    cut = rng.randrange(1, len(data))
                    # cut on a character boundary: a broken UTF-8 sequence would close the connection
                    payloads.append(data[:cut].decode("utf-8", "ignore").encode("utf-8", "surrogatepass"))
            # Many frames per write, then a Heartbeat as a fence, read up to it. A write stays
            # under CHUNK bytes: a client that writes megabytes without reading deadlocks
            # with a server blocked on sending it replies (TCP back-pressure both ways).
            chunk: list[bytes] = []
            size = 0
            for i, p in enumerate(payloads):
                chunk.append(ws_frame(1, p))
                size += len(p)
                if size >= CHUNK or i == len(payloads) - 1:
                    self.sentinel += 1
                    fence = (1 << 50) + self.sentinel
                    chunk.append(ws_frame(1, protocol.encode({"type": "Heartbeat", "id": fence}).encode()))
                    c.send_raw(b"".join(chunk))
                    self.frames += len(chunk) - 1
                    chunk, size = [], 0
                    while True:
                        msg = self._check(c.receive())
                        if msg.get("id") == fence:
                            break
        except Closed as closed:
            # only too many failed authentications may close it here, and with a normal close
            assert closed.code in CLEAR_CODES, (closed.code, getattr(c, "why", "EOF"))
            self._drop(closed.code)
            return
        if closing is not None:
            kind, data = closing
            c.send_raw(_closing(kind, data))
            self.frames += 1
            if kind in ("garbage", "truncated"):
                # The server may rightly wait for the rest of a frame: give it a moment to
                # object, then hang up. (No shutdown(SHUT_WR): on an SSLSocket it drops TLS.)
                c.sock.settimeout(0.2)
            try:
                while True:
                    self._check(c.receive())
            except Closed as closed:
                if kind not in ("garbage", "truncated"):
                    assert closed.code in CLEAR_CODES, (kind, closed.code)
                self._drop(closed.code)


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
async def test_hostile_frames_never_break_the_server_or_other_clients(server):
    hostile = Hostile(server)

    # every closing kind at least once, whatever the generated batches hold
    @example((False, ['{"v":1,"id":1,"type":"Heartbeat"}'], ("oversized", b"")))
    @example((True, ["{"], ("utf8", b"x")))
    @example((False, ["[]"], ("binary", b"\x00")))
    @example((False, ["1"], ("unmasked", b"")))
    @example((False, ['"'], ("opcode", b"ab")))
    @example((True, ["nul"], ("rsv", b"")))
    @example((False, ["{}"], ("fragmented-ping", b"p")))
    @example((False, ["{}"], ("garbage", b"\xff" * 20)))
    @example((False, ["{}"], ("truncated", b"")))
    @settings(max_examples=BATCHES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(batches)
    def barrage(batch) -> None:
        hostile.run_batch(*batch)

    def run_barrage() -> None:
        import time

        t0 = time.perf_counter()
        barrage()
        hostile.seconds = time.perf_counter() - t0
        # top up if hypothesis generated small batches
        while hostile.frames < MIN_FRAMES:
            barrage()

    ctx = ssl.create_default_context(cafile=str(server["pki"].ca))
    config = Config(data_dir=str(Path(server["log"]).parent / "client"), client=ClientConfig(timeout=20.0))
    kw = dict(tenant="good", api_key=server["good"], ssl_context=ctx, config=config)
    seen: list[int] = []
    written = 0
    async with commy.connect(server["url"], **kw) as writer, commy.connect(server["url"], **kw) as reader:
        await writer.create_service("g")
        await writer.allocate_variable("g", "counter", "i64")
        done = anyio.Event()

        async def hostile_thread() -> None:
            try:
                await anyio.to_thread.run_sync(run_barrage)
            finally:
                done.set()

        async with reader.subscribe("g") as updates, anyio.create_task_group() as tg:
            tg.start_soon(hostile_thread)
            it = updates.__aiter__()
            while not done.is_set() or written < 200:
                written += 1
                await writer.write_variable("g", "counter", written)
                with anyio.fail_after(10):
                    while True:
                        update = await it.__anext__()
                        if "counter" in update.values:
                            seen.append(update.values["counter"])
                            if update.values["counter"] == written:
                                break
                await anyio.sleep(0.01)  # a steady client, not a second flood (it shares our GIL)
        assert await reader.read_variable("g", "counter") == written
    # every write arrived, in order, none lost
    assert seen == list(range(1, written + 1))
    assert hostile.frames >= MIN_FRAMES, hostile.frames
    assert server["proc"].poll() is None, "the server died"
    # the hostile connections got typed errors and clear closes
    assert hostile.codes.get("INVALID_REQUEST", 0) > 1000, hostile.codes
    # replies still running when a batch's closing frame arrives are lost with the connection
    assert hostile.replies >= 0.7 * hostile.frames, (hostile.replies, hostile.frames)
    assert set(hostile.closes) - {None} <= CLEAR_CODES, hostile.closes
    log = Path(server["log"]).read_text()
    assert "Traceback" not in log and "INTERNAL" not in log, log[-4000:]
    print(f"\nhostile: {hostile.frames} frames, {hostile.replies} replies, codes {hostile.codes}, "
          f"closes {hostile.closes} in {getattr(hostile, 'seconds', 0):.1f} s; good client: {written} writes, all pushed")
