"""``commy bench scaleout``: three commy servers sharing one Redis backplane.

- ``cross_node_event_us_*``: a local writer stores ``perf_counter_ns()`` (CLOCK_MONOTONIC,
  shared by all processes) through node A's mapping; a reader process mapping node C's
  file (futex wake-up path, callback delivery) computes now − value on each event. The
  path: A's poller → XADD (Lua) → C's XREAD → C's file → futex → reader.
- ``changes_per_s``: one forced-remote client per node writes its own variable as fast
  as it can (each write is one committed change, one stream entry); time from the first
  write until every node's file holds every final value.
- ``redis_pubsub_rtt_us_p50``: PUBLISH → a subscriber in another process PUBLISHes back
  → received, against the same ``redis-server``: the engine's own floor, measured in the
  same run.

The helpers (`RedisProcess`, `node_process`, `start_nodes`) are shared with
tests/test_scaleout.py.
"""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from commy.bench.local import _pct
from commy.bench.redis_server import free_port

ctx = multiprocessing.get_context("spawn")
TENANT = "scale"
SERVICE = "shared"
#: pause between two samples, the same for the cross-node and the pub/sub measurement:
#: this VM halts idle vCPUs, and the longer a process sleeps the more its next wake-up
#: costs (a pub/sub round trip measured 0.85-1.0 ms with 2 ms pauses, 1.4-1.6 ms with 5 ms)
SAMPLE_GAP_S = 0.005


class RedisProcess:
    """A ``redis-server`` on loopback that can be killed and restarted on the same port
    and data (AOF with ``appendfsync always``: every acknowledged write survives)."""

    def __init__(self, root: Path, fsync: str = "always") -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.exe = exe
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        #: AOF fsync policy: "always", "everysec", or "no" (no AOF at all)
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "no"] if self.fsync == "no" else ["--appendonly", "yes", "--appendfsync", self.fsync]
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof,
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        # Loading the AOF: answer only once the data is back.
        import redis

        client = redis.Redis(port=self.port)
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis.BusyLoadingError:
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


def _make_tls(root: Path) -> tuple[str, str, str]:
    from commy.certs import create_ca, issue_server_cert

    tls = root / "tls"
    ca = create_ca(tls, days=1)
    cert = issue_server_cert(tls, hosts=("127.0.0.1", "localhost"), days=1)
    return str(ca.cert_file), str(cert.cert_file), str(cert.key_file)


def node_process(data_dir: str, redis_url: str, cert: str, key: str, poll_interval: float, queue: Any,
                 backplane: str = "redis", kernel: str | None = None, wakeup: str = "poll") -> None:
    """Entry point of one node: a commy server with the Redis backplane."""
    from commy.config import BackplaneConfig, Config, KernelConfig, ServerConfig
    from commy.server.process import serve_and_report

    config = Config(
        data_dir=data_dir,
        kernel=KernelConfig(name=kernel),
        server=ServerConfig(host="127.0.0.1", port=0, transport="wss", tls=True, cert_file=cert, key_file=key,
                            backplane=backplane, poll_interval=poll_interval, wakeup=wakeup),
        backplane=BackplaneConfig(url=redis_url, timeout=2.0),
    )
    serve_and_report(config, queue)


@attrs.define
class Node:
    name: str
    data_dir: str
    proc: Any
    url: str = ""
    admin_key: str = ""


@attrs.define
class Cluster:
    root: Path
    redis: RedisProcess
    ca_file: str
    cert: str
    key: str
    poll_interval: float
    backplane: str = "redis"
    wakeup: str = "poll"
    nodes: dict[str, Node] = attrs.field(factory=dict)

    def start_node(self, name: str) -> Node:
        data = str(self.root / f"node-{name}")
        queue = ctx.Queue()
        proc = ctx.Process(
            target=node_process,
            args=(data, self.redis.url, self.cert, self.key, self.poll_interval, queue, self.backplane),
            kwargs={"wakeup": self.wakeup},
            daemon=True,
        )
        proc.start()
        url, admin_key = queue.get(timeout=60)
        node = self.nodes[name] = Node(name, data, proc, url, admin_key)
        return node

    def kill_node(self, name: str) -> None:
        node = self.nodes[name]
        node.proc.kill()  # SIGKILL: no clean-up runs
        node.proc.join(10)

    def ssl_context(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=self.ca_file)

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc.is_alive():
                node.proc.terminate()
                node.proc.join(10)
        self.redis.stop()


