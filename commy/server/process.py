"""Entry point for a Server in its own process (benchmarks, tests, embedding)."""

from __future__ import annotations

from typing import Any

import anyio

from commy.config import Config


def serve_and_report(config: Config, queue: Any) -> None:
    """Run a Server from ``config`` until killed; put ``(url, admin_key)`` on ``queue`` once
    it listens, so the parent knows where to connect and with which key."""
    from commy.server import Server

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
