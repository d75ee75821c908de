"""A work queue and its dead-letter queue, as every SQS-fed worker here has them: SQS-managed
encryption, SSL only, both consumed by the same function (so both outlast its timeout)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct


def queue_with_dlq(
    scope: Construct, queue_id: str, dlq_id: str, *, visibility_timeout: Duration, retention: Duration,
    dlq_retention: Duration, max_receives: int,
) -> tuple[sqs.Queue, sqs.Queue]:
    common = dict(encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True, visibility_timeout=visibility_timeout)
    dlq = sqs.Queue(scope, dlq_id, retention_period=dlq_retention, **common)
    queue = sqs.Queue(
        scope, queue_id, retention_period=retention, **common,
        dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=max_receives),
    )
    return queue, dlq
