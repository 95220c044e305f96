"""`GET /v1/audit/report?from=&to=` (scope `audit:read`): the compliance report as one HTML page.

The caller's own tenant chain only, whatever the query says (like `GET /v1/audit/export`), read
from the audit log in batches and chain-checked as it streams; the page is the one `tacet audit
report` writes (compliance.audit.report), with a verdict for the live, unsigned log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, get
from litestar.response import Stream

from compliance.audit import Activity
from compliance.audit.report import CONTENT_SECURITY_POLICY, live_page
from gateway import problems
from gateway.apikeys import Principal

__all__ = ["REPORT_OPERATIONS", "audit_report"]

# operation_id -> (the trail's constant operation name, OCSF activity); gateway.app merges it.
REPORT_OPERATIONS: dict[str, tuple[str, Activity]] = {
    "auditReport": ("audit.report", Activity.READ),
}

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@get(
    "/v1/audit/report",
    operation_id="auditReport",
    summary="The caller's tenant's audit records in [from, to), as a self-contained HTML report",
    security=[{"bearer": []}],
    tags=["audit"],
)
async def audit_report(request: Request[Principal, str, Any]) -> Stream:
    """Scope first (403 before any parsing), then `from` < `to`, both UTC-aware."""
    if "audit:read" not in request.user.scopes:
        raise problems.Forbidden()
    start = _utc(request.query_params.get("from"))
    end = _utc(request.query_params.get("to"))
    if end <= start:
        raise problems.Invalid()
    source = request.app.state.gateway.audit
    if source is None:
        raise problems.AuditUnavailable()
    tenant = request.user.tenant_id
    log = await source()
    page = await live_page(log.iter_records(tenant, start, end), chain=tenant, start=start,
                           end=end)
    return Stream(page, media_type="text/html; charset=utf-8", headers=_HEADERS)


def _utc(value: str | None) -> datetime:
    """RFC 3339 with an offset; a time without a zone is refused rather than guessed."""
    try:
        moment = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        raise problems.Invalid() from None
    if moment.tzinfo is None:
        raise problems.Invalid()
    return moment
