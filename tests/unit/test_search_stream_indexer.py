"""The DynamoDB-stream consumer: a realistic stream batch, a poison record, thread deletion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from threadgate.domain.models import Message
from threadgate.search.embedders import load_local_embedder
from threadgate.search.indexing import Indexer
from threadgate.search.local_index import LocalVectorIndex
from threadgate.background.search_indexer import handle
from threadgate.stores.dynamodb._items import encode
from threadgate.stores.dynamodb.threads import _message_item

EMBEDDER = load_local_embedder()
ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/threadgate-threads/stream/2026-11-27T00:00:00.000"


def _msg(thread: str, seq: int, content: Any, kind: str = "user") -> Message:
    role = "assistant" if kind in ("assistant", "tool_use") else "user"
    return Message(thread, seq, role, content, kind, "claude-x" if role == "assistant" else None, "req_1", 1_764_201_600_000 + seq, "acct_a", "alice")  # type: ignore[arg-type]


def _record(n: int, name: str, *, new: dict | None = None, old: dict | None = None, keys: dict | None = None) -> dict[str, Any]:
    image = new or old or {}
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1764201600,
        "Keys": encode(keys or {"pk": image["pk"], "sk": image["sk"]}),
        "SequenceNumber": f"{n:021d}",
        "SizeBytes": 256,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        dynamodb["NewImage"] = encode(new)
    if old is not None:
        dynamodb["OldImage"] = encode(old)
    return {
        "eventID": f"evt{n}",
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": dynamodb,
        "eventSourceARN": ARN,
    }


def _meta(thread: str) -> dict[str, Any]:
    return {"pk": f"THREAD#{thread}", "sk": "META", "account_id": "acct_a", "end_user_id": "alice", "next_seq": 3, "created_at": 1}


@pytest.fixture
def indexer(tmp_path: Path) -> Indexer:
    return Indexer(EMBEDDER, LocalVectorIndex(tmp_path, dimensions=EMBEDDER.dimensions))


def _found(ix: Indexer, q: str = "refund") -> list[tuple[str, int]]:
    return sorted((r["thread_id"], r["seq"]) for r in ix.search(account_id="acct_a", end_user_id="alice", thread_id=None, q=q, limit=50))


def test_a_stream_batch_indexes_messages_and_reports_the_poison_record(indexer: Indexer) -> None:
    poison = _message_item(_msg("t1", 9, "x"))
    poison["content"] = "{not json"
    event = {
        "Records": [
            _record(1, "INSERT", new=_meta("t1")),  # thread metadata: ignored
            _record(2, "INSERT", new=_message_item(_msg("t1", 1, "Can I get a refund for my order?"))),
            _record(3, "INSERT", new=_message_item(_msg("t1", 2, [{"type": "tool_use", "id": "tu", "name": "lookup", "input": {}}], "tool_use"))),
            _record(4, "INSERT", new=_message_item(_msg("t1", 3, [{"type": "tool_result", "tool_use_id": "tu", "content": "refund ok"}], "tool_result"))),
            _record(5, "INSERT", new=poison),
            _record(6, "INSERT", new=_message_item(_msg("t1", 4, [{"type": "text", "text": "Your refund is approved."}], "assistant"))),
            _record(7, "MODIFY", new={**_meta("t1"), "next_seq": 5}),
        ]
    }
    result = handle(event, None, indexer)
    assert result == {"batchItemFailures": [{"itemIdentifier": f"{5:021d}"}]}
    assert _found(indexer) == [("t1", 1), ("t1", 4)]


def test_an_indexing_failure_is_reported_for_that_record_only(indexer: Indexer, monkeypatch: pytest.MonkeyPatch) -> None:
    original = indexer.index.upsert

    def upsert(docs):  # the index refuses one particular message
        if any(d["id"] == "t2#2" for d in docs):
            raise ConnectionError("refused")
        original(docs)

    monkeypatch.setattr(indexer.index, "upsert", upsert)
    event = {
        "Records": [
            _record(1, "INSERT", new=_message_item(_msg("t2", 1, "refund one"))),
            _record(2, "INSERT", new=_message_item(_msg("t2", 2, "refund two"))),
            _record(3, "INSERT", new=_message_item(_msg("t2", 3, "refund three"))),
        ]
    }
    assert handle(event, None, indexer) == {"batchItemFailures": [{"itemIdentifier": f"{2:021d}"}]}
    assert _found(indexer) == [("t2", 1), ("t2", 3)]


def test_removing_a_thread_deletes_its_entries(indexer: Indexer) -> None:
    handle({"Records": [_record(1, "INSERT", new=_message_item(_msg("t3", 1, "refund please"))), _record(2, "INSERT", new=_message_item(_msg("t4", 1, "refund again")))]}, None, indexer)
    assert _found(indexer) == [("t3", 1), ("t4", 1)]
    event = {
        "Records": [
            _record(3, "REMOVE", old=_meta("t3")),
            _record(4, "REMOVE", old=_message_item(_msg("t3", 1, "refund please"))),  # swept message: no-op
        ]
    }
    assert handle(event, None, indexer) == {"batchItemFailures": []}
    assert _found(indexer) == [("t4", 1)]


def test_a_remove_without_old_image_is_skipped_not_retried(indexer: Indexer) -> None:
    event = {"Records": [_record(1, "REMOVE", keys={"pk": "THREAD#t5", "sk": "META"})]}
    assert handle(event, None, indexer) == {"batchItemFailures": []}


def test_a_redelivered_batch_is_idempotent(indexer: Indexer) -> None:
    event = {"Records": [_record(1, "INSERT", new=_message_item(_msg("t6", 1, "refund please")))]}
    handle(event, None, indexer)
    handle(event, None, indexer)
    assert _found(indexer) == [("t6", 1)]


def test_a_failed_thread_deletion_is_reported_for_retry(indexer: Indexer, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(account_id, thread_id):
        raise ConnectionError("index down")

    monkeypatch.setattr(indexer.index, "delete_thread", down)
    event = {"Records": [_record(1, "INSERT", new=_message_item(_msg("t7", 1, "refund please"))), _record(2, "REMOVE", old=_meta("t7"))]}
    assert handle(event, None, indexer) == {"batchItemFailures": [{"itemIdentifier": f"{2:021d}"}]}
