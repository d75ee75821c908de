"""DeliveryLog on SQLite: one row per attempt; rows past the retention are pruned as new ones arrive."""

from __future__ import annotations

from dataclasses import astuple, fields

from threadgate.domain.models import DELIVERY_RETENTION_MS, DeliveryRecord
from threadgate.stores.sqlite.db import Database

_COLUMNS = [f.name for f in fields(DeliveryRecord)]


class SqliteDeliveryLog:
    def __init__(self, db: Database):
        self.db = db

    def record(self, delivery: DeliveryRecord) -> None:
        with self.db.tx() as c:
            c.execute(
                f"INSERT INTO webhook_deliveries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                astuple(delivery),
            )
            # Indexed by age: deletes only what just expired.
            c.execute("DELETE FROM webhook_deliveries WHERE created_at < ?",
                      (delivery.created_at - DELIVERY_RETENTION_MS,))

    def recent(self, account_id: str, tool_id: str, limit: int) -> list[DeliveryRecord]:
        rows = self.db.query(
            f"SELECT {', '.join(_COLUMNS)} FROM webhook_deliveries WHERE account_id = ? AND tool_id = ?"
            " ORDER BY created_at DESC, attempt DESC LIMIT ?",
            (account_id, tool_id, limit),
        )
        return [DeliveryRecord(**dict(row)) for row in rows]
