"""Helpers for the server tests: a server on the in-process transport, keys, clients."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import anyio

import commy
from commy.config import ClientConfig, Config, KernelConfig, ServerConfig
from commy.server import Server


def make_config(data_dir: Path, **server: object) -> Config:
    return Config(
        data_dir=str(data_dir),
        kernel=KernelConfig(name="python"),
        client=ClientConfig(transport="inprocess", timeout=10.0),
        server=ServerConfig(transport="inprocess", tls=False, **server),
    )


@asynccontextmanager
async def running(config: Config):
    """``(server, url)`` while a server runs; closed afterwards."""
    server = Server(config)
    try:
        async with anyio.create_task_group() as tg:
            url = await tg.start(server.serve)
            try:
                yield server, url
            finally:
                tg.cancel_scope.cancel()
    finally:
        server.close()


def connect(url: str, config: Config, tenant: str, api_key: str | None, **kw):
    return commy.connect(url, tenant=tenant, api_key=api_key, config=config, **kw)


def local_writer(path: str, count: int, report_url: str | None = None) -> None:
    """Run in a separate (spawned) process: write ``counter`` 1..count through the mapping."""
    import time

    from commy.virtual_file import VirtualServiceFile

    with VirtualServiceFile.open(path) as vf:
        for i in range(1, count + 1):
            vf.write("counter", i)
            vf.write("label", f"n{i}")
            time.sleep(0.002)
