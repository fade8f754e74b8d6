"""Remote change events: remote writer → server (another process) → remote subscriber.

Three processes: the commy `Server` over WSS/TLS (on uvloop when installed), a
subscriber client forced ``locality="remote"`` whose mirror raises `FileChangeEvent`s
from the server's ``VariablesUpdated`` pushes, and the writer (this process), also a
remote client. The writer stores ``perf_counter_ns()`` (CLOCK_MONOTONIC, shared by all
processes) into a variable; latency is the time from that stamp to the subscriber's
callback for the event naming the variable.
"""

from __future__ import annotations

import multiprocessing
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from commy.bench.local import latency_summary

TENANT = "bench"
SERVICE = "events"
TRANSPORT = "wss-lean"
_mp = multiprocessing.get_context("spawn")


def _config(root: str) -> Any:
    from commy.config import ClientConfig, Config

    return Config(data_dir=str(Path(root) / "client-data"), client=ClientConfig(locality="remote", timeout=30.0))


async def _setup(url: str, key: str, ca: str, root: str, variables: int) -> None:
    import commy

    ctx = ssl.create_default_context(cafile=ca)
    async with commy.connect(
        url, tenant=TENANT, api_key=key, transport=TRANSPORT, ssl_context=ctx, config=_config(root)
    ) as c:
        try:
            await c.create_tenant(TENANT)
        except Exception:  # noqa: BLE001 - a second run on the same server
            pass
        await c.create_service(SERVICE)
        await c.allocate_variable(SERVICE, "t", "i64", initial=0)
        for i in range(variables):
            await c.allocate_variable(SERVICE, f"n{i}", "i64", initial=0)


def _subscriber(url: str, key: str, ca: str, root: str, ready: Any, done: Any, out: Any) -> None:
    """A spawned process: a remote mirror counting events and timing those naming ``t``."""
    from commy.bench.remote import _backend_options

    async def main() -> None:
        import commy

        ctx = ssl.create_default_context(cafile=ca)
        perf = time.perf_counter_ns
        lat: list[float] = []
        counts = [0, 0]  # events, variable changes
        async with commy.connect(
            url, tenant=TENANT, api_key=key, transport=TRANSPORT, ssl_context=ctx,
            locality="remote", config=_config(root),
        ) as c:
            vf = await c.get_virtual_service_file(SERVICE)
            assert not vf.is_local

            def on_event(event: Any) -> None:
                now = perf()
                counts[0] += 1
                counts[1] += len(event.variables)
                if "t" in event.variables:
                    lat.append((now - vf.read("t")) / 1000)

            vf.on_file_change(on_event)
            vf.start_file_monitoring()
            ready.set()
            while not done.is_set():
                await anyio.sleep(0.05)
            await anyio.sleep(0.3)  # the last pushes
        out.put((lat, counts[0], counts[1]))

    anyio.run(main, backend_options=_backend_options())


