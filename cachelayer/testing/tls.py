"""Self-signed TLS material for local test servers (the Replicate simulator).

:func:`generate_certificate` makes a throwaway certificate authority and a server
certificate it signs, valid for ``localhost`` and ``127.0.0.1`` (plus any extra names),
and writes them as PEM files into a directory. Clients trust the server by pointing their
CA bundle at :attr:`CertificateFiles.ca_file`, e.g.
``httpx.HTTPTransport(verify=files.ca_file)`` or ``requests.get(url, verify=files.ca_file)``.

A separate CA (rather than one self-signed leaf) keeps the chain valid under OpenSSL's
strict X.509 checks (Python 3.13 turns on ``VERIFY_X509_STRICT`` by default).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateFiles", "generate_certificate", "server_ssl_context"]


@dataclass(frozen=True)
class CertificateFiles:
    """Paths of the PEM files written by :func:`generate_certificate`.

    ``ca_file``: the CA certificate clients should trust. ``cert_file``: the server
    certificate followed by the CA certificate (a full chain). ``key_file``: the server's
    private key, unencrypted. ``directory``: where all three live.
    """

    directory: str
    ca_file: str
    cert_file: str
    key_file: str


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cachelayer test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def generate_certificate(
    directory: str | None = None,
    *,
    dns_names: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1",),
    valid_days: int = 30,
) -> CertificateFiles:
    """Create a CA and a server certificate for ``dns_names`` and ``ip_addresses``.

    Writes ``ca.pem``, ``server.pem`` (chain) and ``server-key.pem`` into ``directory``
    (a new temporary directory when ``None``; the caller removes it). Keys are ECDSA P-256.
    The certificates are valid from one hour ago for ``valid_days`` days. Returns the paths.
    """
    out = Path(directory or tempfile.mkdtemp(prefix="cachelayer-tls-"))
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    not_before = now - dt.timedelta(hours=1)
    not_after = now + dt.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("cachelayer test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    dns = list(dns_names)
    ips = list(ip_addresses)
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[0] if dns else (ips[0] if ips else "localhost")))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files = CertificateFiles(
        directory=str(out),
        ca_file=str(out / "ca.pem"),
        cert_file=str(out / "server.pem"),
        key_file=str(out / "server-key.pem"),
    )
    Path(files.ca_file).write_bytes(ca_pem)
    Path(files.cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    key_path = Path(files.key_file)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return files


def server_ssl_context(files: CertificateFiles) -> ssl.SSLContext:
    """A server-side :class:`ssl.SSLContext` (TLS 1.2+) loaded with ``files``' chain and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx
