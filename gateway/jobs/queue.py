"""The shard queue behind one interface, with two backends of the same semantics.

Semantics (SQS's): at-least-once delivery; a received message is hidden for the visibility
timeout and comes back if not deleted in time (a worker that dies loses its lease); the holder
extends the lease while it works (`extend`, the worker's heartbeat); a message received
`max_receives` times without being deleted goes to the dead-letter queue on its next receive
instead of being delivered again. Each receive hands out a new receipt, and only the newest
receipt can extend or delete, so a worker whose lease expired cannot touch the new holder's.

- `SqsQueue`: boto3 (endpoint and credentials from the AWS environment). The dead-letter queue
  is SQS's redrive policy (`SqsQueue.create` makes both queues; Terraform does in production).
- `LocalQueue`: a table (`job_queue`) in the control-plane database, for the embedded default:
  a lease is `(receipt, visible_at)`; a dead letter is a row with `dead_at` set.

Bodies are `{"job": <job id>, "shard": <index>}`: Tacet-generated ids, never content.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from gateway.jobs.errors import QueueError
from gateway.jobs.s3io import error_code
from gateway.store.models import JobQueueMessage

__all__ = [
    "QUEUE_URL_ENV",
    "JobQueue",
    "LocalQueue",
    "QueueSettings",
    "Received",
    "SqsQueue",
    "open_queue",
]

QUEUE_URL_ENV = "TACET_JOBS_QUEUE_URL"


@dataclass(frozen=True)
class QueueSettings:
    """Which queue, and its lease rules. Read from the environment by `from_env`."""

    queue_url: str | None = None  # TACET_JOBS_QUEUE_URL: an SQS queue URL; None = local table
    visibility_timeout: int = 120  # TACET_JOBS_VISIBILITY_TIMEOUT (s): lease per receive
    max_receives: int = 5  # TACET_JOBS_MAX_RECEIVES: local backend's dead-letter threshold
    local_name: str = "jobs"  # the local backend's queue name (rows of one table)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QueueSettings:
        env = os.environ if env is None else env
        try:
            timeout = int(env.get("TACET_JOBS_VISIBILITY_TIMEOUT", "120"))
            receives = int(env.get("TACET_JOBS_MAX_RECEIVES", "5"))
        except ValueError:
            raise ValueError(
                "TACET_JOBS_VISIBILITY_TIMEOUT and TACET_JOBS_MAX_RECEIVES must be integers"
            ) from None
        if not 1 <= timeout <= 43200 or receives < 1:
            raise ValueError(
                "TACET_JOBS_VISIBILITY_TIMEOUT must lie in 1..43200 s (SQS's range) and "
                "TACET_JOBS_MAX_RECEIVES be at least 1"
            )
        return cls(env.get(QUEUE_URL_ENV) or None, timeout, receives)


@dataclass(frozen=True)
class Received:
    body: dict[str, Any]
    receipt: str
    receive_count: int


class JobQueue(Protocol):
    visibility_timeout: int

    async def send(self, body: dict[str, Any]) -> None: ...

    async def send_many(self, bodies: list[dict[str, Any]]) -> None: ...

    async def receive(self, wait: float) -> Received | None:
        """One message (leased for `visibility_timeout`), or None after `wait` seconds."""
        ...

    async def extend(self, receipt: str, seconds: int) -> None:
        """Hide the message `seconds` from now; QueueError if the lease was lost."""
        ...

    async def delete(self, receipt: str) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LocalQueue:
    """Leases in the control-plane database (SQLite or PostgreSQL), shared by all processes."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        name: str = "jobs",
        visibility_timeout: int = 120,
        max_receives: int = 5,
        poll_interval: float = 0.2,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.name, self.visibility_timeout = name, visibility_timeout
        self.max_receives, self.poll_interval, self._now = max_receives, poll_interval, now

    async def send(self, body: dict[str, Any]) -> None:
        await self.send_many([body])

    async def send_many(self, bodies: list[dict[str, Any]]) -> None:
        now = self._now()
        async with self._sessions() as session, session.begin():
            session.add_all(
                JobQueueMessage(
                    queue=self.name, body=json.dumps(body, sort_keys=True), visible_at=now,
                    receive_count=0, receipt=None, dead_at=None, created_at=now,
                )
                for body in bodies
            )

    async def receive(self, wait: float) -> Received | None:
        deadline = time.monotonic() + wait
        while True:
            got = await self._claim()
            if got is not None or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    async def _claim(self) -> Received | None:
        now = self._now()
        due = (
            (JobQueueMessage.queue == self.name)
            & JobQueueMessage.dead_at.is_(None)
            & (JobQueueMessage.visible_at <= now)
        )
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(JobQueueMessage.id, JobQueueMessage.receive_count, JobQueueMessage.body)
                    .where(due)
                    .order_by(JobQueueMessage.id)
                    .limit(8)
                )
            ).all()
            for message_id, count, body in rows:
                # The `due` condition is checked again by the UPDATE itself: of two workers
                # racing for one row, only one changes it (PostgreSQL re-checks the WHERE on
                # the row it waited for; SQLite serialises writers).
                if count >= self.max_receives:
                    await session.execute(
                        update(JobQueueMessage)
                        .where(due & (JobQueueMessage.id == message_id))
                        .values(dead_at=now, receipt=None)
                    )
                    continue
                receipt = secrets.token_hex(16)
                result = await session.execute(
                    update(JobQueueMessage)
                    .where(due & (JobQueueMessage.id == message_id))
                    .values(
                        receipt=receipt,
                        receive_count=JobQueueMessage.receive_count + 1,
                        visible_at=now + timedelta(seconds=self.visibility_timeout),
                    )
                )
                if getattr(result, "rowcount", 0) == 1:
                    return Received(json.loads(body), receipt, count + 1)
        return None

    async def extend(self, receipt: str, seconds: int) -> None:
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(JobQueueMessage)
                .where((JobQueueMessage.receipt == receipt) & JobQueueMessage.dead_at.is_(None))
                .values(visible_at=self._now() + timedelta(seconds=seconds))
            )
        if getattr(result, "rowcount", 0) != 1:
            raise QueueError("the lease was lost (the message was received again)")

    async def delete(self, receipt: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                delete(JobQueueMessage).where(JobQueueMessage.receipt == receipt)
            )

    async def dead_letters(self) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            bodies = (
                await session.execute(
                    select(JobQueueMessage.body).where(
                        (JobQueueMessage.queue == self.name) & JobQueueMessage.dead_at.is_not(None)
                    )
                )
            ).scalars()
            return [json.loads(b) for b in bodies]

    async def depth(self) -> int:
        """Messages not yet deleted nor dead (visible or leased)."""
        async with self._sessions() as session:
            return int(
                await session.scalar(
                    select(func.count()).where(
                        (JobQueueMessage.queue == self.name) & JobQueueMessage.dead_at.is_(None)
                    )
                )
                or 0
            )