class _Server:
    """The server process and a temp dir with certificates, as a context manager."""

    def __enter__(self) -> _Server:
        from commy.bench.remote import _make_certs, _server_process

        self._tmp = tempfile.TemporaryDirectory(prefix="commy-bench-events-remote-")
        self.root = self._tmp.name
        certs = _make_certs(Path(self.root))
        self.ca = certs["ca"]
        queue = _mp.Queue()
        self.proc = _mp.Process(
            target=_server_process, args=(str(Path(self.root) / "data"), certs, queue), daemon=True
        )
        self.proc.start()
        self.url, _echo, self.key = queue.get(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(10)
        self._tmp.cleanup()

    def subscribers(self, count: int) -> list[tuple[Any, Any, Any, Any]]:
        subs = []
        for _ in range(count):
            ready, done, out = _mp.Event(), _mp.Event(), _mp.Queue()
            p = _mp.Process(target=_subscriber, args=(self.url, self.key, self.ca, self.root, ready, done, out))
            p.start()
            subs.append((p, ready, done, out))
        for _p, ready, _d, _o in subs:
            if not ready.wait(60):
                raise RuntimeError("a remote subscriber did not start")
        time.sleep(0.2)
        return subs


def _collect(subs: list[tuple[Any, Any, Any, Any]]) -> list[tuple[list[float], int, int]]:
    for _p, _r, done, _o in subs:
        done.set()
    results = [out.get(timeout=60) for _p, _r, _d, out in subs]
    for p, *_ in subs:
        p.join(10)
    return results


async def _write_stamps(url: str, key: str, ca: str, root: str, samples: int, gap_s: float, say: Any) -> None:
    import commy

    ctx = ssl.create_default_context(cafile=ca)
    async with commy.connect(
        url, tenant=TENANT, api_key=key, transport=TRANSPORT, ssl_context=ctx,
        locality="remote", config=_config(root),
    ) as c:
        for i in range(samples):
            await c.write_variable(SERVICE, "t", time.perf_counter_ns())
            await anyio.sleep(gap_s)
            if i % 100 == 0:
                say(f"bench events: remote {i}/{samples}")


def _write_stamps_blocking(url: str, key: str, ca: str, root: str, samples: int, gap_s: float, say: Any) -> None:
    """The same writes from the blocking client (`connect_sync`): each from the calling
    thread on its direct connection, as `commy bench remote`'s headline client."""
    import commy

    ctx = ssl.create_default_context(cafile=ca)
    with commy.connect_sync(
        url, tenant=TENANT, api_key=key, transport=TRANSPORT, ssl_context=ctx,
        locality="remote", config=_config(root),
    ) as c:
        for i in range(samples):
            c.write_variable(SERVICE, "t", time.perf_counter_ns())
            time.sleep(gap_s)
            if i % 100 == 0:
                say(f"bench events: remote (blocking writer) {i}/{samples}")


def remote_event_latency(
    samples: int, say: Any = None, gap_s: float = 0.003, writers: tuple[str, ...] = ("blocking", "async")
) -> dict[str, dict[str, Any]]:
    """p50/p99 µs from a remote write to the remote subscriber's event, ``gap_s`` apart,
    per writer client (``"blocking"``: `connect_sync`; ``"async"``: `connect`)."""
    from commy.bench.remote import _backend_options

    say = say or (lambda _m: None)
    results: dict[str, dict[str, Any]] = {}
    with _Server() as srv:
        anyio.run(_setup, srv.url, srv.key, srv.ca, srv.root, 8, backend_options=_backend_options())
        for writer in writers:
            subs = srv.subscribers(1)
            try:
                if writer == "blocking":
                    _write_stamps_blocking(srv.url, srv.key, srv.ca, srv.root, samples, gap_s, say)
                else:
                    anyio.run(
                        _write_stamps, srv.url, srv.key, srv.ca, srv.root, samples, gap_s, say,
                        backend_options=_backend_options(),
                    )
            finally:
                ((lat, _events, _changes),) = _collect(subs)
            lat = lat[3:]  # the first pushes include connection warm-up
            results[writer] = latency_summary(lat)
    return results


async def _write_burst(url: str, key: str, ca: str, root: str, variables: int, seconds: float) -> tuple[int, float]:
    """Mirror writes (fire-and-forget, sent back to back) of ``variables`` variables, in
    rounds, for ``seconds``; → (variable writes, elapsed s)."""
    import commy

    ctx = ssl.create_default_context(cafile=ca)
    async with commy.connect(
        url, tenant=TENANT, api_key=key, transport=TRANSPORT, ssl_context=ctx,
        locality="remote", config=_config(root),
    ) as c:
        vf = await c.get_virtual_service_file(SERVICE)
        names = [f"n{i}" for i in range(variables)]
        writes = 0
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            for name in names[:-1]:
                vf.write(name, writes)
                writes += 1
            # One acknowledged write per round: back-pressure, the round is on the server.
            await vf.awrite(names[-1], writes)
            writes += 1
        elapsed = time.monotonic() - start
    return writes, elapsed


def remote_fanout(subscribers: int = 8, variables: int = 8, seconds: float = 2.0, say: Any = None) -> dict[str, Any]:
    """Events per second delivered to ``subscribers`` remote subscribers through the server."""
    from commy.bench.remote import _backend_options

    say = say or (lambda _m: None)
    with _Server() as srv:
        anyio.run(_setup, srv.url, srv.key, srv.ca, srv.root, variables, backend_options=_backend_options())
        subs = srv.subscribers(subscribers)
        say(f"bench events: remote fan-out to {subscribers} subscribers")
        try:
            writes, elapsed = anyio.run(
                _write_burst, srv.url, srv.key, srv.ca, srv.root, variables, seconds,
                backend_options=_backend_options(),
            )
        finally:
            results = _collect(subs)
    events = sum(r[1] for r in results)
    changes = sum(r[2] for r in results)
    return {
        "subscribers": subscribers,
        "writes_per_s": round(writes / elapsed),
        "events_delivered": events,
        "events_per_s": round(events / elapsed),
        "variable_changes_per_s": round(changes / elapsed),
    }
