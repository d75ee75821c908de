"""ThreadStore on the `threads` table, and `message_from_item` for the stream consumer.

Items of one thread share `pk = THREAD#<id>`:
- `META`: owner, end user, metadata (JSON) and its `metadata_version` (bumped by every metadata
  write; a merge writes only over the version it read), title, times, `message_count`, `next_seq`;
  gsi1 = `<account>#<end_user>` x `<last_active_at:015d>#<id>` (only end-user threads carry it),
  gsi2 = `<account>` x the same sort key.
- `MSG#<seq:012d>`: one message, self-describing (account, end user, thread, seq, role, kind,
  content as JSON text, or zlib-compressed JSON in `content_z` when large, model, request id,
  created_at) because the table's NEW_IMAGE stream feeds
  the search indexer, which sees one item at a time.
- `LOCK`: the turn lock (holder, lease expiry; `ttl` removes abandoned ones eventually).
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Sequence

from botocore.exceptions import ClientError

from threadgate.domain.errors import Conflict, InvalidRequest, NotFound, RequestTooLarge
from threadgate.domain.models import UNSET, Message, NewMessage, Thread
from threadgate.stores.dynamodb._items import (
    SEQ_WIDTH,
    TransactionCancelled,
    decode,
    dumps,
    encode,
    encode_values,
    is_condition_failure,
    is_too_large,
    loads,
    pack_json,
    query_all,
    transact,
    ts_key,
    unpack_json,
)

META = "META"
LOCK = "LOCK"
MSG_PREFIX = "MSG#"
# A transaction holds at most 100 actions: the META update plus one Put per message.
MAX_MESSAGES_PER_APPEND = 99
_APPEND_ATTEMPTS = 25
# Each failed metadata merge means another update landed: N concurrent merges need at most N tries.
_MERGE_ATTEMPTS = 25
_BATCH = 25


def thread_pk(thread_id: str) -> str:
    return f"THREAD#{thread_id}"


def msg_sk(seq: int) -> str:
    return f"{MSG_PREFIX}{seq:0{SEQ_WIDTH}d}"


def message_from_item(item: dict[str, Any]) -> Message | None:
    """A deserialized threads-table item (e.g. a stream NEW_IMAGE) -> Message; None for thread
    metadata, locks and anything else. Numbers may arrive as int or Decimal."""
    if not str(item.get("sk", "")).startswith(MSG_PREFIX) or "seq" not in item:
        return None
    return Message(
        thread_id=item["thread_id"],
        seq=int(item["seq"]),
        role=item["role"],
        content=unpack_json(item, "content"),
        kind=item["kind"],
        model=item.get("model"),
        request_id=item.get("request_id"),
        created_at=int(item["created_at"]),
        account_id=item["account_id"],
        end_user_id=item.get("end_user_id"),
    )


def _listing_keys(account_id: str, end_user_id: str | None, last_active_at: int, thread_id: str) -> dict[str, Any]:
    sort_key = f"{ts_key(last_active_at)}#{thread_id}"
    keys = {"gsi2pk": account_id, "gsi2sk": sort_key}
    if end_user_id is not None:
        keys.update(gsi1pk=f"{account_id}#{end_user_id}", gsi1sk=sort_key)
    return keys


def _thread(item: dict[str, Any]) -> Thread:
    return Thread(
        id=item["id"],
        account_id=item["account_id"],
        end_user_id=item.get("end_user_id"),
        metadata=loads(item.get("metadata")),
        title=item.get("title"),
        created_at=item["created_at"],
        last_active_at=item["last_active_at"],
        message_count=item.get("message_count", 0),
    )


class DynamoThreadStore:
    def __init__(self, client: Any, table: str):
        self._db = client
        self._table = table

    def create_thread(self, thread: Thread) -> None:
        item = {
            "pk": thread_pk(thread.id),
            "sk": META,
            "type": "thread",
            "id": thread.id,
            "account_id": thread.account_id,
            "end_user_id": thread.end_user_id,
            "metadata": dumps(thread.metadata),
            "title": thread.title,
            "created_at": thread.created_at,
            "last_active_at": thread.last_active_at,
            "message_count": thread.message_count,
            "next_seq": thread.message_count + 1,
            **_listing_keys(thread.account_id, thread.end_user_id, thread.last_active_at, thread.id),
        }
        try:
            self._db.put_item(
                TableName=self._table, Item=encode(item), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as err:
            if is_condition_failure(err):
                raise Conflict(f"Thread {thread.id} already exists.") from None
            raise

    def get_thread(self, account_id: str, thread_id: str, end_user_id: str | None = None) -> Thread | None:
        item = self._meta(thread_id)
        if not item or item.get("account_id") != account_id:
            return None
        if end_user_id is not None and item.get("end_user_id") != end_user_id:
            return None
        return _thread(item)

    def list_threads(
        self, account_id: str, end_user_id: str | None, limit: int, before: tuple[int, str] | None = None
    ) -> list[Thread]:
        if limit <= 0:
            return []
        if end_user_id is None:
            index, pk_attr, sk_attr, partition = "gsi2", "gsi2pk", "gsi2sk", account_id
        else:
            index, pk_attr, sk_attr, partition = "gsi1", "gsi1pk", "gsi1sk", f"{account_id}#{end_user_id}"
        condition = f"{pk_attr} = :p"
        values: dict[str, Any] = {":p": partition}
        if before is not None:
            condition += f" AND {sk_attr} < :cursor"
            values[":cursor"] = f"{ts_key(before[0])}#{before[1]}"
        threads: list[Thread] = []
        request: dict[str, Any] = dict(
            TableName=self._table,
            IndexName=index,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=encode_values(values),
            ScanIndexForward=False,
        )
        while len(threads) < limit:
            page = self._db.query(**request, Limit=limit - len(threads))
            threads.extend(_thread(decode(raw)) for raw in page.get("Items", []))  # type: ignore[arg-type]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return threads

    def update_thread(
        self, account_id: str, thread_id: str, *, metadata: Any = UNSET, title: Any = UNSET
    ) -> Thread | None:
        return self._update(account_id, thread_id, metadata=metadata, title=title)

    def update_thread_metadata(
        self, account_id: str, thread_id: str, change: Callable[[Any], Any], *, title: Any = UNSET
    ) -> Thread | None:
        # Optimistic: write only if `metadata_version` is still what was read, else read again.
        # A failed attempt means another update landed, so no merge waits on a lock or starves.
        for attempt in range(_MERGE_ATTEMPTS):
            meta = self._meta(thread_id)
            if not meta or meta.get("account_id") != account_id:
                return None
            merged = change(loads(meta.get("metadata")))
            updated = self._update(
                account_id, thread_id, metadata=merged, title=title, version=meta.get("metadata_version", 0)
            )
            if updated is not None:
                return updated
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise Conflict(f"Thread {thread_id}'s metadata is too busy; try again.")

    def _update(
        self, account_id: str, thread_id: str, *, metadata: Any, title: Any, version: int | None = None
    ) -> Thread | None:
        """None if the thread is not this account's, or its metadata is no longer at `version`."""
        sets, removes, adds = [], [], []
        values: dict[str, Any] = {":acc": account_id}
        condition = "account_id = :acc"
        if metadata is not UNSET:  # every metadata write moves the version a merge checks
            sets.append("metadata = :metadata")
            adds.append("metadata_version :one")
            values.update({":metadata": dumps(metadata), ":one": 1})
        if version is not None:
            condition += " AND metadata_version = :version" if version else " AND attribute_not_exists(metadata_version)"
            if version:
                values[":version"] = version
        if title is not UNSET:
            if title is None:
                removes.append("title")
            else:
                sets.append("title = :title")
                values[":title"] = title
        if not sets and not removes:
            return self.get_thread(account_id, thread_id)
        expression = " ".join(
            f"{verb} {', '.join(parts)}" for verb, parts in (("SET", sets), ("ADD", adds), ("REMOVE", removes)) if parts
        )
        try:
            answer = self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": thread_pk(thread_id), "sk": META}),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=encode_values(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if is_condition_failure(err):
                return None
            raise
        return _thread(decode(answer["Attributes"]))  # type: ignore[arg-type]

    def delete_thread(self, account_id: str, thread_id: str) -> bool:
        # The META item goes first (conditionally on the owner): from then on the thread is gone
        # for every reader and appends fail, and its messages are swept right after.
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=encode({"pk": thread_pk(thread_id), "sk": META}),
                ConditionExpression="account_id = :acc",
                ExpressionAttributeValues=encode_values({":acc": account_id}),
            )
        except ClientError as err:
            if is_condition_failure(err):
                return False
            raise
        keys = [
            {"pk": item["pk"], "sk": item["sk"]}
            for item in query_all(
                self._db,
                TableName=self._table,
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues=encode_values({":p": thread_pk(thread_id)}),
                ProjectionExpression="pk, sk",
                ConsistentRead=True,
            )
        ]
        for start in range(0, len(keys), _BATCH):
            self._batch_delete(keys[start : start + _BATCH])
        return True

    def append_messages(
        self, account_id: str, thread_id: str, messages: Sequence[NewMessage], now_ms: int
    ) -> list[Message]:
        if not messages:
            return []
        if len(messages) > MAX_MESSAGES_PER_APPEND:
            raise InvalidRequest(f"At most {MAX_MESSAGES_PER_APPEND} messages can be appended at once.")
        for attempt in range(_APPEND_ATTEMPTS):
            meta = self._meta(thread_id)
            if not meta or meta.get("account_id") != account_id:
                raise NotFound(f"Thread {thread_id} not found.")
            first = meta["next_seq"]
            stored = [
                Message(
                    thread_id=thread_id,
                    seq=first + i,
                    role=m.role,
                    content=m.content,
                    kind=m.kind,
                    model=m.model,
                    request_id=m.request_id,
                    created_at=now_ms,
                    account_id=account_id,
                    end_user_id=meta.get("end_user_id"),
                )
                for i, m in enumerate(messages)
            ]
            listing = _listing_keys(account_id, meta.get("end_user_id"), now_ms, thread_id)
            sets = ", ".join(f"{k} = :{k}" for k in listing)
            values = {
                ":expected": first,
                ":next": first + len(messages),
                ":n": len(messages),
                ":now": now_ms,
                ":acc": account_id,
                **{f":{k}": v for k, v in listing.items()},
            }
            bump = {
                "Update": {
                    "TableName": self._table,
                    "Key": encode({"pk": thread_pk(thread_id), "sk": META}),
                    "UpdateExpression": f"SET next_seq = :next, last_active_at = :now, {sets} ADD message_count :n",
                    "ConditionExpression": "next_seq = :expected AND account_id = :acc",
                    "ExpressionAttributeValues": encode_values(values),
                }
            }
            puts = [{"Put": {"TableName": self._table, "Item": encode(_message_item(m))}} for m in stored]
            try:
                transact(self._db, [bump, *puts])
            except ClientError as err:
                if is_too_large(err):
                    raise RequestTooLarge("A message is too large to store in a thread.") from None
                raise
            except TransactionCancelled as cancelled:
                if cancelled.condition_failed(0):
                    # Another append took these seqs (or the thread went): read again.
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                raise
            return stored
        raise Conflict(f"Thread {thread_id} is too busy; try again.")

    def retract_last_message(self, account_id: str, thread_id: str, seq: int) -> bool:
        shrink = {
            "Update": {
                "TableName": self._table,
                "Key": encode({"pk": thread_pk(thread_id), "sk": META}),
                "UpdateExpression": "SET next_seq = :seq ADD message_count :minus",
                "ConditionExpression": "next_seq = :after AND account_id = :acc",
                "ExpressionAttributeValues": encode_values(
                    {":seq": seq, ":after": seq + 1, ":minus": -1, ":acc": account_id}
                ),
            }
        }
        drop = {"Delete": {"TableName": self._table, "Key": encode({"pk": thread_pk(thread_id), "sk": msg_sk(seq)})}}
        try:
            transact(self._db, [shrink, drop])
        except TransactionCancelled as cancelled:
            if cancelled.condition_failed(0):
                return False  # something was appended after it, or the thread is gone
            raise
        return True

    def list_messages(
        self,
        account_id: str,
        thread_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Message]:
        low = max(after_seq + 1, 1) if after_seq is not None else 1
        high = before_seq - 1 if before_seq is not None else 10**SEQ_WIDTH - 1
        if low > high or (limit is not None and limit <= 0):
            return []
        request: dict[str, Any] = dict(
            TableName=self._table,
            KeyConditionExpression="pk = :p AND sk BETWEEN :lo AND :hi",
            # The owner check runs inside the query (every message item carries its account).
            FilterExpression="account_id = :acc",
            ExpressionAttributeValues=encode_values(
                {":p": thread_pk(thread_id), ":lo": msg_sk(low), ":hi": msg_sk(high), ":acc": account_id}
            ),
            ScanIndexForward=not descending,
            ConsistentRead=True,
        )
        found: list[Message] = []
        while limit is None or len(found) < limit:
            if limit is not None:
                request["Limit"] = limit - len(found)
            page = self._db.query(**request)
            for raw in page.get("Items", []):
                found.append(message_from_item(decode(raw)))  # type: ignore[arg-type]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    def acquire_turn_lock(self, thread_id: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
        return self.take_turn_lock(thread_id, holder, now_ms, ttl_ms)[0]

    def take_turn_lock(self, thread_id: str, holder: str, now_ms: int, ttl_ms: int) -> tuple[bool, str | None]:
        expires_at = now_ms + ttl_ms
        item = {
            "pk": thread_pk(thread_id),
            "sk": LOCK,
            "type": "lock",
            "holder": holder,
            "expires_at": expires_at,
            "ttl": expires_at // 1000 + 3600,
        }
        try:
            old = self._db.put_item(
                TableName=self._table,
                Item=encode(item),
                # Free, expired, or already ours (a holder may renew its lease).
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now OR holder = :holder",
                ExpressionAttributeValues=encode_values({":now": now_ms, ":holder": holder}),
                ReturnValues="ALL_OLD",
            ).get("Attributes")
        except ClientError as err:
            if is_condition_failure(err):
                return False, None
            raise
        previous = (decode(old) or {}).get("holder")
        return True, previous if previous != holder else None

    def release_turn_lock(self, thread_id: str, holder: str) -> None:
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=encode({"pk": thread_pk(thread_id), "sk": LOCK}),
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues=encode_values({":holder": holder}),
            )
        except ClientError as err:
            if not is_condition_failure(err):
                raise

    # -- helpers ----------------------------------------------------------------------------

    def _meta(self, thread_id: str) -> dict[str, Any] | None:
        raw = self._db.get_item(
            TableName=self._table, Key=encode({"pk": thread_pk(thread_id), "sk": META}), ConsistentRead=True
        )
        return decode(raw.get("Item"))

    def _batch_delete(self, keys: list[dict[str, Any]]) -> None:
        pending = {self._table: [{"DeleteRequest": {"Key": encode(k)}} for k in keys]}
        for attempt in range(8):
            answer = self._db.batch_write_item(RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if not pending:
                return
            time.sleep(0.05 * 2**attempt)
        raise RuntimeError("DynamoDB kept throttling the thread deletion")


def _message_item(m: Message) -> dict[str, Any]:
    return {
        "pk": thread_pk(m.thread_id),
        "sk": msg_sk(m.seq),
        "type": "message",
        "account_id": m.account_id,
        "end_user_id": m.end_user_id,
        "thread_id": m.thread_id,
        "seq": m.seq,
        "role": m.role,
        "kind": m.kind,
        **pack_json("content", m.content),
        "model": m.model,
        "request_id": m.request_id,
        "created_at": m.created_at,
    }
