"""``commy bench load``: many writers and followers at once, then check nothing was lost.

K remote clients (WSS over TLS, server in its own process) write acknowledged,
monotonically increasing values; L local processes write through the mapping (a scalar
counter and a wide ``u64[4]`` whose four words are always equal); remote subscribers
follow with mirrors and count events; a local reader checks the wide values for tears.
Afterwards every acknowledged value must be on the server, every subscriber must have
converged to the final values, and no read may have been torn. The same K-client
write load runs against a local ``redis-server`` in the same run for comparison.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio

ctx = mp.get_context("spawn")
SERVICES = 4
TENANT = "load"


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _connect(url: str, key: str, ca: str, locality: str):
    import commy
    from commy.config import ClientConfig, Config

    tls = ssl.create_default_context(cafile=ca)
    cfg = Config(client=ClientConfig(timeout=30.0))
    return commy.connect(url, tenant=TENANT, api_key=key, ssl_context=tls, locality=locality, config=cfg,
                         transport="wss-lean")


# -- remote writers ---------------------------------------------------------------------


def _remote_writers(url, key, ca, ids, seconds, start, out) -> None:
    async def one(k: int, acked: dict[int, int], failed: list[int]) -> None:
        async with _connect(url, key, ca, "remote") as client:
            svc, name = f"s{k % SERVICES}", f"r{k}"
            start.wait(60)
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                i += 1
                try:
                    await client.write_variable(svc, name, i)
                except Exception:
                    failed[0] += 1
                    break
                acked[k] = i

    async def main() -> None:
        acked: dict[int, int] = {}
        failed = [0]
        async with anyio.create_task_group() as tg:
            for k in ids:
                tg.start_soon(one, k, acked, failed)
        out.put(("remote", acked, failed[0]))

    anyio.run(main, backend_options={"use_uvloop": True} if _has_uvloop() else {})


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# -- local writers and the tear checker -------------------------------------------------


def _local_writer(url, key, ca, j, seconds, rate, start, out) -> None:
    async def main() -> None:
        async with _connect(url, key, ca, "local") as client:
            vf = await client.get_virtual_service_file(f"s{j % SERVICES}")
            assert vf.is_local, "the local writer must map the file"
            start.wait(60)
            t0 = time.monotonic()
            end = t0 + seconds
            i = 0
            while time.monotonic() < end:
                i += 1
                vf.write(f"l{j}", i)
                vf.write(f"w{j}", [i, i, i, i])
                if i % 20 == 0:
                    # Pace to `rate` writes/s: a spinning writer would only measure how
                    # much CPU it can take from the remote clients on two cores.
                    ahead = i / rate - (time.monotonic() - t0)
                    await anyio.sleep(max(ahead, 0))
            out.put(("local", j, i))
            vf.close()

    anyio.run(main)


def _tear_checker(url, key, ca, locals_, stop, out) -> None:
    async def main() -> None:
        async with _connect(url, key, ca, "local") as client:
            vfs = [await client.get_virtual_service_file(f"s{s}") for s in range(SERVICES)]
            torn = reads = 0
            while not stop.is_set():
                for j in range(locals_):
                    v = vfs[j % SERVICES].read(f"w{j}")
                    reads += 1
                    if len(set(v)) != 1:
                        torn += 1
                await anyio.sleep(0.0005)
            out.put(("tears", torn, reads))

    anyio.run(main)


# -- remote subscribers -----------------------------------------------------------------


def _subscriber(url, key, ca, svc, stop, settle, out) -> None:
    async def main() -> None:
        async with _connect(url, key, ca, "remote") as client:
            vf = await client.get_virtual_service_file(svc)
            events = 0
            torn = 0

            async def follow() -> None:
                nonlocal events, torn
                async for ev in vf.changes():
                    events += 1
                    for name in ev.variables:
                        if name.startswith("w"):
                            v = vf.read(name)
                            if len(set(v)) != 1:
                                torn += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                while not stop.is_set():
                    await anyio.sleep(0.05)
                # converge: wait until the mirror equals the server's values
                final = settle.get()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    if all(vf.read(n) == v for n, v in final.items() if n in vf):
                        break
                    await anyio.sleep(0.05)
                converged = all(vf.read(n) == v for n, v in final.items() if n in vf)
                tg.cancel_scope.cancel()
            out.put(("sub", svc, events, torn, converged))

    anyio.run(main)


# -- redis side by side -----------------------------------------------------------------


def _redis_writers(port, ids, seconds, start, out) -> None:
    import redis.asyncio as aredis

    async def one(k: int, acked: dict[int, int]) -> None:
        r = aredis.Redis(port=port)
        start.wait(60)
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            i += 1
            await r.set(f"r{k}", i)
            acked[k] = i
        await r.aclose()

    async def main() -> None:
        acked: dict[int, int] = {}
        async with anyio.create_task_group() as tg:
            for k in ids:
                tg.start_soon(one, k, acked)
        out.put(("redis", acked, 0))

    anyio.run(main)


def _redis_load(clients: int, procs: int, seconds: float) -> dict[str, Any]:
    from commy.bench.redis_server import redis_server

    with redis_server() as (port, reason):
        if port is None:
            return {"writes_per_s": None, "reason": reason}
        start, out = ctx.Event(), ctx.Queue()
        groups = [list(range(clients))[p::procs] for p in range(procs)]
        ps = [ctx.Process(target=_redis_writers, args=(port, g, seconds, start, out)) for g in groups]
        for p in ps:
            p.start()
        time.sleep(1.0)
        start.set()
        acked: dict[int, int] = {}
        for _ in ps:
            _kind, a, _f = out.get(timeout=seconds + 60)
            acked.update(a)
        for p in ps:
            p.join(10)
        import redis

        r = redis.Redis(port=port)
        lost = sum(max(0, acked[k] - int(r.get(f"r{k}") or 0)) for k in acked)
        total = sum(acked.values())
        return {"writes_per_s": round(total / seconds), "acked_writes": total, "lost_writes": lost}


# -- orchestration ------------------------------------------------------------------------


def run_load_bench(
    progress=None,
    clients: int = 16,
    local_writers: int = 2,
    subscribers: int = 2,
    seconds: float = 20.0,
    client_procs: int = 2,
    local_rate: float = 2000.0,
    redis: bool = True,
) -> dict:
    from commy.bench.remote import _make_certs, _server_process

    say = progress or (lambda m: None)
    with tempfile.TemporaryDirectory(prefix="commy-bench-load-") as tmp:
        root = Path(tmp)
        certs = _make_certs(root)
        q = ctx.Queue()
        server = ctx.Process(target=_server_process, args=(str(root / "data"), certs, q), daemon=True)
        server.start()
        url, _echo, key = q.get(timeout=60)
        ca = certs["ca"]
        say("bench load: setting up services")

        async def setup() -> None:
            async with _connect(url, key, ca, "remote") as c:
                await c.create_tenant(TENANT)
                for s in range(SERVICES):
                    await c.create_service(f"s{s}")
                for k in range(clients):
                    await c.allocate_variable(f"s{k % SERVICES}", f"r{k}", "i64")
                for j in range(local_writers):
                    await c.allocate_variable(f"s{j % SERVICES}", f"l{j}", "i64")
                    await c.allocate_variable(f"s{j % SERVICES}", f"w{j}", "u64[4]")

        anyio.run(setup)
        start, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        settles = [ctx.Queue() for _ in range(subscribers)]
        procs = []
        for i in range(subscribers):
            procs.append(ctx.Process(target=_subscriber, args=(url, key, ca, f"s{i % SERVICES}", stop, settles[i], out)))
        procs.append(ctx.Process(target=_tear_checker, args=(url, key, ca, local_writers, stop, out)))
        for p in range(client_procs):
            ids = list(range(clients))[p::client_procs]
            procs.append(ctx.Process(target=_remote_writers, args=(url, key, ca, ids, seconds, start, out)))
        for j in range(local_writers):
            procs.append(ctx.Process(target=_local_writer, args=(url, key, ca, j, seconds, local_rate, start, out)))
        for p in procs:
            p.start()
        time.sleep(3.0)  # everyone connected
        rss_max = 0.0
        sampling = True

        def sample() -> None:
            nonlocal rss_max
            while sampling:
                rss_max = max(rss_max, _rss_mb(server.pid))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        say(f"bench load: {clients} remote clients + {local_writers} local writers for {seconds:.0f} s")
        t0 = time.monotonic()
        start.set()
        acked: dict[int, int] = {}
        failed = 0
        local_final: dict[int, int] = {}
        for _ in range(client_procs + local_writers):
            msg = out.get(timeout=seconds + 120)
            if msg[0] == "remote":
                acked.update(msg[1])
                failed += msg[2]
            else:
                local_final[msg[1]] = msg[2]
        elapsed = time.monotonic() - t0
        stop.set()

        final: dict[str, dict[str, Any]] = {}

        async def read_final() -> None:
            async with _connect(url, key, ca, "remote") as c:
                for s in range(SERVICES):
                    vf = await c.get_virtual_service_file(f"s{s}")
                    final[f"s{s}"] = {n: vf.read(n) for n in vf.names()}

        anyio.run(read_final)
        values = {n: v for svc in final.values() for n, v in svc.items()}
        for i in range(subscribers):
            settles[i].put(final[f"s{i % SERVICES}"])
        events = 0
        sub_torn = 0
        converged = []
        tears = reads = 0
        for _ in range(subscribers + 1):
            msg = out.get(timeout=120)
            if msg[0] == "sub":
                events += msg[2]
                sub_torn += msg[3]
                converged.append(msg[4])
            elif msg[0] == "tears":
                tears, reads = msg[1], msg[2]
        sampling = False
        for p in procs:
            p.join(30)
        server.terminate()
        server.join(10)

    lost = sum(max(0, acked.get(k, 0) - int(values.get(f"r{k}", 0))) for k in range(clients))
    lost += sum(max(0, n - int(values.get(f"l{j}", 0))) for j, n in local_final.items())
    total_remote = sum(acked.values())
    total_local = sum(local_final.values())
    result: dict[str, Any] = {
        "clients": clients,
        "local_writers": local_writers,
        "subscribers": subscribers,
        "seconds": round(elapsed, 1),
        "acked_writes": total_remote,
        "local_writes": total_local,
        "lost_writes": lost,
        "failed_requests": failed,
        "torn_reads": tears + sub_torn,
        "tear_checks": reads,
        "writes_per_s": round(total_remote / elapsed),
        "local_writes_per_s": round(total_local / elapsed),
        "events_per_s": round(events / elapsed),
        "subscribers_converged": all(converged) and len(converged) == subscribers,
        "server_rss_mb_max": round(rss_max, 1),
    }
    if redis:
        say("bench load: the same remote write load against redis-server")
        r = _redis_load(clients, client_procs, min(seconds, 10.0))
        result["redis_writes_per_s"] = r.get("writes_per_s")
        if r.get("reason"):
            result["redis_reason"] = r["reason"]
        elif result["redis_writes_per_s"]:
            result["writes_vs_redis"] = round(result["writes_per_s"] / result["redis_writes_per_s"], 3)
    return result


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run_load_bench(seconds=float(os.environ.get("SECONDS", "5"))), indent=2))
