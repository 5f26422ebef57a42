"""TLS certificates and SuperNode keys for a real (non-simulated) deployment.

``init_certs`` makes a private certificate authority and a SuperLink server
certificate; ``add_client`` makes one SuperNode authentication key pair. What each file
is, and which Flower 1.32 flag takes it::

    DIR/ca.crt                 CA certificate (PEM)   superlink --ssl-ca-certfile,
                                                      supernode --root-certificates
    DIR/ca.key        (0600)   CA private key (PEM)   nobody; keep it offline
    DIR/server.crt             server cert (PEM)      superlink --ssl-certfile
    DIR/server.key    (0600)   server key (PEM)       superlink --ssl-keyfile
    DIR/supernodes/NAME (0600) SuperNode private key  supernode --auth-supernode-private-key
    DIR/supernodes/NAME.pub    SuperNode public key   flwr supernode register NAME.pub

SuperNode authentication (``flower-superlink --enable-supernode-auth``) needs no
SuperLink key pair in Flower 1.32: the SuperLink only keeps the public keys that
``flwr supernode register`` sends it. Both ends read OpenSSH files and insist on an
elliptic-curve key on a NIST curve, so SuperNode keys are ECDSA P-384 in OpenSSH format
(private: ``-----BEGIN OPENSSH PRIVATE KEY-----``, public: ``ecdsa-sha2-nistp384 ...``).

The server certificate names every ``--host`` as a SubjectAlternativeName: an IP
address becomes an IPAddress entry, anything else a DNSName. SuperNodes must connect with
one of those names. Private keys are created with mode 0600 and every file is written
to a temporary name first and then renamed, so a crash never leaves half a key behind.
Re-running ``init_certs`` with ``force=True`` makes a new CA: every SuperNode then needs
the new ``ca.crt``, but its own key pair stays valid. ``unignored_git_work_tree`` tells
whether the folder lies in a git work tree that does not ignore it, where a ``git add``
would commit the private keys.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
SUPERNODES_DIR = "supernodes"
PUBLIC_KEY_SUFFIX = ".pub"

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
# Flower accepts any NIST curve for SuperNode keys and generates P-384 itself.
CURVE = ec.SECP384R1
# Certificates start a little in the past so small clock skew does not reject them.
CLOCK_SKEW = datetime.timedelta(minutes=5)

_CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class CertPaths:
    """The files ``init_certs`` wrote."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    supernodes_dir: Path


@dataclass(frozen=True)
class ClientKeyPaths:
    """The key pair ``add_client`` wrote for one SuperNode."""

    name: str
    private_key: Path
    public_key: Path


def parse_host(host: str) -> x509.GeneralName:
    """Return the SubjectAlternativeName entry for one ``--host`` value."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    name = name[:-1] if name.endswith(".") else name
    if len(name) > 253 or not name or not all(
        _DNS_LABEL.fullmatch(label) for label in name.split(".")
    ):
        raise ValueError(
            f"invalid host {host!r}: give a DNS name (e.g. superlink.example.org) or "
            "an IP address, without scheme or port"
        )
    return x509.DNSName(host)


def init_certs(
    directory: Path, hosts: list[str], force: bool = False, days: int = 365
) -> CertPaths:
    """Create a CA and a server certificate for ``hosts`` in ``directory``.

    Raises ValueError for no hosts, an invalid host or ``days < 1``, and
    FileExistsError when ``directory`` is not empty and ``force`` is False.
    """
    if not hosts:
        raise ValueError("at least one host is needed for the server certificate")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    sans = _unique([parse_host(host) for host in hosts])
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise FileExistsError(
            f"{directory} is not empty; pass --force to replace its CA and server "
            "certificate (SuperNode keys are kept)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(
        directory=directory,
        ca_cert=directory / CA_CERT,
        ca_key=directory / CA_KEY,
        server_cert=directory / SERVER_CERT,
        server_key=directory / SERVER_KEY,
        supernodes_dir=directory / SUPERNODES_DIR,
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - CLOCK_SKEW, now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(CURVE())
    ca_cert = _ca_certificate(ca_key, not_before, not_after)
    server_key = ec.generate_private_key(CURVE())
    server_cert = _server_certificate(
        server_key, ca_key, ca_cert, sans, hosts[0], not_before, not_after
    )

    _write_atomic(paths.ca_key, _pem_private(ca_key), PRIVATE_MODE)
    _write_atomic(paths.ca_cert, _pem_cert(ca_cert), PUBLIC_MODE)
    _write_atomic(paths.server_key, _pem_private(server_key), PRIVATE_MODE)
    _write_atomic(paths.server_cert, _pem_cert(server_cert), PUBLIC_MODE)
    paths.supernodes_dir.mkdir(exist_ok=True)
    return paths


def add_client(name: str, directory: Path) -> ClientKeyPaths:
    """Create the SuperNode key pair ``directory/supernodes/NAME{,.pub}``.

    Raises ValueError for a bad name, FileNotFoundError when ``directory`` was not made
    by ``init_certs``, and FileExistsError when the client already exists.
    """
    if not _CLIENT_NAME.fullmatch(name):
        raise ValueError(
            f"invalid client name {name!r}: use only letters, digits, '-' and '_'"
        )
    directory = Path(directory)
    if not (directory / CA_CERT).is_file():
        raise FileNotFoundError(
            f"{directory / CA_CERT} not found; run `fedrec certs init` first"
        )
    supernodes = directory / SUPERNODES_DIR
    supernodes.mkdir(exist_ok=True)
    paths = ClientKeyPaths(
        name=name,
        private_key=supernodes / name,
        public_key=supernodes / f"{name}{PUBLIC_KEY_SUFFIX}",
    )
    if paths.private_key.exists() or paths.public_key.exists():
        raise FileExistsError(f"client {name!r} already exists in {supernodes}")

    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.OpenSSH,
        format=serialization.PublicFormat.OpenSSH,
    )
    _write_atomic(paths.private_key, private, PRIVATE_MODE)
    _write_atomic(paths.public_key, public + f" fedrec-{name}\n".encode(), PUBLIC_MODE)
    return paths


def unignored_git_work_tree(directory: Path) -> Path | None:
    """The git work tree that holds ``directory`` when git does not ignore it, else None.

    None too outside a work tree, where git is not installed, or where git cannot tell
    (``git check-ignore`` fails); ``directory`` must exist.
    """
    directory = Path(directory).resolve()
    top = _git(directory, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0 or not top.stdout.strip():
        return None
    ignored = _git(directory, "check-ignore", "-q", str(directory))
    return Path(top.stdout.strip()) if ignored is not None and ignored.returncode == 1 else None


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess | None:
    """``git -C directory ARGS`` (output captured), or None where git cannot be run."""
    try:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedrec CA")])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    sans: list[x509.GeneralName],
    common_name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _unique(names: list[x509.GeneralName]) -> list[x509.GeneralName]:
    seen: list[x509.GeneralName] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temporary file created with ``mode``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)  # the umask may have taken bits off a public file
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
