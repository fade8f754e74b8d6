"""A real commy Server over WSS (TLS, dev certificates) in a spawned process, for tests that
need the server outside the test's own event loop (sync facade, ``commy watch``, docs)."""

from __future__ import annotations

import multiprocessing
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs


@attrs.frozen
class ServerInfo:
    url: str
    admin_key: str
    ca_file: str
    data_dir: str

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def client_env(self) -> dict[str, str]:
        """Environment for a `commy` command or script talking to this server."""
        return {
            "COMMY_CLIENT_URL": self.url,
            "COMMY_CLIENT_API_KEY": self.admin_key,
            "COMMY_CLIENT_CA_FILE": self.ca_file,
        }


def _serve(data_dir: str, cert: str, key: str, queue) -> None:
    import anyio

    from commy.config import Config, KernelConfig, ServerConfig
    from commy.server import Server

    config = Config(
        data_dir=data_dir,
        kernel=KernelConfig(name="python"),
        server=ServerConfig(host="127.0.0.1", port=0, transport="wss", tls=True, cert_file=cert, key_file=key),
    )

    async def main() -> None:
        server = Server(config)
        try:
            async with anyio.create_task_group() as tg:
                url = await tg.start(server.serve)
                queue.put((url, server.create_admin_key()))
                await anyio.sleep_forever()
        finally:
            server.close()

    anyio.run(main)


@contextmanager
def server_process(root: Path) -> Iterator[ServerInfo]:
    from commy.certs import create_ca, issue_server_cert

    tls = root / "tls"
    ca = create_ca(tls, days=1)
    cert = issue_server_cert(tls, hosts=("127.0.0.1", "localhost"), days=1)
    data = root / "data"
    mp = multiprocessing.get_context("spawn")
    queue = mp.Queue()
    proc = mp.Process(target=_serve, args=(str(data), str(cert.cert_file), str(cert.key_file), queue), daemon=True)
    proc.start()
    try:
        url, key = queue.get(timeout=60)
        yield ServerInfo(url, key, str(ca.cert_file), str(data))
    finally:
        proc.terminate()
        proc.join(10)
