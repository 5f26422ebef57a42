"""Ledger signing keys (Ed25519) and device countersignatures (OpenSSH ECDSA P-384)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedrec.core.privacy.signing import (
    LedgerSigner,
    SigningError,
    default_signing_key_path,
    read_public_key,
    release_statement,
    sign_release,
    verify_ed25519,
    verify_release,
    write_public_key,
)
from fedrec.runtime.certs import add_client, init_certs


def test_key_file_is_created_0600_in_a_0700_directory_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "home" / "ledger-signing.key"
    signer = LedgerSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_bytes()) == 32
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    again = LedgerSigner.load_or_create(path)
    assert again.public_key_hex() == signer.public_key_hex() and len(signer.public_key_hex()) == 64


def test_a_group_readable_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger-signing.key"
    LedgerSigner.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(SigningError, match="group/others.*0644"):
        LedgerSigner.load_or_create(path)


def test_a_malformed_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger-signing.key"
    path.write_bytes(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(SigningError, match="32 raw bytes"):
        LedgerSigner.load_or_create(path)


def test_default_path_follows_fedrec_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDREC_HOME", str(tmp_path / "h"))
    assert default_signing_key_path() == tmp_path / "h" / "ledger-signing.key"
    monkeypatch.delenv("FEDREC_HOME")
    assert default_signing_key_path() == Path.home() / ".fedrec" / "ledger-signing.key"


def test_verify_ok_tampered_and_wrong_key() -> None:
    signer, other = LedgerSigner.generate(), LedgerSigner.generate()
    signature = signer.sign(b"statement")
    assert verify_ed25519(signer.public_key_hex(), b"statement", signature)
    assert not verify_ed25519(signer.public_key_hex(), b"statemenT", signature)
    assert not verify_ed25519(other.public_key_hex(), b"statement", signature)
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert not verify_ed25519(signer.public_key_hex(), b"statement", flipped)
    assert not verify_ed25519("zz", b"statement", signature) and not verify_ed25519(signer.public_key_hex(),
                                                                                   b"statement", "12")


def test_public_key_file_round_trip_and_malformed(tmp_path: Path) -> None:
    signer = LedgerSigner.generate()
    write_public_key(tmp_path / "k.pub", signer.public_key_hex())
    assert read_public_key(tmp_path / "k.pub") == signer.public_key_hex()
    (tmp_path / "bad.pub").write_text("not a key\n")
    with pytest.raises(SigningError, match="not a ledger public key"):
        read_public_key(tmp_path / "bad.pub")
    with pytest.raises(SigningError, match="no such public key file"):
        read_public_key(tmp_path / "missing.pub")


def test_release_statement_is_canonical() -> None:
    statement = release_statement("run-1", 3, "client:7", "replace-one", 1.1, 1.0, 1, 0.25, "train")
    assert statement == (b'{"epsilon":"0.25","noise_multiplier":"1.1","relation":"replace-one","release":"train",'
                         b'"round":3,"run_id":"run-1","sample_rate":"1.0","steps":1,"who":"client:7"}')
    assert release_statement("r", 1, "c", "add-remove", 1.0, 1.0, 1, float("inf"), "evaluate").count(b'"inf"') == 1


def test_device_statement_sign_and_verify_with_a_certs_client_key(tmp_path: Path) -> None:
    init_certs(tmp_path / "certs", ["localhost"])
    device = add_client("device-1", tmp_path / "certs")
    other = add_client("device-2", tmp_path / "certs")
    statement = release_statement("run-1", 3, "client:7", "replace-one", 1.1, 1.0, 1, 0.25, "train")
    signature = sign_release(device.private_key, statement)
    public = device.public_key.read_text()
    assert public.startswith("ecdsa-sha2-nistp384 ")
    assert verify_release(public, statement, signature)
    assert not verify_release(public, statement.replace(b"0.25", b"0.26"), signature)
    assert not verify_release(other.public_key.read_text(), statement, signature)
    assert not verify_release("ssh-ed25519 garbage", statement, signature)


def test_sign_release_refuses_a_non_ecdsa_or_unreadable_key(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="cannot read"):
        sign_release(tmp_path / "missing", b"x")
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(SigningError, match="OpenSSH private key"):
        sign_release(tmp_path / "junk", b"x")
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption()))
    assert verify_release(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                        serialization.PublicFormat.OpenSSH).decode(),
                          b"x", sign_release(tmp_path / "pem", b"x"))
