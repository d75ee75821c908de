"""RequestCounts on the `usage` table: counter items updated with ADD (no read, no condition).

`pk = REQS#<account>#<yyyy-mm>`, `sk = <yyyy-mm-dd>#<shard>`. A counter item takes at most about
1,000 writes a second, so each add picks one of `_SHARDS` items of the day at random and a read
sums them: a month is one query of at most 31 × `_SHARDS` small items.
"""

from __future__ import annotations

import random
from typing import Any

from threadgate.domain.models import DayCounts
from threadgate.stores.dynamodb._items import encode, encode_values, query_all

_SHARDS = 8
_COUNTERS = ("requests", "errors", "cap_refusals")


def _pk(account_id: str, month: str) -> str:
    return f"REQS#{account_id}#{month}"


class DynamoRequestCounts:
    def __init__(self, client: Any, table: str):
        self._db = client
        self._table = table

    def add(
        self, account_id: str, day: str, *, error: bool = False, cap_refusal: bool = False, request: bool = True
    ) -> None:
        self._db.update_item(
            TableName=self._table,
            Key=encode({"pk": _pk(account_id, day[:7]), "sk": f"{day}#{random.randrange(_SHARDS)}"}),
            UpdateExpression="ADD requests :r, errors :e, cap_refusals :c",
            ExpressionAttributeValues=encode_values({":r": int(request), ":e": int(error), ":c": int(cap_refusal)}),
        )

    def daily(self, account_id: str, first_day: str, last_day: str) -> list[DayCounts]:
        if last_day < first_day:
            return []
        days: dict[str, DayCounts] = {}
        for month in _months(first_day[:7], last_day[:7]):
            for item in query_all(
                self._db,
                TableName=self._table,
                KeyConditionExpression="pk = :p AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues=encode_values(
                    {":p": _pk(account_id, month), ":lo": first_day, ":hi": last_day + "#~"}
                ),
            ):
                day = days.setdefault(item["sk"].partition("#")[0], DayCounts(item["sk"].partition("#")[0]))
                for counter in _COUNTERS:
                    setattr(day, counter, getattr(day, counter) + item.get(counter, 0))
        return [days[d] for d in sorted(days)]


def _months(first: str, last: str) -> list[str]:
    """'YYYY-MM' from first to last, inclusive."""
    year, month = int(first[:4]), int(first[5:7])
    out = []
    while (current := f"{year:04d}-{month:02d}") <= last:
        out.append(current)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out
