"""One batch of an SQS-fed Lambda worker whose DLQ feeds the same function (jobs, webhooks).

Records of the work queue run concurrently (Powertools AsyncBatchProcessor); records of the DLQ
one by one. Every failed record is reported (partial batch response), even when all failed:
SQS retries exactly those, and moves a record that keeps failing to the DLQ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


def process_batch(
    event: dict[str, Any],
    context: Any,
    queue_url: str | None,
    *,
    live: Callable[[Any], Awaitable[None]],
    dead: Callable[[Any], None],
) -> dict[str, Any]:
    """`live(record)` for records of the queue at `queue_url`, `dead(record)` for its DLQ's."""
    from aws_lambda_powertools.utilities.batch import (
        AsyncBatchProcessor,
        BatchProcessor,
        EventType,
        async_process_partial_response,
        process_partial_response,
    )

    records = event.get("Records") or []
    if records and is_dead_letter(records[0].get("eventSourceARN", ""), queue_url):
        processor = BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
        return process_partial_response(event, dead, processor, context)  # type: ignore[return-value]
    concurrent = AsyncBatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)
    return async_process_partial_response(event, live, concurrent, context)  # type: ignore[return-value]


def is_dead_letter(source_arn: str, queue_url: str | None) -> bool:
    """A record from any queue but the work queue itself comes from its DLQ (same function)."""
    if not queue_url:
        return False
    return source_arn.rsplit(":", 1)[-1] != queue_url.rstrip("/").rsplit("/", 1)[-1]
