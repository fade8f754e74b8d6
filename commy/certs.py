"""Development certificates: a CA, a server certificate and client certificates.

Enough to try TLS and mTLS in a minute (`commy certs`), and what the server generates
for itself when ``server.tls`` is on and no certificate is configured. Keys are EC P-256
(fast to make), written ``0600`` in a ``0700`` directory. Not a replacement for a real
PKI: the CA key sits next to the certificates.

A client certificate carries its identity twice: the subject CN (the principal name) and,
when a tenant is given, a SAN URI ``commy://<tenant>/<principal>`` that the default
``mtls.rules`` map to that tenant's principal.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from pathlib import Path

import attrs

from commy.errors import ConfigError, FileError
from commy.names import check_object_name

log = logging.getLogger(__name__)

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_CERT, SERVER_KEY = "server.pem", "server-key.pem"
DEV_TLS_DIR = "tls"  # under the data dir


@attrs.frozen
class Issued:
    cert_file: Path
    key_file: Path


def _x509():
    # cryptography is imported lazily: most commy processes never touch certificates.
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - a dependency of commy
        raise ConfigError("certificates need the 'cryptography' package: pip install cryptography") from exc
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _private_dir(directory: str | os.PathLike[str]) -> Path:
    d = Path(directory).expanduser()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise FileError(f"cannot create certificate directory {str(d)!r}: {exc}") from exc
    return d


def _write(path: Path, data: bytes, mode: int) -> None:
    # Open with the final mode so a private key is never readable by others, not even briefly.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _new_key():
    _, _, _, ec, _, _ = _x509()
    return ec.generate_private_key(ec.SECP256R1())


def _save(directory: Path, stem: str, cert, key) -> Issued:
    _, _, serialization, _, _, _ = _x509()
    cert_file = directory / f"{stem}.pem"
    key_file = directory / f"{stem}-key.pem"
    _write(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(cert_file, key_file)


def _validity(days: float, not_before: dt.datetime | None, not_after: dt.datetime | None):
    now = dt.datetime.now(dt.UTC)
    start = not_before or now - dt.timedelta(minutes=5)  # tolerate small clock skew
    end = not_after or now + dt.timedelta(days=days)
    return start, end


def create_ca(directory: str | os.PathLike[str], name: str = "commy development CA", days: float = 3650) -> Issued:
    """A self-signed CA in ``directory`` (``ca.pem``, ``ca-key.pem``)."""
    x509, hashes, _, _, _, NameOID = _x509()
    d = _private_dir(directory)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = _validity(days, None, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _save(d, "ca", cert, key)


def _load_ca(directory: Path):
    x509, _, serialization, _, _, _ = _x509()
    cert_file, key_file = directory / CA_CERT, directory / CA_KEY
    if not cert_file.is_file() or not key_file.is_file():
        raise ConfigError(f"no CA in {str(directory)!r}: run `commy certs init --dir {directory}` first")
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    return cert, key


def _issue(
    directory: Path,
    stem: str,
    common_name: str,
    sans: list,
    server: bool,
    days: float,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    x509, hashes, _, _, EKU, NameOID = _x509()
    ca_cert, ca_key = _load_ca(directory)
    key = _new_key()
    start, end = _validity(days, not_before, not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([EKU.SERVER_AUTH if server else EKU.CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _save(directory, stem, cert, key)


def issue_server_cert(
    directory: str | os.PathLike[str], hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"), days: float = 825
) -> Issued:
    """``server.pem`` / ``server-key.pem`` for ``hosts`` (DNS names or IP addresses)."""
    x509 = _x509()[0]
    sans: list = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return _issue(Path(directory).expanduser(), "server", hosts[0] if hosts else "commy server", sans, True, days)


def client_uri(tenant: str, principal: str) -> str:
    return f"commy://{tenant}/{principal}"


def issue_client_cert(
    directory: str | os.PathLike[str],
    principal: str,
    tenant: str | None = None,
    *,
    days: float = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    stem: str | None = None,
) -> Issued:
    """``client-<principal>.pem`` / ``-key.pem``: CN = principal, SAN URI for the tenant."""
    x509 = _x509()[0]
    check_object_name("principal", principal)
    sans: list = []
    if tenant is not None:
        check_object_name("tenant", tenant)
        sans.append(x509.UniformResourceIdentifier(client_uri(tenant, principal)))
    return _issue(
        Path(directory).expanduser(), stem or f"client-{principal}", principal, sans, False, days,
        not_before, not_after,
    )


def ensure_dev_server_cert(data_dir: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """``(cert, key, ca)`` of the server's development certificate, made on first use.

    Lives in ``<data_dir>/tls/``; the CA there lets clients verify the server
    (``client.ca_file``) and can issue client certificates (`commy certs client --dir`).
    """
    d = _private_dir(Path(data_dir).expanduser() / DEV_TLS_DIR)
    cert, key, ca = d / SERVER_CERT, d / SERVER_KEY, d / CA_CERT
    if not (cert.is_file() and key.is_file() and ca.is_file()):
        if not (ca.is_file() and (d / CA_KEY).is_file()):
            create_ca(d)
        issue_server_cert(d)
        log.info(
            "no server.cert_file configured: generated a development certificate in %s "
            "(clients verify it with client.ca_file = %s)", d, ca,
        )
    return cert, key, ca
