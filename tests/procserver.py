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
    from commy.config import Config, KernelConfig, ServerConfig
    from commy.server.process import serve_and_report

    serve_and_report(
        Config(
            data_dir=data_dir,
            kernel=KernelConfig(name="python"),
            server=ServerConfig(host="127.0.0.1", port=0, transport="wss", tls=True, cert_file=cert, key_file=key),
        ),
        queue,
    )


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


def _serve_config(config, ready) -> None:
    import anyio

    from commy.server import Server

    async def main() -> None:
        server = Server(config)
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            ready.set()
            await anyio.sleep_forever()

    anyio.run(main)


class RestartableServer:
    """A Server over WSS/TLS (trustme certificate) on a fixed port and data dir, in a
    spawned process that tests kill with SIGKILL and start again."""

    def __init__(self, root: Path) -> None:
        import socket

        import trustme

        from commy.config import ClientConfig, Config, KernelConfig, ServerConfig
        from commy.server import Server

        ca = trustme.CA()
        chain = root / "chain.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(chain))
        self.ssl_context = ssl.create_default_context()
        ca.configure_trust(self.ssl_context)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"wss://127.0.0.1:{port}/commy"
        self.config = Config(
            data_dir=str(root / "data"),
            kernel=KernelConfig(name="python"),
            client=ClientConfig(transport="wss-lean", timeout=10.0),
            server=ServerConfig(port=port, cert_file=str(chain), key_file=str(chain)),
        )
        setup = Server(self.config)
        self.admin_key = setup.create_admin_key()
        setup.close()
        self.proc = None

    def start(self) -> None:
        mp = multiprocessing.get_context("spawn")
        ready = mp.Event()
        self.proc = mp.Process(target=_serve_config, args=(self.config, ready), daemon=True)
        self.proc.start()
        assert ready.wait(30), "server did not start"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # SIGKILL
            self.proc.join(10)
            self.proc = None
