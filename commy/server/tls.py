"""The server's TLS context, built from config.

``server.cert_file`` / ``key_file`` serve TLS; ``client_ca_file`` makes the handshake
verify client certificates against that CA (optional by default so API-key clients can
share the listener; ``client_cert_required`` refuses clients without one). With
``server.tls`` on and no certificate configured a development certificate is generated
into the data dir (`commy.certs.ensure_dev_server_cert`).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from commy.config import Config
from commy.errors import ConfigError

log = logging.getLogger(__name__)


def server_ssl_context(config: Config, data_path: Path | None = None) -> ssl.SSLContext | None:
    """None when ``server.tls`` is off; ConfigError for unreadable files."""
    cfg = config.server
    if not cfg.tls or (cfg.transport == "inprocess" and not cfg.cert_file):
        return None  # the in-process transport never leaves the process: nothing to encrypt
    cert_file, key_file = cfg.cert_file, cfg.key_file
    if not cert_file:
        from commy.certs import ensure_dev_server_cert

        cert, key, _ca = ensure_dev_server_cert(data_path or config.data_path)
        cert_file, key_file = str(cert), str(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load server.cert_file {cert_file!r} / server.key_file {key_file!r}: {exc}"
        ) from None
    if cfg.client_ca_file:
        try:
            ctx.load_verify_locations(cfg.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load server.client_ca_file {cfg.client_ca_file!r}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.client_cert_required else ssl.CERT_OPTIONAL
    elif cfg.client_cert_required:
        raise ConfigError("server.client_cert_required needs server.client_ca_file")
    return ctx
