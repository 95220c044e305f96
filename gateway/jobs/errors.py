"""The jobs package's exception tree; messages carry Tacet ids and error codes, never content.

JobError
 +-- JobInvalid       a submission that cannot run (bad URI, unknown taxonomy, bad version...)
 +-- InputUnreadable  the input object cannot be read (absent, denied, not JSONL/gzip)
 +-- OutputUnwritable a part or the manifest could not be written
 +-- QueueError       the queue backend failed (SQS error code, or the local table)
"""

from __future__ import annotations

__all__ = ["InputUnreadable", "JobError", "JobInvalid", "OutputUnwritable", "QueueError"]


class JobError(Exception):
    """Base of every bulk-job error."""


class JobInvalid(JobError):
    """`code` is a stable machine-readable reason (e.g. `unknown_taxonomy`)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class InputUnreadable(JobError):
    pass


class OutputUnwritable(JobError):
    pass


class QueueError(JobError):
    pass
