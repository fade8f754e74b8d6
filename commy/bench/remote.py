"""Remote round-trip benchmark: commy over WSS against redis-py, side by side in one run.

One client, loopback, TLS. The commy `Server` runs in another process (on uvloop when
installed) with a generated certificate; the client does ``ReadVariable`` and
``WriteVariable`` of one i64 through `commy.connect`, once per client transport
(``wss`` = httpx-ws, ``wss-lean``), and through the blocking client
(`commy.connect_sync`, whose requests skip the event loop: ``sync``). The headline
figures are the fastest client's, named in ``client``; ``async_*`` give the fastest
async client's. For the same messages without the commy protocol the
server process also runs a bare echo listener: the gap between the two is what the
client SDK and server core add on top of the transport. redis-py GET/SET run against a
``redis-server`` this bench starts on a free loopback port (plain TCP, and TLS when
the server build supports it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs

Progress = Callable[[str], None] | None

CLIENT_TRANSPORTS = ("wss", "wss-lean")
TENANT = "bench"
SERVICE = "bench"
VARIABLE = "x"
#: a typical small protocol message, for the transport-only echo
ECHO_MESSAGE = '{"type":"ReadVariable","id":1,"v":1,"tenant":"bench","service":"bench","name":"x"}'


#: the blocking client's polling window in the side-by-side run with ``client.spin_us``
SPIN_US = 200.0


def _backend_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _stats(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    n = len(s)

    def pick(q: float) -> float:
        return round(s[min(n - 1, int(q * n))] / 1000, 1)

    return {"p50": pick(0.5), "p99": pick(0.99), "min": round(s[0] / 1000, 1)}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of another process (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class _CpuMeter:
    """CPU µs per operation of this process and of the server process over a block."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> _CpuMeter:
        self.c0 = time.process_time()
        self.s0 = _cpu_seconds(self.server_pid) if self.server_pid else None
        return self

    def __exit__(self, *exc: object) -> None:
        self.client_s = time.process_time() - self.c0
        s1 = _cpu_seconds(self.server_pid) if self.server_pid else None
        self.server_s = None if s1 is None or self.s0 is None else s1 - self.s0

    def per_op(self, ops: int) -> dict[str, float | None]:
        return {
            "client_cpu_us_per_rtt": round(self.client_s / ops * 1e6, 1),
            "server_cpu_us_per_rtt": None if self.server_s is None else round(self.server_s / ops * 1e6, 1),
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- certificates ---------------------------------------------------------------------


def _make_certs(root: Path) -> dict[str, str]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "ca": root / "ca.pem",
        "chain": root / "server-chain.pem",
        "cert": root / "server-cert.pem",
        "key": root / "server-key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["chain"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {k: str(v) for k, v in paths.items()}


# -- the server process ---------------------------------------------------------------


async def _echo(conn: Any) -> None:
    from commy.errors import ConnectionLost

    with contextlib.suppress(ConnectionLost):
        while True:
            await conn.send(await conn.receive())


def _server_process(data_dir: str, certs: dict[str, str], queue: Any) -> None:
    """Entry point of the spawned server process: commy Server + a bare echo listener."""
    from commy.config import Config, ServerConfig
    from commy.plugins import get_plugins
    from commy.server import Server
    from commy.transports.base import ServerOptions

    config = Config(
        data_dir=data_dir,
        server=ServerConfig(
            host="127.0.0.1", port=0, transport="wss", tls=True,
            cert_file=certs["chain"], key_file=certs["chain"],
        ),
    )

    async def main() -> None:
        server = Server(config)
        key = server.create_admin_key()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certs["chain"])
        echo_transport = get_plugins().transports.get("wss")()
        try:
            async with anyio.create_task_group() as tg:
                url = await tg.start(server.serve)
                echo_url = await tg.start(
                    partial(echo_transport.serve, _echo, ServerOptions(ssl_context=ctx))
                )
                queue.put((url, echo_url, key))
                await anyio.sleep_forever()
        finally:
            server.close()

    anyio.run(main, backend_options=_backend_options())


