"""engine/protocol.py: every message survives a frame round trip; bad frames are refused."""

from __future__ import annotations

import struct
import typing

import msgspec
import pytest

from engine import protocol
from engine.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Abort,
    CallDone,
    Classify,
    DecodeOut,
    DocumentDone,
    Error,
    ErrorKind,
    Health,
    HealthReport,
    Hello,
    Isolation,
    LabelOut,
    ProtocolError,
    Shutdown,
    Welcome,
    decode_body,
    encode_frame,
    frame_length,
)

TAXONOMY = {
    "name": "subjects",
    "version": "3",
    "facets": [{"name": "topic", "multi": False, "labels": [{"id": "a", "name": "Alpha"}]}],
}

EXAMPLES = [
    Hello(PROTOCOL_VERSION),
    Welcome(
        version=PROTOCOL_VERSION,
        pid=4242,
        model_id="LLaDA-8B-Instruct",
        family="llada",
        slot_ops="torch-chunked",
        isolation=Isolation(True, True, False, "unshare refused"),
    ),
    Classify("c1", TAXONOMY, ["first text", "zweiter Text ü"], "autoregressive", 0.3),
    Classify("c2", TAXONOMY, []),
    DocumentDone(
        call_id="c1",
        index=1,
        labels=[LabelOut("topic", "a", 0.75)],
        label_mass={"topic": 0.5},
        decode=DecodeOut("diffusion", 2, True, False, 171),
    ),
    CallDone("c1"),
    CallDone("c1", aborted=True),
    Abort("c1"),
    Health(),
    HealthReport(ready=True, queued_documents=3, steps=17),
    HealthReport(ready=True, queued_documents=0, steps=4, document_passes=9, aborted_documents=2),
    Shutdown(),
    Error(ErrorKind.VERSION_MISMATCH),
    Error(ErrorKind.BAD_REQUEST, "c1"),
    Error(ErrorKind.INTERNAL, "c2"),
]


def roundtrip(message):
    frame = encode_frame(message)
    length = frame_length(frame[:4])
    assert length == len(frame) - 4
    return decode_body(frame[4:])


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message) -> None:
    decoded = roundtrip(message)
    assert type(decoded) is type(message)
    assert decoded == message


def test_examples_cover_every_message_type() -> None:
    assert {type(m) for m in EXAMPLES} == set(typing.get_args(protocol.Message))
    assert set(ErrorKind) == {m.kind for m in EXAMPLES if isinstance(m, Error)}


def test_frame_header_is_big_endian_length() -> None:
    frame = encode_frame(Health())
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4


def test_oversized_frame_header_is_refused_before_reading_the_body() -> None:
    assert frame_length(struct.pack(">I", MAX_FRAME_BYTES)) == MAX_FRAME_BYTES
    with pytest.raises(ProtocolError):
        frame_length(struct.pack(">I", MAX_FRAME_BYTES + 1))


def test_oversized_message_is_not_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_FRAME_BYTES", 64)
    with pytest.raises(ProtocolError):
        encode_frame(Classify("c1", TAXONOMY, ["x" * 100]))
    assert len(encode_frame(Health())) < 64


@pytest.mark.parametrize(
    "body",
    [
        msgspec.msgpack.encode({"type": "pickle", "payload": "x"}),  # unknown tag
        msgspec.msgpack.encode({"version": 1}),  # no tag at all
        msgspec.msgpack.encode({"type": "hello", "version": "one"}),  # wrong field type
        msgspec.msgpack.encode({"type": "abort"}),  # missing field
        msgspec.msgpack.encode([1, 2, 3]),  # not a map
        b"\xc1",  # a byte msgpack never uses
        b"",
    ],
    ids=["unknown-tag", "untagged", "wrong-type", "missing-field", "array", "invalid", "empty"],
)
def test_unknown_or_malformed_frames_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_body(body)


def test_protocol_error_carries_no_frame_content() -> None:
    secret = "ZDR-CANARY-protocol"
    body = msgspec.msgpack.encode({"type": "classify", "call_id": 1, "texts": [secret]})
    with pytest.raises(ProtocolError) as info:
        decode_body(body)
    assert secret not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
