"""Tests for :mod:`fedrec.runtime.certs`: files, modes, the chain, SANs and SuperNode keys."""

from __future__ import annotations

import ipaddress
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedrec.runtime.certs import add_client, init_certs

HOSTS = ["localhost", "superlink.example.org", "127.0.0.1", "::1"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return init_certs(tmp_path_factory.mktemp("certs") / "pki", HOSTS)


def test_init_makes_the_files_with_private_keys_0600(certs):
    for path in (certs.ca_cert, certs.ca_key, certs.server_cert, certs.server_key):
        assert path.is_file()
    assert certs.supernodes_dir.is_dir()
    assert _mode(certs.ca_key) == 0o600
    assert _mode(certs.server_key) == 0o600
    assert _mode(certs.ca_cert) == 0o644
    assert _mode(certs.server_cert) == 0o644
    assert not [p for p in certs.directory.iterdir() if p.name.endswith(".tmp")]


def test_server_cert_is_issued_by_the_ca_with_the_given_sans(certs):
    ca, server = _cert(certs.ca_cert), _cert(certs.server_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.verify_directly_issued_by(ca)
    server.verify_directly_issued_by(ca)
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "superlink.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    key = serialization.load_pem_private_key(certs.server_key.read_bytes(), None)
    assert key.public_key() == server.public_key()


def test_second_init_is_refused_without_force(tmp_path):
    first = init_certs(tmp_path, ["localhost"], days=1)
    old_ca = first.ca_cert.read_bytes()
    with pytest.raises(FileExistsError, match="--force"):
        init_certs(tmp_path, ["localhost"])
    assert first.ca_cert.read_bytes() == old_ca
    init_certs(tmp_path, ["localhost"], force=True)
    assert first.ca_cert.read_bytes() != old_ca


@pytest.mark.parametrize(
    "hosts",
    [[], [""], ["https://x.org"], ["x.org:9092"], ["bad host"], ["-x.org"], ["a..b"]],
)
def test_bad_hosts_are_refused(tmp_path, hosts):
    with pytest.raises(ValueError, match="host"):
        init_certs(tmp_path / "pki", hosts)
    assert not (tmp_path / "pki").exists()


def test_client_key_pair_loads_like_flower_loads_it(certs):
    paths = add_client("node-1_a", certs.directory)
    assert _mode(paths.private_key) == 0o600
    assert _mode(paths.public_key) == 0o644
    # flwr/supernode/cli/flower_supernode.py reads --auth-supernode-private-key with
    # load_ssh_private_key; flwr/cli/supernode/register.py reads the public key with
    # load_ssh_public_key. Both want an EC key on a NIST curve.
    private = serialization.load_ssh_private_key(paths.private_key.read_bytes(), None)
    public = serialization.load_ssh_public_key(paths.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP384R1)
    assert private.public_key() == public
    assert paths.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")


def test_existing_or_bad_client_names_are_refused(certs, tmp_path):
    add_client("twice", certs.directory)
    with pytest.raises(FileExistsError, match="twice"):
        add_client("twice", certs.directory)
    for name in ["", "a/b", "../x", "a b", ".hidden"]:
        with pytest.raises(ValueError, match="client name"):
            add_client(name, certs.directory)
    with pytest.raises(FileNotFoundError, match="init"):
        add_client("node", tmp_path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_grpc_tls_handshake_needs_the_ca(certs, tmp_path):
    options = [("grpc.so_reuseport", 0)]
    server = grpc.server(ThreadPoolExecutor(max_workers=1), options=options)
    credentials = grpc.ssl_server_credentials(
        [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())]
    )
    port = server.add_secure_port(f"127.0.0.1:{_free_port()}", credentials)
    server.start()
    try:
        trusted = grpc.ssl_channel_credentials(certs.ca_cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", trusted) as channel:
            grpc.channel_ready_future(channel).result(timeout=5)

        other = init_certs(tmp_path / "other", ["127.0.0.1"])
        untrusted = grpc.ssl_channel_credentials(other.ca_cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", untrusted) as channel:
            with pytest.raises(grpc.FutureTimeoutError):
                grpc.channel_ready_future(channel).result(timeout=1)
    finally:
        server.stop(grace=None)
