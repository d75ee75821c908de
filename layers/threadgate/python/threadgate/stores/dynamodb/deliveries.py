"""DeliveryLog on the `deliveries` table.

`pk = TOOL#<account>#<tool>` (the account inside the key: a query can only ever see its own
account's attempts), `sk = <created_at:015d>#<attempt:03d>#<tool_use_id>` (newest first when read
backwards), `ttl` = expiry in epoch seconds (DynamoDB deletes the item within days after it).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from threadgate.domain.models import DELIVERY_RETENTION_MS, DeliveryRecord
from threadgate.stores.dynamodb._items import decode, encode, encode_values, ts_key

_FIELDS = tuple(DeliveryRecord.__dataclass_fields__)


def _pk(account_id: str, tool_id: str) -> str:
    return f"TOOL#{account_id}#{tool_id}"


class DynamoDeliveryLog:
    def __init__(self, client: Any, table: str):
        self._db = client
        self._table = table

    def record(self, delivery: DeliveryRecord) -> None:
        item = {
            "pk": _pk(delivery.account_id, delivery.tool_id),
            "sk": f"{ts_key(delivery.created_at)}#{delivery.attempt:03d}#{delivery.tool_use_id}",
            "ttl": (delivery.created_at + DELIVERY_RETENTION_MS) // 1000,
            **asdict(delivery),
        }
        self._db.put_item(TableName=self._table, Item=encode(item))

    def recent(self, account_id: str, tool_id: str, limit: int) -> list[DeliveryRecord]:
        page = self._db.query(
            TableName=self._table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues=encode_values({":p": _pk(account_id, tool_id)}),
            ScanIndexForward=False,
            Limit=limit,
        )
        items = [decode(raw) or {} for raw in page.get("Items", [])]
        return [DeliveryRecord(**{f: item.get(f) for f in _FIELDS}) for item in items]
