"""The DynamoDB-stream consumer that keeps the OpenSearch index in step with the threads table.

- INSERT / MODIFY of a message item (`sk = MSG#…`): index it when it is indexable (user or
  final assistant text); other items (META, LOCK) are ignored.
- REMOVE of a thread's META item: delete the thread's entries. The account comes from the old
  image, so the table's stream must carry old images (NEW_AND_OLD_IMAGES); with NEW_IMAGE only,
  the API's delete route is what removes entries (it calls `Indexer.delete_thread` directly).

Failures are per record (Powertools batch processing): a record that cannot be decoded or
indexed is reported in `batchItemFailures`, so Lambda retries from it and the rest of the
batch is not re-done.
"""

from __future__ import annotations

import logging
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from threadgate.domain.search import is_indexable
from threadgate.search.indexing import Indexer

log = logging.getLogger(__name__)

_deserializer = TypeDeserializer()
META_SK = "META"
THREAD_PREFIX = "THREAD#"


class IndexingFailed(RuntimeError):
    """Raised for a record so that Powertools reports it as a batch item failure."""


def _image(record: dict[str, Any], key: str) -> dict[str, Any]:
    raw = (record.get("dynamodb") or {}).get(key) or {}
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}


def _message(record: dict[str, Any]):
    # Imported here: the DynamoDB adapter is only needed by this consumer, not at module import.
    from threadgate.stores.dynamodb.threads import message_from_item

    return message_from_item(_image(record, "NewImage"))


def handle(event: dict[str, Any], context: Any, indexer: Indexer) -> dict[str, Any]:
    """Process one stream batch; returns `{"batchItemFailures": [...]}` for Lambda."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    records = event.get("Records") or []
    batch_indexed = _index_batch(records, indexer)

    def record_handler(record: Any) -> None:
        raw = record.raw_event
        name = raw.get("eventName")
        if name in ("INSERT", "MODIFY"):
            message = _message(raw)
            if message is None or not is_indexable(message):
                return
            if raw.get("eventID") in batch_indexed:
                return
            if indexer.index_messages([message]) != 1:
                raise IndexingFailed(f"could not index {message.thread_id}#{message.seq}")
        elif name == "REMOVE":
            keys = _image(raw, "Keys")
            if keys.get("sk") != META_SK:
                return  # message items are swept after META; the META record deletes them all
            thread_id = str(keys.get("pk", "")).removeprefix(THREAD_PREFIX)
            account_id = _image(raw, "OldImage").get("account_id")
            if not account_id:
                log.warning("thread %s removed but the stream carries no old image; skipped", thread_id)
                return
            # The deletion time bounds the writes an eventually consistent index must still show.
            deleted_at = (raw.get("dynamodb") or {}).get("ApproximateCreationDateTime")
            if not indexer.delete_thread(str(account_id), thread_id, deleted_at=_epoch_s(deleted_at)):
                raise IndexingFailed(f"could not delete the entries of thread {thread_id}")

    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


def _epoch_s(value: Any) -> float | None:
    """The stream's ApproximateCreationDateTime: epoch seconds (a datetime if boto3 decoded it)."""
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _index_batch(records: list[dict[str, Any]], indexer: Indexer) -> set[str]:
    """Index every decodable message of the batch in one go (one embedding loop, one bulk
    request). Returns the event ids it covered; on any failure returns none, and each record
    is then indexed on its own so that only the bad ones are reported."""
    by_event: dict[str, Any] = {}
    for record in records:
        if record.get("eventName") not in ("INSERT", "MODIFY"):
            continue
        try:
            message = _message(record)
        except Exception:  # noqa: BLE001 - a poison record is reported by its own handler
            continue
        if message is not None and is_indexable(message):
            by_event[record.get("eventID", "")] = message
    if not by_event:
        return set()
    # A REMOVE later in the same batch must win: index before the handlers run the deletes.
    messages = list(by_event.values())
    if indexer.index_messages(messages) == len(messages):
        return set(by_event)
    return set()