# -- clients --------------------------------------------------------------------------


async def _setup(url: str, key: str, ctx: ssl.SSLContext, config: Any) -> None:
    import commy

    async with commy.connect(
        url, tenant=TENANT, api_key=key, transport="wss-lean", ssl_context=ctx,
        locality="remote", config=config,
    ) as c:
        await c.create_tenant(TENANT)
        await c.create_service(SERVICE)
        await c.allocate_variable(SERVICE, VARIABLE, "i64", initial=0)


async def _measure_commy(
    url: str, key: str, ctx: ssl.SSLContext, config: Any, transport: str, n: int,
    server_pid: int | None = None,
) -> dict[str, Any]:
    import commy

    perf = time.perf_counter_ns
    async with commy.connect(
        url, tenant=TENANT, api_key=key, transport=transport, ssl_context=ctx,
        locality="remote", config=config,
    ) as c:
        read, write = c.read_variable, c.write_variable
        for i in range(min(200, n)):  # warm-up: type cache, code paths, TLS buffers
            await read(SERVICE, VARIABLE)
            await write(SERVICE, VARIABLE, i)
        reads, writes = [], []
        with _CpuMeter(server_pid) as cpu:
            for i in range(n):
                t0 = perf()
                await read(SERVICE, VARIABLE)
                t1 = perf()
                await write(SERVICE, VARIABLE, i)
                t2 = perf()
                reads.append(t1 - t0)
                writes.append(t2 - t1)
        assert await read(SERVICE, VARIABLE) == n - 1
    r, w = _stats(reads), _stats(writes)
    return {
        **cpu.per_op(2 * n),
        "read_rtt_us_p50": r["p50"], "read_rtt_us_p99": r["p99"], "read_rtt_us_min": r["min"],
        "write_rtt_us_p50": w["p50"], "write_rtt_us_p99": w["p99"], "write_rtt_us_min": w["min"],
    }


def _measure_sync(
    url: str, key: str, ctx: ssl.SSLContext, config: Any, n: int, server_pid: int | None = None
) -> dict[str, Any]:
    """The blocking client (`commy.connect_sync`): requests from this thread, no event loop."""
    import commy

    perf = time.perf_counter_ns
    with commy.connect_sync(
        url, tenant=TENANT, api_key=key, transport="wss-lean", ssl_context=ctx,
        locality="remote", config=config,
    ) as c:
        if c._direct is None:
            raise RuntimeError("the blocking client has no direct connection (client.blocking_requests)")
        read, write = c.read_variable, c.write_variable
        for i in range(min(200, n)):
            read(SERVICE, VARIABLE)
            write(SERVICE, VARIABLE, i)
        reads, writes = [], []
        with _CpuMeter(server_pid) as cpu:
            for i in range(n):
                t0 = perf()
                read(SERVICE, VARIABLE)
                t1 = perf()
                write(SERVICE, VARIABLE, i)
                t2 = perf()
                reads.append(t1 - t0)
                writes.append(t2 - t1)
        assert read(SERVICE, VARIABLE) == n - 1
    r, w = _stats(reads), _stats(writes)
    return {
        # the client process also runs the async client's event loop thread: mostly idle
        **cpu.per_op(2 * n),
        "read_rtt_us_p50": r["p50"], "read_rtt_us_p99": r["p99"], "read_rtt_us_min": r["min"],
        "write_rtt_us_p50": w["p50"], "write_rtt_us_p99": w["p99"], "write_rtt_us_min": w["min"],
    }


