"""Async jobs (API.md §11): the SQS queue the api/stream functions send `{job_id, account_id}` to,
its dead-letter queue, and both wired to the jobs function (threadgate.background.jobs_worker), which runs
queued jobs and marks dead-lettered ones failed."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from infra.constructs.queues import queue_with_dlq

WORKER_TIMEOUT = Duration.minutes(15)  # a job is one synchronous request, up to a full tool loop
# AWS guidance for SQS event sources: visibility ≥ 6× the function timeout, so a batch retried by
# the poller is not redelivered while an invocation may still hold it.
VISIBILITY_TIMEOUT = Duration.seconds(6 * int(WORKER_TIMEOUT.to_seconds()))
# A job's message fails only on store errors or while another receive runs it (jobs_worker); a
# few receives spaced by the visibility timeout are enough before giving up.
MAX_RECEIVES = 4
BATCH_SIZE = 5  # records of one batch run concurrently in one invocation


class JobQueue(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.queue, self.dlq = queue_with_dlq(
            self, "Queue", "DeadLetters", visibility_timeout=VISIBILITY_TIMEOUT, retention=Duration.days(4),
            dlq_retention=Duration.days(14), max_receives=MAX_RECEIVES,
        )

    def environment(self) -> dict[str, str]:
        return {"THREADGATE_JOBS_QUEUE_URL": self.queue.queue_url}

    def grant_send(self, role: iam.IRole) -> None:
        """Submitting a job: SendMessage on this queue, nothing else."""
        self.queue.grant(role, "sqs:SendMessage")

    def feed(self, worker: lambda_.IFunction) -> None:
        """Both queues → the jobs function, failed records reported one by one. The event sources
        grant the function what consuming needs (receive, delete, change visibility)."""
        for queue in (self.queue, self.dlq):
            worker.add_event_source(sources.SqsEventSource(
                queue, batch_size=BATCH_SIZE, report_batch_item_failures=True,
            ))
