"""Ledger on the `usage` table (reservations, usage events) and the `keys` table (balances).

Every balance move is ONE TransactWriteItems over the key item, the account item and the
reservation/event item, so `spent + reserved <= cap` holds for both at every instant
(invariant 1) and a reservation is consumed exactly once (invariant 2).

usage items:
- `RES#<id>` / `RES`: an open reservation; gsi1 = `RESERVATIONS` x `<expires_at:015d>#<id>` (the
  sweeper's queue); `ttl` a day after expiry only cleans up what the sweeper somehow missed.
- `KEY#<key>#<yyyy-mm>` / `<created_at:015d>#<request_id>#<event id>`: a usage event;
  gsi1 = `ACCOUNT#<account>#<yyyy-mm>` x the same sort key. Settling also adds the month to
  the account item's `usage_months` set, so a report queries only months that have events.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from threadgate.domain.errors import AccountBudgetExceeded, Conflict, KeyCapExceeded
from threadgate.domain.models import Reservation, UsageEvent
from threadgate.stores.dynamodb._items import (
    TransactionCancelled,
    decode,
    encode,
    encode_values,
    query_all,
    transact,
    ts_key,
)
from threadgate.stores.dynamodb.keys import account_pk, key_pk

_RES_SK = "RES"
_RES_QUEUE = "RESERVATIONS"
_RES_TTL_GRACE_S = 24 * 3600

_CAP_CONDITION = "attribute_exists(pk) AND (attribute_not_exists(cap_micros) OR headroom_micros >= :est)"


def month_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m")


def event_sort_key(event: UsageEvent) -> str:
    return f"{ts_key(event.created_at)}#{event.request_id}#{event.id}"


class DynamoLedger:
    def __init__(self, client: Any, *, usage_table: str, keys_table: str):
        self._db = client
        self._usage = usage_table
        self._keys = keys_table

    def reserve(self, reservation: Reservation, *, count_request: bool = False) -> bool:
        """Never counts the request (returns False): a counter item in every reservation's
        transaction would be one hot item that concurrent transactions conflict on; the HTTP
        layer counts with a plain ADD after the answer (stores/dynamodb/request_counts.py)."""
        r = reservation
        hold = {":est": r.estimate_micros, ":neg": -r.estimate_micros}
        item = {
            "pk": f"RES#{r.id}",
            "sk": _RES_SK,
            "id": r.id,
            "key_id": r.key_id,
            "account_id": r.account_id,
            "estimate_micros": r.estimate_micros,
            "created_at": r.created_at,
            "expires_at": r.expires_at,
            "request_id": r.request_id,
            "model": r.model,
            "provider": r.provider,
            "thread_id": r.thread_id,
            "ttl": r.expires_at // 1000 + _RES_TTL_GRACE_S,
            "gsi1pk": _RES_QUEUE,
            "gsi1sk": f"{ts_key(r.expires_at)}#{r.id}",
        }
        try:
            transact(
                self._db,
                [
                    self._balance(
                        key_pk(r.key_id),
                        "ADD reserved_micros :est, headroom_micros :neg",
                        # A revoked key reserves nothing, even mid-turn.
                        f"account_id = :acc AND revoked = :no AND {_CAP_CONDITION}",
                        {**hold, ":acc": r.account_id, ":no": False},
                    ),
                    self._balance(account_pk(r.account_id), "ADD reserved_micros :est, headroom_micros :neg",
                                  _CAP_CONDITION, hold),
                    {
                        "Put": {
                            "TableName": self._usage,
                            "Item": encode(item),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ],
            )
        except TransactionCancelled as cancelled:
            if cancelled.condition_failed(0):
                raise KeyCapExceeded("The key's remaining budget cannot cover this request.") from None
            if cancelled.condition_failed(1):
                raise AccountBudgetExceeded("The account's remaining budget cannot cover this request.") from None
            if cancelled.condition_failed(2):
                raise Conflict(f"Reservation {r.id} already exists.") from None
            raise
        return False

    def settle(self, reservation_id: str, event: UsageEvent) -> bool:
        res = self._reservation(reservation_id)
        if res is None:
            return False
        move = {":unhold": -res.estimate_micros, ":cost": event.cost_micros,
                ":delta": res.estimate_micros - event.cost_micros}
        expression = "ADD reserved_micros :unhold, spent_micros :cost, headroom_micros :delta"
        month = month_of(event.created_at)
        sort_key = event_sort_key(event)
        item = {
            "pk": f"KEY#{event.key_id}#{month}",
            "sk": sort_key,
            "gsi1pk": f"ACCOUNT#{event.account_id}#{month}",
            "gsi1sk": sort_key,
            "type": "usage_event",
            **_event_fields(event),
        }
        try:
            transact(
                self._db,
                [
                    self._consume(reservation_id),
                    self._balance(key_pk(res.key_id), expression, "attribute_exists(pk)", move),
                    self._balance(
                        account_pk(res.account_id),
                        expression + ", usage_months :month",
                        "attribute_exists(pk)",
                        {**move, ":month": {month}},
                    ),
                    {"Put": {"TableName": self._usage, "Item": encode(item)}},
                ],
            )
        except TransactionCancelled as cancelled:
            if cancelled.condition_failed(0):
                return False  # settled or released by someone else meanwhile
            raise
        return True

    def release(self, reservation_id: str) -> bool:
        res = self._reservation(reservation_id)
        if res is None:
            return False
        give_back = {":unhold": -res.estimate_micros, ":est": res.estimate_micros}
        expression = "ADD reserved_micros :unhold, headroom_micros :est"
        try:
            transact(
                self._db,
                [
                    self._consume(reservation_id),
                    self._balance(key_pk(res.key_id), expression, "attribute_exists(pk)", give_back),
                    self._balance(account_pk(res.account_id), expression, "attribute_exists(pk)", give_back),
                ],
            )
        except TransactionCancelled as cancelled:
            if cancelled.condition_failed(0):
                return False
            raise
        return True

    def expired_reservations(self, now_ms: int, limit: int = 100) -> list[Reservation]:
        """Reservations with expires_at <= now_ms, the longest expired first."""
        if limit <= 0:
            return []
        page = self._db.query(
            TableName=self._usage,
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :q AND gsi1sk < :bound",
            ExpressionAttributeValues=encode_values({":q": _RES_QUEUE, ":bound": ts_key(now_ms + 1)}),
            ScanIndexForward=True,
            Limit=limit,
        )
        return [_reservation(decode(raw)) for raw in page.get("Items", [])]  # type: ignore[arg-type]

    def usage_events(
        self, account_id: str, from_ms: int, to_ms: int, key_id: str | None = None
    ) -> list[UsageEvent]:
        """Events with from_ms <= created_at < to_ms, newest first, of `account_id` only: the
        account is in the index key (all keys) or in a server-side condition of the key's query."""
        from_ms = max(from_ms, 0)
        if to_ms <= from_ms:
            return []
        account = decode(
            self._db.get_item(
                TableName=self._keys, Key=encode({"pk": account_pk(account_id)}), ConsistentRead=True
            ).get("Item")
        )
        if account is None:
            return []
        # The account item lists the months that have events, so a wide window costs one query
        # per month with usage rather than one per calendar month.
        first, last = month_of(from_ms), month_of(to_ms - 1)
        months = sorted((m for m in account.get("usage_months", ()) if first <= m <= last), reverse=True)
        window = {":lo": ts_key(from_ms), ":hi": ts_key(to_ms - 1) + "~"}  # "~" sorts after "#..."
        events: list[UsageEvent] = []
        for month in months:
            if key_id is None:
                items = query_all(
                    self._db,
                    TableName=self._usage,
                    IndexName="gsi1",
                    KeyConditionExpression="gsi1pk = :p AND gsi1sk BETWEEN :lo AND :hi",
                    ExpressionAttributeValues=encode_values({":p": f"ACCOUNT#{account_id}#{month}", **window}),
                    ScanIndexForward=False,
                )
            else:
                items = query_all(
                    self._db,
                    TableName=self._usage,
                    KeyConditionExpression="pk = :p AND sk BETWEEN :lo AND :hi",
                    FilterExpression="account_id = :acc",
                    ExpressionAttributeValues=encode_values(
                        {":p": f"KEY#{key_id}#{month}", ":acc": account_id, **window}
                    ),
                    ScanIndexForward=False,
                    ConsistentRead=True,
                )
            events.extend(_event(item) for item in items)
        # Same-millisecond events: order by id, like every other adapter.
        events.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        return events

    # -- helpers ----------------------------------------------------------------------------

    def _reservation(self, reservation_id: str) -> Reservation | None:
        raw = self._db.get_item(
            TableName=self._usage, Key=encode({"pk": f"RES#{reservation_id}", "sk": _RES_SK}), ConsistentRead=True
        )
        item = decode(raw.get("Item"))
        return _reservation(item) if item else None

    def _consume(self, reservation_id: str) -> dict[str, Any]:
        return {
            "Delete": {
                "TableName": self._usage,
                "Key": encode({"pk": f"RES#{reservation_id}", "sk": _RES_SK}),
                "ConditionExpression": "attribute_exists(pk)",
            }
        }

    def _balance(self, pk: str, update: str, condition: str, values: dict[str, Any]) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._keys,
                "Key": encode({"pk": pk}),
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeValues": encode_values(values),
            }
        }


_EVENT_FIELDS = (
    "id", "request_id", "key_id", "account_id", "thread_id", "model", "provider", "input_tokens",
    "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "upstream_cost_micros",
    "cost_micros", "latency_ms", "status", "created_at", "price_tier", "service_tier",
)


def _event_fields(event: UsageEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _EVENT_FIELDS}


def _event(item: dict[str, Any]) -> UsageEvent:
    # Events written before round 2 have no tier attributes: they were priced at the base tier.
    tiers = {"price_tier": "base", "service_tier": "default"}
    return UsageEvent(**{name: item.get(name, tiers.get(name)) for name in _EVENT_FIELDS})


def _reservation(item: dict[str, Any]) -> Reservation:
    return Reservation(
        id=item["id"],
        key_id=item["key_id"],
        account_id=item["account_id"],
        estimate_micros=item["estimate_micros"],
        created_at=item["created_at"],
        expires_at=item["expires_at"],
        request_id=item["request_id"],
        model=item["model"],
        provider=item["provider"],
        thread_id=item.get("thread_id"),
    )
