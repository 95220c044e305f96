"""S3 reading and writing for jobs: inputs are streamed, never written to local disk.

The submitter streams the input object once to cut it into shards of `shard_size` records (a
record is a non-blank line), noting each shard's physical line range and, for an uncompressed
object, its byte range. A worker then reads only its shard: a ranged GET for plain JSONL; for
gzip (not seekable) it streams from the start, skipping lines before the shard, and stops
reading at the shard's end. Chunks live in memory only for as long as one line needs them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.jobs.errors import InputUnreadable, JobInvalid, OutputUnwritable

__all__ = [
    "S3Uri",
    "ShardPlan",
    "compression_of",
    "error_code",
    "object_exists",
    "plan_shards",
    "put_object",
    "read_shard",
    "s3_client",
]

_CHUNK = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str  # an object key, or a prefix without trailing slash

    @classmethod
    def parse(cls, uri: str, *, prefix: bool = False) -> S3Uri:
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise JobInvalid("invalid_uri")
        bucket, _, key = uri[len("s3://") :].partition("/")
        key = key.strip("/") if prefix else key
        if not bucket or (not key and not prefix) or len(uri) > 1024:
            raise JobInvalid("invalid_uri")
        return cls(bucket, key)

    def child(self, name: str) -> S3Uri:
        return S3Uri(self.bucket, f"{self.key}/{name}" if self.key else name)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class ShardPlan:
    idx: int
    line_start: int  # physical line index, inclusive
    line_end: int  # exclusive
    byte_start: int | None  # plain JSONL only: the ranged GET to read
    byte_end: int | None


def s3_client() -> Any:
    """A boto3 S3 client; endpoint, region and credentials come from the AWS environment."""
    import boto3

    return boto3.client("s3")


def error_code(exc: BaseException) -> str:
    """botocore's error code (e.g. NoSuchKey): enough to act on, and never content."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code or type(exc).__name__)


def compression_of(uri: S3Uri) -> str:
    return "gzip" if uri.key.endswith(".gz") else "none"


def _open(client: Any, uri: S3Uri, byte_range: str | None = None) -> Any:
    kwargs: dict[str, Any] = {"Bucket": uri.bucket, "Key": uri.key}
    if byte_range is not None:
        kwargs["Range"] = byte_range
    try:
        return client.get_object(**kwargs)["Body"]
    except Exception as exc:  # botocore's errors: the code is enough to act on
        raise InputUnreadable(f"S3 GetObject failed ({error_code(exc)})") from None


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(_CHUNK)
    except Exception as exc:
        raise InputUnreadable(f"S3 read failed ({error_code(exc)})") from None
    finally:
        body.close()


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    first = True
    try:
        for chunk in chunks:
            if first and chunk:
                if not chunk.startswith(_GZIP_MAGIC):
                    raise InputUnreadable("the input is not gzip")
                first = False
            while chunk:
                out = decompressor.decompress(chunk, _CHUNK)
                if out:
                    yield out
                chunk = decompressor.unconsumed_tail
                if decompressor.eof:  # a concatenated gzip member follows
                    chunk = decompressor.unused_data + chunk
                    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        tail = decompressor.flush()
        if tail:
            yield tail
    except zlib.error:
        raise InputUnreadable("the input is not valid gzip") from None


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Physical lines, each with its newline (the last one may lack it)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            yield pending[start : end + 1]
            start = end + 1
        pending = pending[start:]
    if pending:
        yield pending


def _input_lines(client: Any, uri: S3Uri, compression: str) -> Iterator[bytes]:
    chunks = _chunks(_open(client, uri))
    return _lines(_gunzip(chunks) if compression == "gzip" else chunks)


def plan_shards(client: Any, uri: S3Uri, compression: str, shard_size: int) -> list[ShardPlan]:
    """Stream the object once; shards of `shard_size` records (non-blank lines) each."""
    plans: list[ShardPlan] = []
    line, offset = 0, 0
    start_line, start_byte, records = 0, 0, 0
    plain = compression == "none"
    for raw in _input_lines(client, uri, compression):
        if raw.strip():
            records += 1
        line += 1
        offset += len(raw)
        if records == shard_size:
            plans.append(
                ShardPlan(len(plans), start_line, line, start_byte if plain else None,
                          offset if plain else None)
            )
            start_line, start_byte, records = line, offset, 0
    if records:
        plans.append(
            ShardPlan(len(plans), start_line, line, start_byte if plain else None,
                      offset if plain else None)
        )
    return plans


def read_shard(
    client: Any, uri: S3Uri, compression: str, shard: ShardPlan
) -> Iterator[tuple[int, bytes]]:
    """(physical line index, line) for each line of the shard, read straight from S3."""
    if compression == "none" and shard.byte_start is not None and shard.byte_end is not None:
        if shard.byte_end <= shard.byte_start:
            return
        body = _open(client, uri, f"bytes={shard.byte_start}-{shard.byte_end - 1}")
        for number, raw in enumerate(_lines(_chunks(body)), start=shard.line_start):
            if number >= shard.line_end:
                break
            yield number, raw
        return
    lines = _input_lines(client, uri, compression)
    try:
        for number, raw in enumerate(lines):
            if number >= shard.line_end:
                break
            if number >= shard.line_start:
                yield number, raw
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()  # stops the download: the rest of the object is never read


def object_exists(client: Any, uri: S3Uri) -> bool:
    try:
        client.head_object(Bucket=uri.bucket, Key=uri.key)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise OutputUnwritable(f"S3 HeadObject failed ({error_code(exc)})") from None
    return True


def put_object(client: Any, uri: S3Uri, data: bytes, content_type: str) -> None:
    try:
        client.put_object(
            Bucket=uri.bucket, Key=uri.key, Body=data, ContentType=content_type,
            ChecksumAlgorithm="SHA256",
        )
    except Exception as exc:
        raise OutputUnwritable(f"S3 PutObject failed ({error_code(exc)})") from None
