"""Ledger on SQLite: reserve / settle / release in single transactions (DESIGN invariant 1, 2)."""

from __future__ import annotations

import sqlite3
from dataclasses import fields

from threadgate.domain.errors import AccountBudgetExceeded, KeyCapExceeded
from threadgate.domain.models import Reservation, UsageEvent
from threadgate.domain.usage import day_of
from threadgate.stores.sqlite.db import Database
from threadgate.stores.sqlite.request_counts import add_count

_NO_BUDGET = "the remaining budget cannot cover this request"
_EVENT_FIELDS = [f.name for f in fields(UsageEvent)]
_INSERT_EVENT = (f"INSERT INTO usage_events ({', '.join(_EVENT_FIELDS)})"
                 f" VALUES ({', '.join('?' * len(_EVENT_FIELDS))})")


def _reservation(row: sqlite3.Row) -> Reservation:
    return Reservation(**{k: row[k] for k in row.keys()})


def _event(row: sqlite3.Row) -> UsageEvent:
    return UsageEvent(**{k: row[k] for k in row.keys()})


class SqliteLedger:
    def __init__(self, db: Database):
        self.db = db

    def reserve(self, r: Reservation, *, count_request: bool = False) -> bool:
        with self.db.tx() as c:
            # The conditional UPDATE is the check: it matches only while the estimate still fits.
            key = c.execute(
                "UPDATE keys SET reserved_micros = reserved_micros + ?"
                " WHERE id = ? AND account_id = ? AND revoked = 0"
                " AND (cap_micros IS NULL OR spent_micros + reserved_micros + ? <= cap_micros)",
                (r.estimate_micros, r.key_id, r.account_id, r.estimate_micros),
            )
            if key.rowcount != 1:
                raise KeyCapExceeded(f"key {_NO_BUDGET}")
            account = c.execute(
                "UPDATE accounts SET reserved_micros = reserved_micros + ?"
                " WHERE id = ? AND (cap_micros IS NULL OR spent_micros + reserved_micros + ? <= cap_micros)",
                (r.estimate_micros, r.account_id, r.estimate_micros),
            )
            if account.rowcount != 1:
                raise AccountBudgetExceeded(f"account {_NO_BUDGET}")  # rolls back the key update
            c.execute(
                "INSERT INTO reservations (id, key_id, account_id, estimate_micros, created_at,"
                " expires_at, request_id, model, provider, thread_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.id, r.key_id, r.account_id, r.estimate_micros, r.created_at, r.expires_at,
                 r.request_id, r.model, r.provider, r.thread_id),
            )
            if count_request:  # the request's count rides in this write: no transaction of its own
                add_count(c, r.account_id, day_of(r.created_at))
            return count_request

    def _close(self, c: sqlite3.Connection, reservation_id: str, spent_micros: int) -> bool:
        """Delete the reservation and move its estimate out of `reserved` (and `spent_micros`
        into `spent`) on key and account. False if it was already closed: exactly once."""
        row = c.execute(
            "DELETE FROM reservations WHERE id = ? RETURNING key_id, account_id, estimate_micros", (reservation_id,)
        ).fetchone()
        if row is None:
            return False
        for table, id_ in (("keys", row["key_id"]), ("accounts", row["account_id"])):
            c.execute(
                f"UPDATE {table} SET reserved_micros = reserved_micros - ?,"
                " spent_micros = spent_micros + ? WHERE id = ?",
                (row["estimate_micros"], spent_micros, id_),
            )
        return True

    def settle(self, reservation_id: str, event: UsageEvent) -> bool:
        with self.db.tx() as c:
            if not self._close(c, reservation_id, event.cost_micros):
                return False
            c.execute(_INSERT_EVENT, [getattr(event, f) for f in _EVENT_FIELDS])
            return True

    def release(self, reservation_id: str) -> bool:
        with self.db.tx() as c:
            return self._close(c, reservation_id, 0)

    def expired_reservations(self, now_ms: int, limit: int = 100) -> list[Reservation]:
        rows = self.db.query(
            "SELECT * FROM reservations WHERE expires_at <= ? ORDER BY expires_at LIMIT ?", (now_ms, limit)
        )
        return [_reservation(r) for r in rows]

    def usage_events(self, account_id: str, from_ms: int, to_ms: int, key_id: str | None = None) -> list[UsageEvent]:
        sql = "SELECT * FROM usage_events WHERE account_id = ? AND created_at >= ? AND created_at < ?"
        params: list = [account_id, from_ms, to_ms]
        if key_id is not None:
            sql += " AND key_id = ?"
            params.append(key_id)
        rows = self.db.query(sql + " ORDER BY created_at DESC, id DESC", params)
        return [_event(r) for r in rows]