async def _measure_echo(
    url: str, ctx: ssl.SSLContext, transport: str, n: int, server_pid: int | None = None
) -> dict[str, Any]:
    from commy.plugins import get_plugins
    from commy.transports.base import ClientOptions

    conn = await get_plugins().transports.get(transport)().connect(url, ClientOptions(ssl_context=ctx))
    perf = time.perf_counter_ns
    try:
        for _ in range(min(200, n)):
            await conn.send(ECHO_MESSAGE)
            await conn.receive()
        samples = []
        with _CpuMeter(server_pid) as cpu:
            for _ in range(n):
                t0 = perf()
                await conn.send(ECHO_MESSAGE)
                await conn.receive()
                samples.append(perf() - t0)
    finally:
        await conn.aclose()
    s = _stats(samples)
    return {
        "echo_rtt_us_p50": s["p50"], "echo_rtt_us_p99": s["p99"],
        **{f"echo_{k}": v for k, v in cpu.per_op(n).items()},
    }


# -- redis ----------------------------------------------------------------------------


def _redis_bench(n: int, certs: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "redis_get_rtt_us_p50": None, "redis_set_rtt_us_p50": None,
        "redis_get_rtt_us_p99": None, "redis_set_rtt_us_p99": None,
        "redis_tls_get_rtt_us_p50": None, "redis_tls_set_rtt_us_p50": None,
        "redis_reason": None,
    }
    exe = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        out["redis_reason"] = "redis-py is not installed (pip install redis)"
        return out
    if exe is None:
        out["redis_reason"] = "redis-server is not installed (apt-get install redis-server)"
        return out

    def run(args: list[str], client_kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """GET stats, SET stats, CPU per round trip (redis-py's process, redis-server's)."""
        proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            r = redis.Redis(host="127.0.0.1", **client_kw)
            deadline = time.monotonic() + 10
            while True:
                try:
                    r.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            perf = time.perf_counter_ns
            r.set("x", 0)
            for i in range(min(200, n)):
                r.get("x")
                r.set("x", i)
            gets, sets = [], []
            with _CpuMeter(proc.pid) as cpu:
                for i in range(n):
                    t0 = perf()
                    r.get("x")
                    t1 = perf()
                    r.set("x", i)
                    t2 = perf()
                    gets.append(t1 - t0)
                    sets.append(t2 - t1)
            r.close()
            return _stats(gets), _stats(sets), cpu.per_op(2 * n)
        finally:
            proc.terminate()
            proc.wait(10)

    port = _free_port()
    g, s, cpu = run(["--port", str(port)], {"port": port})
    out.update(
        redis_get_rtt_us_p50=g["p50"], redis_get_rtt_us_p99=g["p99"],
        redis_set_rtt_us_p50=s["p50"], redis_set_rtt_us_p99=s["p99"],
        # CPU per round trip of redis-py's process and redis-server's, beside commy's
        # client_cpu_us_per_rtt / server_cpu_us_per_rtt
        redis_client_cpu_us_per_rtt=cpu["client_cpu_us_per_rtt"],
        redis_server_cpu_us_per_rtt=cpu["server_cpu_us_per_rtt"],
    )
    port = _free_port()
    try:
        g, s, _cpu = run(
            ["--port", "0", "--tls-port", str(port), "--tls-cert-file", certs["cert"],
             "--tls-key-file", certs["key"], "--tls-ca-cert-file", certs["ca"],
             "--tls-auth-clients", "no"],
            {"port": port, "ssl": True, "ssl_ca_certs": certs["ca"]},
        )
        out.update(redis_tls_get_rtt_us_p50=g["p50"], redis_tls_set_rtt_us_p50=s["p50"])
    except Exception as exc:  # an old or TLS-less redis build: the TCP numbers stand
        out["redis_tls_reason"] = f"redis over TLS failed: {exc!r}"
    return out


# -- the whole run --------------------------------------------------------------------


def run_remote_bench(progress: Progress = None, n: int = 2000) -> dict[str, Any]:
    from commy.config import ClientConfig, Config

    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="commy-bench-remote-") as tmp:
        root = Path(tmp)
        certs = _make_certs(root)
        ctx = ssl.create_default_context(cafile=certs["ca"])
        say("starting the commy server (separate process)")
        mp = multiprocessing.get_context("spawn")
        queue = mp.Queue()
        proc = mp.Process(
            target=_server_process, args=(str(root / "data"), certs, queue), daemon=True
        )
        proc.start()
        clients: dict[str, Any] = {}
        try:
            url, echo_url, key = queue.get(timeout=60)
            config = Config(
                data_dir=str(root / "client-data"),
                client=ClientConfig(locality="remote", timeout=30.0),
            )
            opts = _backend_options()
            anyio.run(_setup, url, key, ctx, config, backend_options=opts)
            for transport in CLIENT_TRANSPORTS:
                say(f"commy over {transport}: {n} reads + {n} writes")
                result = anyio.run(
                    _measure_commy, url, key, ctx, config, transport, n, proc.pid,
                    backend_options=opts,
                )
                say(f"{transport}: transport-only echo")
                result.update(
                    anyio.run(_measure_echo, echo_url, ctx, transport, n, proc.pid, backend_options=opts)
                )
                clients[transport] = result
            say(f"blocking client (connect_sync): {n} reads + {n} writes")
            clients["sync"] = _measure_sync(url, key, ctx, config, n, proc.pid)
            say(f"blocking client polling {SPIN_US:g} µs for answers (client.spin_us)")
            spin_config = attrs.evolve(config, client=attrs.evolve(config.client, spin_us=SPIN_US))
            clients["sync_spin"] = _measure_sync(url, key, ctx, spin_config, n, proc.pid)
            say("wss-lean client on plain asyncio and on trio")
            loops = {}
            for backend, options in (("asyncio", {}), ("trio", {})):
                r = anyio.run(
                    _measure_commy, url, key, ctx, config, "wss-lean", n // 2,
                    backend=backend, backend_options=options,
                )
                loops[backend] = {"read_rtt_us_p50": r["read_rtt_us_p50"], "write_rtt_us_p50": r["write_rtt_us_p50"]}
        finally:
            proc.terminate()
            proc.join(10)
        say("redis-py against redis-server")
        redis_result = _redis_bench(n, certs)

    # The headline is the fastest client with default settings; the polling one is
    # reported beside it (it buys latency with a busy core).
    best = min(
        (t for t in clients if t != "sync_spin"),
        key=lambda t: clients[t]["read_rtt_us_p50"] + clients[t]["write_rtt_us_p50"],
    )
    best_async = min(
        (t for t in clients if not t.startswith("sync")),
        key=lambda t: clients[t]["read_rtt_us_p50"] + clients[t]["write_rtt_us_p50"],
    )
    out: dict[str, Any] = {
        "n": n,
        # the headline figures are the fastest client's; redis-py is a blocking client too
        "client": best,
        "redis_client": "redis-py (blocking)",
        **{k: v for k, v in clients[best].items() if not k.startswith("echo")},
        "clients": clients,
        "client_loop": "uvloop" if opts else "asyncio",
        "server_loop": "uvloop" if opts else "asyncio",
        "wss_lean_other_loops": loops,
        "async_client": best_async,
        "async_read_rtt_us_p50": clients[best_async]["read_rtt_us_p50"],
        "async_write_rtt_us_p50": clients[best_async]["write_rtt_us_p50"],
        "spin_us": SPIN_US,
        "read_rtt_us_p50_spin": clients["sync_spin"]["read_rtt_us_p50"],
        "write_rtt_us_p50_spin": clients["sync_spin"]["write_rtt_us_p50"],
        **redis_result,
    }
    if redis_result["redis_get_rtt_us_p50"]:
        out["ratio_read_over_redis_get"] = round(
            out["read_rtt_us_p50"] / redis_result["redis_get_rtt_us_p50"], 2
        )
        out["ratio_write_over_redis_set"] = round(
            out["write_rtt_us_p50"] / redis_result["redis_set_rtt_us_p50"], 2
        )
        out["ratio_read_spin_over_redis_get"] = round(
            out["read_rtt_us_p50_spin"] / redis_result["redis_get_rtt_us_p50"], 2
        )
        out["ratio_write_spin_over_redis_set"] = round(
            out["write_rtt_us_p50_spin"] / redis_result["redis_set_rtt_us_p50"], 2
        )
    return out
