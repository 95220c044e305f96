"""Bulk S3-to-S3 jobs: sharded on a queue, worked by `tacet worker`, exactly one result per id.

    POST /v1/jobs ──> service.submit_job: pin taxonomy version, stream the input once to cut
                      shards (line ranges), rows in `jobs`/`job_shards`, one message per shard
    queue (SQS, or the local `job_queue` table: same lease semantics, see queue.py)
    tacet worker ──> worker.Worker: lease a shard, stream its range from S3, classify with the
                      local engine, PUT part-<shard>.jsonl, mark done (counts once), delete the
                      message; the last shard's worker writes manifest.json

Delta jobs (`labelled_with`) re-score only the documents whose label the taxonomy diff touched
(delta.py says exactly which). Only metadata reaches the database and the logs.
"""

from gateway.jobs.delta import DeltaPlan, touched_labels
from gateway.jobs.errors import InputUnreadable, JobError, JobInvalid, OutputUnwritable, QueueError
from gateway.jobs.queue import JobQueue, LocalQueue, QueueSettings, Received, SqsQueue, open_queue
from gateway.jobs.repository import JobRecord, JobSpec, JobStore, ShardCounts
from gateway.jobs.s3io import S3Uri, ShardPlan, plan_shards, read_shard
from gateway.jobs.service import JobRequest, job_view, submit_job
from gateway.jobs.worker import MANIFEST_NAME, Worker, WorkerSettings, part_name

__all__ = [
    "MANIFEST_NAME",
    "DeltaPlan",
    "InputUnreadable",
    "JobError",
    "JobInvalid",
    "JobQueue",
    "JobRecord",
    "JobRequest",
    "JobSpec",
    "JobStore",
    "LocalQueue",
    "OutputUnwritable",
    "QueueError",
    "QueueSettings",
    "Received",
    "S3Uri",
    "ShardCounts",
    "ShardPlan",
    "SqsQueue",
    "Worker",
    "WorkerSettings",
    "job_view",
    "open_queue",
    "part_name",
    "plan_shards",
    "read_shard",
    "submit_job",
    "touched_labels",
]
