"""Signers behind one interface: a local Ed25519 key (dev) and an AWS KMS asymmetric key.

A verifier needs only the public key (PEM) or its fingerprint, `sha256:<hex of the DER
SubjectPublicKeyInfo>`, taken out of band. KMS signs with ECDSA_SHA_256 on an ECC_NIST_P256 key:
the private key never leaves KMS, and each `Sign` call is itself a CloudTrail event.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from compliance.audit.errors import SignerError

__all__ = [
    "LOCAL_KEY_FILE",
    "Ed25519Signer",
    "KmsSigner",
    "Signer",
    "fingerprint",
    "verify_signature",
]

LOCAL_KEY_FILE = "audit-signing-key.pem"


class Signer(Protocol):
    algorithm: str  # "ed25519" or "ecdsa-p256-sha256"

    def public_key_pem(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


def fingerprint(public_pem: bytes) -> str:
    """`sha256:` + hex SHA-256 of the key's DER SubjectPublicKeyInfo."""
    key = serialization.load_pem_public_key(public_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def verify_signature(public_pem: bytes, data: bytes, signature: bytes) -> bool:
    """True when `signature` over `data` verifies under the key (Ed25519 or ECDSA P-256)."""
    try:
        key = serialization.load_pem_public_key(public_pem)
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class Ed25519Signer:
    """A local key in a PEM file (PKCS#8, unencrypted, mode 0600)."""

    algorithm = "ed25519"

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Ed25519Signer:
        """The data dir's key, created 0600 (O_EXCL, never readable by others) when absent."""
        path = data_dir / LOCAL_KEY_FILE
        try:
            if path.exists():
                return cls.load(path)
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = ed25519.Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            return cls(key)
        except FileExistsError:  # another process created it first
            return cls.load(path)
        except OSError as exc:
            raise SignerError(f"cannot create the local audit key ({type(exc).__name__})") from None

    @classmethod
    def load(cls, path: Path) -> Ed25519Signer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise SignerError(f"cannot load the audit key ({type(exc).__name__})") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise SignerError("the local audit key is not an Ed25519 key")
        return cls(key)

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class KmsSigner:
    """An AWS KMS asymmetric key (KeyUsage SIGN_VERIFY, KeySpec ECC_NIST_P256)."""

    algorithm = "ecdsa-p256-sha256"

    def __init__(self, key_id: str, client: Any | None = None) -> None:
        if client is None:
            try:
                import boto3
            except ImportError:
                raise SignerError("KMS signing needs boto3 (pip install boto3)") from None
            client = boto3.client("kms")
        self._client = client
        self._key_id = key_id
        self._public: bytes | None = None

    def public_key_pem(self) -> bytes:
        if self._public is None:
            try:
                der = self._client.get_public_key(KeyId=self._key_id)["PublicKey"]
            except Exception as exc:  # botocore errors: no content in them, but keep it opaque
                raise SignerError(f"KMS GetPublicKey failed ({type(exc).__name__})") from None
            key = serialization.load_der_public_key(der)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise SignerError("the KMS key is not an ECC key")
            self._public = key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return self._public

    def sign(self, data: bytes) -> bytes:
        """KMS hashes RAW messages itself (SHA-256); callers sign short statements that
        already pin a SHA-256 (see export.signed_statement), well under KMS's 4096-byte cap."""
        if len(data) > 4096:
            raise SignerError("KMS signs at most 4096 bytes; sign a statement of the hash")
        try:
            answer = self._client.sign(
                KeyId=self._key_id,
                Message=data,
                MessageType="RAW",
                SigningAlgorithm="ECDSA_SHA_256",
            )
        except Exception as exc:
            raise SignerError(f"KMS Sign failed ({type(exc).__name__})") from None
        return bytes(answer["Signature"])
