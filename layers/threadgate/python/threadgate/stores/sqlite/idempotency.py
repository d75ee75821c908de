"""IdempotencyStore on SQLite: claim a scope once; later claims see the stored answer."""

from __future__ import annotations

from typing import Any

from threadgate.domain.models import IdempotencyRecord
from threadgate.stores.sqlite.db import Database, dumps, loads


class SqliteIdempotencyStore:
    def __init__(self, db: Database):
        self.db = db

    def claim(self, scope: str, body_hash: str, now_ms: int, ttl_ms: int) -> IdempotencyRecord | None:
        with self.db.tx() as c:
            row = c.execute(
                "SELECT * FROM idempotency WHERE scope = ? AND expires_at > ?", (scope, now_ms)
            ).fetchone()
            if row is not None:
                return IdempotencyRecord(
                    scope=scope,
                    body_hash=row["body_hash"],
                    state=row["state"],
                    status_code=row["status_code"],
                    response=loads(row["response"]),
                    created_at=row["created_at"],
                )
            c.execute(
                "INSERT OR REPLACE INTO idempotency (scope, body_hash, state, created_at, expires_at)"
                " VALUES (?, ?, 'in_progress', ?, ?)",
                (scope, body_hash, now_ms, now_ms + ttl_ms),
            )
            return None

    def complete(self, scope: str, status_code: int, response: Any) -> None:
        with self.db.tx() as c:
            c.execute(
                "UPDATE idempotency SET state = 'done', status_code = ?, response = ? WHERE scope = ?",
                (status_code, dumps(response), scope),
            )

    def abandon(self, scope: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM idempotency WHERE scope = ? AND state = 'in_progress'", (scope,))
