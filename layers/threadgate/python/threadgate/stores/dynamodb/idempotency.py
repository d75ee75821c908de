"""IdempotencyStore on the `idempotency` table: `pk = IDEM#<scope>`, live until `expires_at`
(the `ttl` attribute lets DynamoDB drop it later; liveness is decided by `expires_at`, since TTL
deletion can lag by days)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from threadgate.domain.errors import Conflict
from threadgate.domain.models import IdempotencyRecord
from threadgate.stores.dynamodb._items import (
    decode,
    encode,
    encode_values,
    is_condition_failure,
    is_too_large,
    pack_json,
    unpack_json,
)

_CLAIM_ATTEMPTS = 5


def _pk(scope: str) -> str:
    return f"IDEM#{scope}"


class DynamoIdempotencyStore:
    def __init__(self, client: Any, table: str):
        self._db = client
        self._table = table

    def claim(self, scope: str, body_hash: str, now_ms: int, ttl_ms: int) -> IdempotencyRecord | None:
        expires_at = now_ms + ttl_ms
        item = {
            "pk": _pk(scope),
            "scope": scope,
            "body_hash": body_hash,
            "state": "in_progress",
            "created_at": now_ms,
            "expires_at": expires_at,
            "ttl": -(-expires_at // 1000),
        }
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                self._db.put_item(
                    TableName=self._table,
                    Item=encode(item),
                    ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                    ExpressionAttributeValues=encode_values({":now": now_ms}),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return None
            except ClientError as err:
                if not is_condition_failure(err):
                    raise
                existing = decode(err.response.get("Item")) or self._get(scope)
            if existing is not None:
                return _record(existing)
            # The holder abandoned it between our write and our read: try again.
        raise Conflict("This idempotency key is changing hands too quickly; try again.")

    def complete(self, scope: str, status_code: int, response: Any) -> None:
        """Stores the answer. One too large for an item even compressed is not kept: the claim is
        dropped, so a repeat runs again rather than failing forever."""
        ((field, value),) = pack_json("response", response).items()
        try:
            self._db.update_item(
                TableName=self._table,
                Key=encode({"pk": _pk(scope)}),
                UpdateExpression="SET #state = :done, status_code = :status, #field = :value",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#state": "state", "#field": field},
                ExpressionAttributeValues=encode_values({":done": "done", ":status": status_code, ":value": value}),
            )
        except ClientError as err:
            if is_too_large(err):
                self.abandon(scope)
            elif not is_condition_failure(err):
                raise

    def abandon(self, scope: str) -> None:
        """Drops an unfinished claim; a completed answer stays until it expires."""
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=encode({"pk": _pk(scope)}),
                ConditionExpression="#state = :in_progress",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=encode_values({":in_progress": "in_progress"}),
            )
        except ClientError as err:
            if not is_condition_failure(err):
                raise

    def _get(self, scope: str) -> dict[str, Any] | None:
        raw = self._db.get_item(TableName=self._table, Key=encode({"pk": _pk(scope)}), ConsistentRead=True)
        return decode(raw.get("Item"))


def _record(item: dict[str, Any]) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope=item["scope"],
        body_hash=item["body_hash"],
        state=item["state"],
        status_code=item.get("status_code"),
        response=unpack_json(item, "response"),
        created_at=item.get("created_at", 0),
    )
