"""The main job behind ``make demo`` / ``commy demo``.

An embedded default set-up, everything in a temporary directory:

1. a throwaway CA and a server certificate for 127.0.0.1 (`commy.certs`);
2. a commy `Server` on loopback over WSS (TLS) in this process, an admin key, a tenant
   ``demo`` and a service ``sensors`` with five typed variables;
3. a **local writer** process: connects, is told where the service file is, proves it is
   on the same machine, maps the file and writes straight into it;
4. a **remote reader** process: connects with ``locality="remote"``, so it gets an
   in-memory mirror that the server keeps current over the TLS WebSocket, and prints
   each `FileChangeEvent` with the new values as it arrives.

Exits 0 once the reader has seen the writer's final values, 1 otherwise (or after
`DEADLINE_S`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

TENANT = "demo"
SERVICE = "sensors"
VARIABLES = {
    "counter": "i64",
    "temperature": "f64",
    "status": "str[32]",
    "samples": "f64[4]",
    "ready": "bool",
}
UPDATES = 20
INTERVAL_S = 0.15
#: the whole demo, start-up included, gives up after this
DEADLINE_S = 45.0


def _values(i: int) -> dict[str, Any]:
    return {
        "counter": i,
        "temperature": 20.0 + i / 4,
        "status": f"tick {i}",
        "samples": [float(i), i * 2.0, i * 3.0, i * 4.0],
        "ready": i == UPDATES,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value)


def _say(who: str, text: str) -> None:
    print(f"[{who}] {text}", flush=True)


def _ssl(ca_file: str):
    import ssl

    return ssl.create_default_context(cafile=ca_file)


# ---------------------------------------------------------------- the two client processes


def _writer(url: str, key: str, ca_file: str, config: Any, reader_ready: Any) -> None:
    """Local writer: maps the service file and writes through the mapping."""

    async def main() -> None:
        import commy

        async with commy.connect(
            url, tenant=TENANT, api_key=key, ssl_context=_ssl(ca_file), locality="local", config=config
        ) as client:
            vf = await client.get_virtual_service_file(SERVICE)
            who = f"local writer  pid {os.getpid()}"
            _say(who, f"local: mapped {Path(str(vf.path)).name} (vf.is_local={vf.is_local}); "
                      "writes go straight into shared memory")
            await anyio.to_thread.run_sync(reader_ready.wait, 30)
            for i in range(1, UPDATES + 1):
                values = _values(i)
                with vf.batch():  # one commit per tick: the reader sees one event each
                    for name, value in values.items():
                        vf.write(name, value)
                _say(who, f"wrote   counter={i} temperature={_fmt(values['temperature'])}")
                await anyio.sleep(INTERVAL_S)
            vf.close()

    anyio.run(main)


def _reader(url: str, key: str, ca_file: str, config: Any, ready: Any, result: Any) -> None:
    """Remote reader: a mirror kept current by the server, printing every change event."""

    async def main() -> None:
        import commy

        async with commy.connect(
            url, tenant=TENANT, api_key=key, ssl_context=_ssl(ca_file), locality="remote", config=config
        ) as client:
            vf = await client.get_virtual_service_file(SERVICE)
            who = f"remote reader pid {os.getpid()}"
            _say(who, f"remote: mirror over {url} (vf.is_local={vf.is_local}); "
                      "the server pushes every change")
            vf.start_file_monitoring()
            ready.set()
            with anyio.move_on_after(DEADLINE_S):
                async for ev in vf.changes():
                    shown = ", ".join(f"{n}={_fmt(vf.read(n))}" for n in ev.variables if n in vf)
                    _say(who, f"event   seq {ev.old_seq}->{ev.new_seq}: {shown}")
                    if vf.read("ready") and vf.read("counter") == UPDATES:
                        break
            result.value = vf.read("counter")
            vf.close()

    anyio.run(main)


# ---------------------------------------------------------------- the embedded server


def _dev_certs(directory: Path) -> tuple[str, str, str]:
    """(ca, server cert, server key) for 127.0.0.1, made fresh for this run."""
    from commy.certs import create_ca, issue_server_cert

    ca = create_ca(directory, name="commy demo CA", days=1)
    server = issue_server_cert(directory, hosts=("127.0.0.1", "localhost"), days=1)
    return str(ca.cert_file), str(server.cert_file), str(server.key_file)


def _config(root: Path, cert: str, key: str, ca: str) -> Any:
    from commy.config import ClientConfig, Config, ServerConfig, load_config

    # Only the kernel choice comes from the user's config/env: everything else is the
    # demo's own, so a commy.toml lying around cannot break it.
    base = load_config()
    return Config(
        data_dir=str(root / "data"),
        kernel=base.kernel,
        server=ServerConfig(host="127.0.0.1", port=0, transport="wss", tls=True, cert_file=cert, key_file=key),
        client=ClientConfig(ca_file=ca, timeout=20.0),
    )


async def _run(root: Path, show) -> int:
    import commy
    from commy.server import Server

    show("commy demo: generating a development CA and server certificate ...")
    ca, cert, key_file = _dev_certs(root / "tls")
    config = _config(root, cert, key_file, ca)
    show("commy demo: starting the server ...")
    server = Server(config)
    try:
        async with anyio.create_task_group() as tg:
            url = await tg.start(server.serve)
            key = server.create_admin_key(description="commy demo")
            async with commy.connect(url, tenant=TENANT, api_key=key, ssl_context=_ssl(ca), config=config) as admin:
                await admin.create_tenant(TENANT)
                await admin.create_service(SERVICE)
                for name, vtype in VARIABLES.items():
                    await admin.allocate_variable(SERVICE, name, vtype)
            show("")
            print("commy demo: one local writer and one remote reader share a service")
            print(f"  server     {url}  (TLS with a throwaway dev CA: {ca})")
            print(f"  data root  {config.data_path}")
            print(f"  service    {TENANT}/{SERVICE}: "
                  + ", ".join(f"{n} {t}" for n, t in VARIABLES.items()))
            print(f"  writer     maps the service file and writes {UPDATES} updates, {INTERVAL_S} s apart")
            print("  reader     forced remote: a mirror over WSS, printing each change event\n", flush=True)
            code = await _clients(url, key, ca, config)
            tg.cancel_scope.cancel()
    finally:
        server.close()
    return code


async def _clients(url: str, key: str, ca: str, config: Any) -> int:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    result = ctx.Value("q", -1)
    reader = ctx.Process(target=_reader, args=(url, key, ca, config, ready, result), name="commy-demo-reader")
    writer = ctx.Process(target=_writer, args=(url, key, ca, config, ready), name="commy-demo-writer")
    reader.start()
    writer.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        for proc in (writer, reader):
            await anyio.to_thread.run_sync(proc.join, max(0.1, deadline - time.monotonic()))
    finally:
        for proc in (writer, reader):
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    ok = writer.exitcode == 0 and reader.exitcode == 0 and result.value == UPDATES
    print()
    if ok:
        print(f"commy demo: OK - the remote reader saw the local writer's final values (counter={UPDATES})")
    else:
        print(f"commy demo: FAILED - writer exit {writer.exitcode}, reader exit {reader.exitcode}, "
              f"reader saw counter={result.value} (expected {UPDATES})")
    return 0 if ok else 1


def run_demo(progress: bool = True) -> int:
    from commy.commands._common import progress_printer

    show = progress_printer(progress)
    with tempfile.TemporaryDirectory(prefix="commy-demo-") as tmp:
        return anyio.run(_run, Path(tmp), show)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())
