"""Transports: how protocol messages travel between a client and the server.

One contract, several implementations (like httpx's transports): the built-in
in-process transport (anyio memory streams, for tests and embedding) and, as plugins,
WSS (`plugins/commy_transport_wss`) and whatever a user registers.
"""

from commy.transports.base import (
    BlockingConnection,
    ClientOptions,
    Connection,
    ConnectionHandler,
    PeerInfo,
    ServerOptions,
    Transport,
)

__all__ = [
    "BlockingConnection",
    "ClientOptions", "Connection", "ConnectionHandler", "PeerInfo", "ServerOptions",
    "Transport",
]