class SqsQueue:
    """Amazon SQS (standard queue) through boto3; each blocking call runs in a thread."""

    def __init__(self, client: Any, queue_url: str, *, visibility_timeout: int = 120) -> None:
        self.client, self.queue_url = client, queue_url
        self.visibility_timeout = visibility_timeout

    @classmethod
    def create(
        cls, client: Any, name: str, *, max_receives: int = 5, visibility_timeout: int = 120
    ) -> SqsQueue:
        """The queue `name` and its dead-letter queue `name-dlq` (redrive after N receives)."""
        try:
            dlq_url = client.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
            dlq_arn = client.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
            url = client.create_queue(
                QueueName=name,
                Attributes={
                    "VisibilityTimeout": str(visibility_timeout),
                    "RedrivePolicy": json.dumps(redrive),
                },
            )["QueueUrl"]
        except Exception as exc:
            raise QueueError(f"SQS CreateQueue failed ({error_code(exc)})") from None
        return cls(client, url, visibility_timeout=visibility_timeout)

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(
                getattr(self.client, operation), QueueUrl=self.queue_url, **kwargs
            )
        except Exception as exc:
            raise QueueError(f"SQS {operation} failed ({error_code(exc)})") from None

    async def send(self, body: dict[str, Any]) -> None:
        await self._call("send_message", MessageBody=json.dumps(body, sort_keys=True))

    async def send_many(self, bodies: list[dict[str, Any]]) -> None:
        for start in range(0, len(bodies), 10):  # SQS takes at most 10 per batch
            batch = bodies[start : start + 10]
            answer = await self._call(
                "send_message_batch",
                Entries=[
                    {"Id": str(i), "MessageBody": json.dumps(b, sort_keys=True)}
                    for i, b in enumerate(batch)
                ],
            )
            if answer.get("Failed"):
                raise QueueError("SQS SendMessageBatch failed for some entries")

    async def receive(self, wait: float) -> Received | None:
        answer = await self._call(
            "receive_message",
            MaxNumberOfMessages=1,
            WaitTimeSeconds=max(0, min(20, int(wait))),
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages = answer.get("Messages") or []
        if not messages:
            return None
        message = messages[0]
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            body = json.loads(message["Body"])
        except ValueError:
            body = {}
        return Received(body, message["ReceiptHandle"], count)

    async def extend(self, receipt: str, seconds: int) -> None:
        await self._call(
            "change_message_visibility", ReceiptHandle=receipt, VisibilityTimeout=seconds
        )

    async def delete(self, receipt: str) -> None:
        await self._call("delete_message", ReceiptHandle=receipt)


def open_queue(settings: QueueSettings, engine: AsyncEngine) -> JobQueue:
    """SQS when a queue URL is configured, else the local table in `engine`'s database."""
    if settings.queue_url:
        import boto3

        return SqsQueue(
            boto3.client("sqs"), settings.queue_url,
            visibility_timeout=settings.visibility_timeout,
        )
    return LocalQueue(
        engine, name=settings.local_name, visibility_timeout=settings.visibility_timeout,
        max_receives=settings.max_receives,
    )