@contextmanager
def start_cluster(root: Path, names: tuple[str, ...] = ("A", "B", "C"), poll_interval: float = 0.002,
                  fsync: str = "always", backplane: str = "redis", wakeup: str = "poll") -> Iterator[Cluster]:
    redis = RedisProcess(root / "redis", fsync=fsync)
    redis.start()
    ca, cert, key = _make_tls(root)
    cluster = Cluster(root, redis, ca, cert, key, poll_interval, backplane, wakeup)
    try:
        for name in names:
            cluster.start_node(name)
        yield cluster
    finally:
        cluster.stop()


# ---------------------------------------------------------------------- the bench


def _reader_child(path: str, ready: Any, done: Any, out: Any) -> None:
    from commy.virtual_file import VirtualServiceFile

    vf = VirtualServiceFile.open(path, readonly=True)
    lat: list[float] = []
    perf = time.perf_counter_ns

    def on_event(event: Any) -> None:
        now = perf()
        if "t" in event.variables:
            lat.append((now - vf.read("t")) / 1000)

    vf.on_file_change(on_event)
    vf.start_file_monitoring(wakeup="futex", sweep_interval_s=0)
    ready.set()
    done.wait(300)
    time.sleep(0.2)
    vf.close()
    out.put(lat)


def _pong_child(port: int, ready: Any) -> None:
    import redis

    r = redis.Redis(port=port)
    sub = r.pubsub()
    sub.subscribe("commy-bench-ping")
    sub.get_message(timeout=5)  # the subscribe confirmation
    ready.set()
    for msg in sub.listen():
        if msg["type"] == "message":
            if msg["data"] == b"stop":
                return
            r.publish("commy-bench-pong", msg["data"])


def _pubsub_rtt(port: int, samples: int) -> list[float]:
    import redis

    ready = ctx.Event()
    child = ctx.Process(target=_pong_child, args=(port, ready), daemon=True)
    child.start()
    ready.wait(30)
    r = redis.Redis(port=port)
    sub = r.pubsub()
    sub.subscribe("commy-bench-pong")
    sub.get_message(timeout=5)
    rtt = []
    try:
        for i in range(samples):
            t0 = time.perf_counter_ns()
            r.publish("commy-bench-ping", str(i))
            while True:
                msg = sub.get_message(timeout=5)
                if msg is None:
                    raise RuntimeError("pub/sub pong lost")
                if msg["type"] == "message":
                    break
            rtt.append((time.perf_counter_ns() - t0) / 1000)
            time.sleep(SAMPLE_GAP_S)
    finally:
        r.publish("commy-bench-ping", "stop")
        child.join(10)
        sub.close()
        r.close()
    return rtt[5:]


async def _setup(cluster: Cluster) -> dict[str, str]:
    """Tenant, service and variables; returns each node's path of the service file."""
    import commy

    a = cluster.nodes["A"]
    ssl_ctx = cluster.ssl_context()
    async with commy.connect(a.url, tenant=TENANT, api_key=a.admin_key, ssl_context=ssl_ctx) as c:
        await c.create_tenant(TENANT)
        await c.create_service(SERVICE)
        for name in ("t", "a", "b", "c"):
            await c.allocate_variable(SERVICE, name, "i64")
    paths = {}
    for name, node in cluster.nodes.items():
        async with commy.connect(node.url, tenant=TENANT, api_key=a.admin_key, ssl_context=ssl_ctx) as c:
            info = await c.request("GetServiceFilePath", tenant=TENANT, service=SERVICE)
            paths[name] = info["path"]
    return paths


