"""Certificates for rigd's mTLS: a first installation's CA, server and client certificates
(`rigctl certs init`), and the check that rigd's [tls] files are usable before it listens.

gRPC reports an unusable certificate or key as C-core log lines and a bare failure to add the
port, which reads like a network problem; reading the files here first lets rigd say which file
is wrong and why. Keys are ECDSA P-256: small, fast, and accepted by every gRPC TLS stack.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_CLIENT = "rigctl"
DEFAULT_DAYS = 825  # the longest lifetime browsers ever accepted for a leaf; rotate before
DEFAULT_CA_DAYS = 3650
_BACKDATE = datetime.timedelta(minutes=5)  # clocks of rig and controller may differ a little

Key = ec.EllipticCurvePrivateKey


class CertError(Exception):
    """A certificate or key cannot be made or used; the message names the file and the cause."""


@dataclass(frozen=True, slots=True)
class Issued:
    """What `init` wrote: the CA, rigd's certificate, and one certificate per client name."""

    directory: Path
    server_names: tuple[str, ...]
    clients: tuple[str, ...]

    def path(self, name: str, suffix: str) -> Path:
        return self.directory / f"{name}.{suffix}"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _builder(subject: str, issuer: x509.Name, key: Key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False))


def make_ca(common_name: str, days: int = DEFAULT_CA_DAYS) -> tuple[Key, x509.Certificate]:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(common_name, _name(common_name), key, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: Key, ca_cert: x509.Certificate, common_name: str, *,
          server_names: Sequence[str] = (), days: int = DEFAULT_DAYS
          ) -> tuple[Key, x509.Certificate]:
    """A leaf: a server certificate when `server_names` are given (its SANs), else a client
    certificate whose common name is the identity rigd maps to a role."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(common_name, ca_cert.subject, key, days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, key_encipherment=False, key_cert_sign=False,
                   crl_sign=False, content_commitment=False, data_encipherment=False,
                   key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
            critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def server_names(given: Iterable[str], loopback: bool = True) -> tuple[str, ...]:
    """The names rigd's certificate is valid for: those given (the hostname when none are),
    then loopback, each once."""
    names = [n.strip() for n in given if n.strip()] or [socket.gethostname()]
    if loopback:
        names += LOOPBACK_NAMES
    return tuple(dict.fromkeys(names))


def init(directory: Path, names: Sequence[str], clients: Sequence[str], *,
         days: int = DEFAULT_DAYS, ca_days: int = DEFAULT_CA_DAYS, force: bool = False,
         key_group: int | None = None) -> Issued:
    """Write ca.pem/ca.key, server.pem/server.key and <client>.pem/<client>.key into
    `directory`. Nothing is written if any of them exists, unless `force`. Keys are 0600 (0640
    with `key_group` for server.key, so that rigd's own user may read it)."""
    issued = Issued(directory, tuple(names), tuple(clients))
    targets = [issued.path(n, s) for n in ("ca", "server", *clients) for s in ("pem", "key")]
    existing = [p.name for p in targets if os.path.lexists(p)]
    if existing and not force:
        raise CertError(f"{directory} already holds {', '.join(existing)}; nothing written "
                        "(--force replaces them)")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise CertError(f"cannot create {directory}: {exc.strerror}") from None
    ca_key, ca_cert = make_ca(f"rigd CA {names[0]}", ca_days)
    leaves = [("server", *issue(ca_key, ca_cert, names[0], server_names=names, days=days))]
    leaves += [(c, *issue(ca_key, ca_cert, c, days=days)) for c in clients]
    for name, key, cert in [("ca", ca_key, ca_cert), *leaves]:
        group = key_group if name == "server" else None
        _write(issued.path(name, "key"), key_pem(key), 0o600 if group is None else 0o640, group)
        _write(issued.path(name, "pem"), cert_pem(cert), 0o644)
    return issued


def _write(path: Path, data: bytes, mode: int, group: int | None = None) -> None:
    """Create the file with its final mode from the first byte (a key is never readable by
    others, not even for an instant); an old file is removed, not rewritten in place."""
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            if group is not None:
                os.fchown(f.fileno(), -1, group)
            os.fchmod(f.fileno(), mode)  # not narrowed by the umask
            f.write(data)
    except OSError as exc:
        raise CertError(f"cannot write {path}: {exc.strerror}") from None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {what} {path}: {exc.strerror}") from None


def check_server_files(cert_file: str, key_file: str, ca_file: str) -> None:
    """The [tls] files as rigd will use them: PEM certificates, a key that belongs to the
    first certificate, a CA file with at least one certificate. Raises CertError."""
    try:
        chain = x509.load_pem_x509_certificates(_read(cert_file, "TLS certificate"))
    except ValueError:
        raise CertError(f"TLS certificate {cert_file} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(_read(key_file, "TLS key"), password=None)
    except (ValueError, TypeError) as exc:
        reason = "it is encrypted" if isinstance(exc, TypeError) else "no PEM private key"
        raise CertError(f"TLS key {key_file} is unusable: {reason}") from None
    try:
        x509.load_pem_x509_certificates(_read(ca_file, "client CA"))
    except ValueError:
        raise CertError(f"client CA {ca_file} holds no PEM certificate") from None
    ours = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    if ours != theirs:
        raise CertError(f"TLS key {key_file} does not belong to the certificate {cert_file}")
