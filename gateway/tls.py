"""TLS material: a dev CA and server certificate made with `cryptography`, or production paths.

Dev (`tacet serve --dev`) writes into `<data-dir>/tls/`:
- `ca.pem`          the CA certificate clients trust (`curl --cacert`), 0644;
- `server.pem`      the server certificate (localhost, 127.0.0.1, ::1 and the bind host), 0644;
- `server-key.pem`  the server's private key, PKCS#8 (the only format granian reads), 0600.
The CA's private key is never written: it signs the server certificate and is dropped, so a
stolen data dir cannot mint certificates. When the server certificate is missing, expires within
`RENEW_BEFORE`, or lacks the bind host, CA and certificate are made again (clients re-fetch
`ca.pem`).

Reload: granian's main process answers SIGHUP by starting a new worker (which reads the
certificate and key files again), waiting `respawn_interval` seconds, then stopping the old
worker. Production certificates are therefore replaced by writing the files and sending SIGHUP
to the `tacet serve` process; the new worker also starts its own engine process, so expect one
model load per reload.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["RENEW_BEFORE", "TLSFiles", "ensure_dev_tls"]

RENEW_BEFORE = dt.timedelta(days=7)
_CA_LIFETIME = dt.timedelta(days=365)
_SERVER_LIFETIME = dt.timedelta(days=90)


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    ca: Path | None  # the CA clients should trust; None for production certificates


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode from the first byte (no readable window)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _san_entries(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    else:
        if not address.is_unspecified and x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    return names


def _make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tacet dev CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, host: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _SERVER_LIFETIME)
        .add_extension(x509.SubjectAlternativeName(_san_entries(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _still_good(files: TLSFiles, host: str) -> bool:
    if not (files.cert.is_file() and files.key.is_file() and files.ca and files.ca.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    return all(entry in list(sans) for entry in _san_entries(host))


def ensure_dev_tls(data_dir: Path, host: str = "127.0.0.1") -> TLSFiles:
    """The dev CA and server certificate under `<data-dir>/tls/`, made if absent or stale."""
    directory = data_dir / "tls"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TLSFiles(
        cert=directory / "server.pem", key=directory / "server-key.pem", ca=directory / "ca.pem"
    )
    if _still_good(files, host):
        os.chmod(files.key, 0o600)
        return files
    ca_key, ca_cert = _make_ca()
    key, cert = _make_server_cert(ca_key, ca_cert, host)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(files.key, key_pem, 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    assert files.ca is not None
    _write(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files