async def _throughput(cluster: Cluster, paths: dict[str, str], writes: int) -> dict[str, Any]:
    import anyio

    import commy
    from commy.virtual_file import VirtualServiceFile

    key = cluster.nodes["A"].admin_key
    ssl_ctx = cluster.ssl_context()
    views = {n: VirtualServiceFile.open(p, readonly=True) for n, p in paths.items()}
    final = {"a": writes, "b": writes + 1, "c": writes + 2}
    t0 = time.perf_counter()

    async def writer(node: str, var: str) -> None:
        async with commy.connect(cluster.nodes[node].url, tenant=TENANT, api_key=key, ssl_context=ssl_ctx,
                                 locality="remote") as c:
            vf = await c.get_virtual_service_file(SERVICE)
            last = final[var]
            for i in range(1, last + 1):
                if i % 200 == 0 or i == last:
                    await vf.awrite(var, i)  # acknowledged: bounds what is in flight
                else:
                    vf.write(var, i)

    try:
        async with anyio.create_task_group() as tg:
            for node, var in (("A", "a"), ("B", "b"), ("C", "c")):
                tg.start_soon(writer, node, var)
        written = time.perf_counter()
        deadline = time.monotonic() + 60
        while any(v.read(k) != final[k] for v in views.values() for k in final):
            if time.monotonic() > deadline:
                raise RuntimeError("nodes did not converge")
            await anyio.sleep(0.001)
        done = time.perf_counter()
    finally:
        for v in views.values():
            v.close()
    total = sum(final.values())
    return {
        "changes": total,
        "changes_per_s": round(total / (done - t0)),
        "convergence_after_last_ack_ms": round((done - written) * 1000, 1),
    }


def run_scaleout_bench(progress: Any = None, samples: int = 300, writes: int = 2000,
                       wakeup: str = "futex", poll_interval: float = 0.0005) -> dict[str, Any]:
    import anyio
    import redis as redis_py

    from commy.virtual_file import VirtualServiceFile

    say = progress or (lambda message: None)
    if shutil.which("redis-server") is None:
        return {"nodes": 3, "error": "redis-server is not installed"}
    with tempfile.TemporaryDirectory(prefix="commy-scaleout-") as tmp:
        say("bench scaleout: starting redis and three nodes")
        # appendfsync everysec: the usual production setting (an fsync per entry would
        # measure the disk, not the path); the tests run with "always"
        with start_cluster(Path(tmp), poll_interval=poll_interval, fsync="everysec", wakeup=wakeup) as cluster:
            paths = anyio.run(_setup, cluster)
            say("bench scaleout: redis pub/sub round trip")
            rtt = _pubsub_rtt(cluster.redis.port, samples)
            say("bench scaleout: cross-node latency")
            ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
            child = ctx.Process(target=_reader_child, args=(paths["C"], ready, done, out), daemon=True)
            child.start()
            ready.wait(30)
            time.sleep(0.3)
            with VirtualServiceFile.open(paths["A"]) as vf:
                for i in range(samples):
                    vf.write("t", time.perf_counter_ns())
                    time.sleep(SAMPLE_GAP_S)
                    if i % 50 == 0:
                        say(f"bench scaleout: cross-node {i}/{samples}")
            time.sleep(0.3)
            done.set()
            lat = out.get(timeout=60)[3:]
            child.join(10)
            say("bench scaleout: sustained changes across nodes")
            tput = anyio.run(_throughput, cluster, paths, writes)
            r = redis_py.Redis(port=cluster.redis.port)
            stream_len = r.xlen(f"commy:{{{TENANT}/{SERVICE}}}:log")
            r.close()
    rtt_p50 = round(_pct(rtt, 0.5), 1) if rtt else None
    p50 = round(_pct(lat, 0.5), 1) if lat else None
    return {
        "nodes": 3,
        "cross_node_event_us_p50": p50,
        "cross_node_event_us_p99": round(_pct(lat, 0.99), 1) if lat else None,
        "cross_node_samples": len(lat),
        "changes_per_s": tput["changes_per_s"],
        "changes": tput["changes"],
        "convergence_after_last_ack_ms": tput["convergence_after_last_ack_ms"],
        "stream_entries": stream_len,
        "redis_pubsub_rtt_us_p50": rtt_p50,
        "redis_pubsub_rtt_us_p99": round(_pct(rtt, 0.99), 1) if rtt else None,
        "cross_node_over_pubsub_rtt": round(p50 / rtt_p50, 2) if p50 and rtt_p50 else None,
        "sample_gap_ms": SAMPLE_GAP_S * 1000,
        "reader_wakeup": "futex, callback in the watcher thread (the fastest local event path)",
        "target": "cross_node_event_us_p50 <= 2 x redis_pubsub_rtt_us_p50",
        "met": bool(p50 and rtt_p50 and p50 <= 2 * rtt_p50),
        "setup": "3 servers (asyncio, WSS/TLS) + 1 redis-server (AOF, appendfsync everysec) on loopback; "
                 "writer on A's mapping, reader on C's mapping (futex wake-up); "
                 f"server.wakeup {wakeup!r}, poll_interval {poll_interval * 1000:g} ms",
        "server_wakeup": wakeup,
    }
