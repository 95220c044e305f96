"""The stream route's line splitter and the bulk client's backoff, without a server."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway._stream import StreamSettings, _Disconnected, _Lines
from gateway.bulk_client import ClientSettings, _backoff
from gateway.settings import SettingsError


def _receiver(*chunks: bytes, disconnect: bool = False):
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or disconnect}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    consumed = []

    async def receive() -> dict:
        message = messages.pop(0)
        consumed.append(message)
        return message

    return receive, consumed


async def _all(lines: _Lines) -> list[tuple[int, bytes | None]]:
    out = []
    while (line := await lines.next()) is not None:
        out.append(line)
    return out


def test_lines_are_numbered_across_chunks_and_long_lines_are_dropped() -> None:
    receive, _ = _receiver(b'{"a"', b':1}\n\n' + b"x" * 30, b"y" * 30 + b"\nlast")
    lines = _Lines(receive, max_line_bytes=40)
    assert asyncio.run(_all(lines)) == [(1, b'{"a":1}'), (2, b""), (3, None), (4, b"last")]


def test_a_long_last_line_without_newline_is_reported_too_large() -> None:
    receive, _ = _receiver(b"ok\n" + b"z" * 50)
    assert asyncio.run(_all(_Lines(receive, max_line_bytes=10))) == [(1, b"ok"), (2, None)]


def test_lines_read_only_as_far_as_asked() -> None:
    receive, consumed = _receiver(b"one\n", b"two\n", b"three\n")
    lines = _Lines(receive, max_line_bytes=100)
    assert asyncio.run(lines.next()) == (1, b"one")
    assert len(consumed) == 1  # the rest of the body stays with the server (backpressure)


def test_disconnect_while_reading_raises() -> None:
    receive, _ = _receiver(b"one\ntw", disconnect=True)
    lines = _Lines(receive, max_line_bytes=100)
    with pytest.raises(_Disconnected):
        asyncio.run(_all(lines))


def test_stream_settings_from_env_validate() -> None:
    settings = StreamSettings.from_env({"TACET_STREAM_MAX_IN_FLIGHT": "8"})
    assert settings.max_in_flight == 8 and settings.batch_documents == 32
    with pytest.raises(SettingsError, match="TACET_STREAM_MAX_LINE_BYTES"):
        StreamSettings.from_env({"TACET_STREAM_MAX_LINE_BYTES": "0"})


def test_backoff_honours_retry_after_and_grows_under_a_cap() -> None:
    random.seed(1)
    settings = ClientSettings(taxonomy="t", backoff_base_s=0.5, backoff_cap_s=4.0)
    assert all(_backoff(settings, attempt, 3.0) >= 3.0 for attempt in range(1, 8))
    waits = [_backoff(settings, 10, None) for _ in range(200)]
    assert max(waits) <= 4.0 and min(waits) >= 0.0
    assert len({round(w, 3) for w in waits}) > 100  # jittered, not a fixed delay
    assert max(_backoff(settings, 1, None) for _ in range(200)) <= 1.0
