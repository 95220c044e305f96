"""Where exports go and are read back from: a local folder, or S3 with SSE-KMS and Object Lock.

Every S3 object is written with its SHA-256 checksum (S3 checks it on receipt), SSE-KMS under the
given key, and Object Lock retention set per object, so no one (in COMPLIANCE mode, not even the
account root) can delete or overwrite it before the retention date.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from compliance.audit.errors import ExportError

__all__ = [
    "Destination",
    "FolderDestination",
    "FolderSource",
    "S3Destination",
    "S3Location",
    "S3Source",
    "Source",
    "s3_client",
]


class Destination(Protocol):
    def put(self, name: str, data: bytes) -> None: ...


class Source(Protocol):
    def get(self, name: str) -> bytes:
        """The object's bytes; FileNotFoundError when absent."""
        ...

    def describe(self, name: str) -> dict[str, Any]:
        """Storage facts worth reporting (encryption, retention); {} for a folder."""
        ...


class FolderDestination:
    """A new or empty folder; files are created exclusively, never overwritten."""

    def __init__(self, root: Path) -> None:
        if root.exists() and any(root.iterdir()):
            raise ExportError("the export folder is not empty")
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root = root

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


class FolderSource:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise FileNotFoundError(name)  # a manifest naming ../something is not followed
        return path.read_bytes()

    def describe(self, name: str) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not url.startswith("s3://"):
            raise ExportError("an S3 location is s3://bucket/prefix")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ExportError("an S3 location is s3://bucket/prefix")
        return cls(bucket, prefix.strip("/"))

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name


def _error_code(exc: Exception) -> str:
    """botocore's error code (e.g. AccessDenied): enough to act on, and never content."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code or type(exc).__name__)


def s3_client(service: str = "s3") -> Any:
    """A boto3 client; endpoint and credentials come from the usual AWS environment."""
    try:
        import boto3
    except ImportError:
        raise ExportError("S3 exports need boto3 (pip install boto3)") from None
    return boto3.client(service)


class S3Destination:
    def __init__(
        self,
        client: Any,
        location: S3Location,
        *,
        kms_key_id: str,
        retention: timedelta,
        lock_mode: str = "COMPLIANCE",
    ) -> None:
        if lock_mode not in ("COMPLIANCE", "GOVERNANCE"):
            raise ExportError("Object Lock mode is COMPLIANCE or GOVERNANCE")
        self.client, self.location = client, location
        self.kms_key_id, self.retention, self.lock_mode = kms_key_id, retention, lock_mode

    def put(self, name: str, data: bytes) -> None:
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        try:
            self.client.put_object(
                Bucket=self.location.bucket,
                Key=self.location.key(name),
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                ServerSideEncryption="aws:kms",
                SSEKMSKeyId=self.kms_key_id,
                ObjectLockMode=self.lock_mode,
                ObjectLockRetainUntilDate=datetime.now(UTC) + self.retention,
            )
        except Exception as exc:  # botocore's errors: the code is enough to act on
            raise ExportError(f"S3 PutObject failed for {name} ({_error_code(exc)})") from None


class S3Source:
    def __init__(self, client: Any, location: S3Location) -> None:
        self.client, self.location = client, location

    def get(self, name: str) -> bytes:
        try:
            answer = self.client.get_object(
                Bucket=self.location.bucket, Key=self.location.key(name), ChecksumMode="ENABLED"
            )
        except Exception as exc:
            code = _error_code(exc)
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(name) from None
            raise ExportError(f"S3 GetObject failed for {name} ({code})") from None
        return bytes(answer["Body"].read())

    def describe(self, name: str) -> dict[str, Any]:
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(name))
        except Exception as exc:
            raise ExportError(f"S3 HeadObject failed for {name} ({_error_code(exc)})") from None
        until = head.get("ObjectLockRetainUntilDate")
        return {
            "sse": head.get("ServerSideEncryption"),
            "kms_key": head.get("SSEKMSKeyId"),
            "lock_mode": head.get("ObjectLockMode"),
            "retain_until": until.isoformat() if isinstance(until, datetime) else until,
        }
