"""WSS transport plugin for commy: WebSocket over TLS.

Transports ``wss`` (httpx-ws client) and ``wss-lean`` (lean client), one server:
anyio TLS listener + wsproto upgrade + hand-written RFC 6455 frames.
"""
