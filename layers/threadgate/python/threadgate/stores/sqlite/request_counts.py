"""RequestCounts on SQLite: one row per account and day, incremented in place."""

from __future__ import annotations

import sqlite3

from threadgate.domain.models import DayCounts
from threadgate.stores.sqlite.db import Database

_ADD = (
    "INSERT INTO request_counts (account_id, day, requests, errors, cap_refusals) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (account_id, day) DO UPDATE SET requests = requests + excluded.requests,"
    " errors = errors + excluded.errors, cap_refusals = cap_refusals + excluded.cap_refusals"
)


def add_count(
    c: sqlite3.Connection, account_id: str, day: str, *, request: bool = True, error: bool = False,
    cap_refusal: bool = False,
) -> None:
    """The increment, inside the caller's transaction (the ledger counts with a reservation)."""
    c.execute(_ADD, (account_id, day, int(request), int(error), int(cap_refusal)))


class SqliteRequestCounts:
    inline = True  # microsecond calls: made on the event loop (domain/off_loop.py)

    def __init__(self, db: Database):
        self.db = db

    def add(
        self, account_id: str, day: str, *, error: bool = False, cap_refusal: bool = False, request: bool = True
    ) -> None:
        with self.db.tx() as c:
            add_count(c, account_id, day, request=request, error=error, cap_refusal=cap_refusal)

    def daily(self, account_id: str, first_day: str, last_day: str) -> list[DayCounts]:
        rows = self.db.query(
            "SELECT day, requests, errors, cap_refusals FROM request_counts"
            " WHERE account_id = ? AND day BETWEEN ? AND ? ORDER BY day",
            (account_id, first_day, last_day),
        )
        return [DayCounts(**dict(row)) for row in rows]
