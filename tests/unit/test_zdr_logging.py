"""The allowlist is the last step of every log line: canaries never reach the output."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest

from compliance.zdr import REDACTED, sanitize
from gateway.logging import configure_logging, get_logger


@pytest.fixture
def canary() -> str:
    return f"ZDR-CANARY-{uuid.uuid4()}"


@pytest.fixture
def captured():
    stream = io.StringIO()
    configure_logging("debug", stream)
    yield stream
    configure_logging("warning")


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_allowlisted_fields_pass_and_others_are_dropped(canary: str) -> None:
    out = sanitize({"event": "classify.done", "documents": 3, "text": canary, "doc_id": canary})
    assert out == {"event": "classify.done", "documents": 3, "dropped_fields": 2}


def test_allowlisted_field_with_content_shape_is_redacted(canary: str) -> None:
    out = sanitize({"route": f"/v1/classify?q={canary}", "taxonomy": f"{canary} and more"})
    assert out == {"route": REDACTED, "taxonomy": REDACTED}
    assert sanitize({"route": "/v1/jobs/{job_id}", "taxonomy": "subjects@3"}) == {
        "route": "/v1/jobs/{job_id}",
        "taxonomy": "subjects@3",
    }


def test_structlog_line_keeps_only_safe_fields(captured: io.StringIO, canary: str) -> None:
    get_logger("tacet.test").info(
        "request.done", status=200, duration_ms=1.5, documents=2, body=canary, label=canary
    )
    (line,) = lines(captured)
    assert line["event"] == "request.done" and line["status"] == 200
    assert canary not in captured.getvalue()


def test_free_text_event_becomes_constant(captured: io.StringIO, canary: str) -> None:
    get_logger("tacet.test").warning(f"could not classify {canary}")
    logging.getLogger("litestar").error("validation failed for %s", canary)
    assert canary not in captured.getvalue()
    assert {line["event"] for line in lines(captured)} == {"unstructured_message"}


def test_exceptions_render_by_type_only(captured: io.StringIO, canary: str) -> None:
    def fail(text: str) -> None:
        secret_local = text  # noqa: F841 - a local a traceback renderer would show
        raise ValueError(f"bad document {text}")

    try:
        fail(canary)
    except ValueError:
        get_logger("tacet.test").exception("classify.failed")
        logging.getLogger("tacet.stdlib").exception("stdlib %s", canary)
    out = captured.getvalue()
    assert canary not in out and "Traceback" not in out
    assert [line.get("error_type") for line in lines(captured)] == ["ValueError", "ValueError"]


def test_third_party_debug_is_pinned_to_warning(captured: io.StringIO, canary: str) -> None:
    logging.getLogger("httpx").debug("GET https://x/?token=%s", canary)
    logging.getLogger("sqlalchemy.engine").info("INSERT %s", canary)
    assert captured.getvalue() == ""


def test_stdlib_extra_fields_meet_the_allowlist(captured: io.StringIO, canary: str) -> None:
    logging.getLogger("tacet.engine").warning(
        "engine.restarting", extra={"restarts": 2, "document": canary}
    )
    (line,) = lines(captured)
    assert line["event"] == "engine.restarting" and line["restarts"] == 2
    assert canary not in captured.getvalue()
