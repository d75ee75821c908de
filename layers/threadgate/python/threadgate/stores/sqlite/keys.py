"""KeyStore on SQLite: accounts and API keys (only SHA-256 hashes of secrets are stored)."""

from __future__ import annotations

import sqlite3
from typing import Any

from threadgate.domain.models import UNSET, Account, ApiKey
from threadgate.stores.sqlite.db import Database, dumps, loads


def _account(row: sqlite3.Row) -> Account:
    return Account(
        id=row["id"],
        name=row["name"],
        cap_micros=row["cap_micros"],
        spent_micros=row["spent_micros"],
        reserved_micros=row["reserved_micros"],
        created_at=row["created_at"],
    )


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        prefix=row["prefix"],
        scope=row["scope"],
        cap_micros=row["cap_micros"],
        end_user_id=row["end_user_id"],
        metadata=loads(row["metadata"]),
        spent_micros=row["spent_micros"],
        reserved_micros=row["reserved_micros"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked=bool(row["revoked"]),
    )


class SqliteKeyStore:
    def __init__(self, db: Database):
        self.db = db

    def create_account(self, account: Account) -> None:
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO accounts (id, name, cap_micros, spent_micros, reserved_micros, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (account.id, account.name, account.cap_micros, account.spent_micros,
                 account.reserved_micros, account.created_at),
            )

    def get_account(self, account_id: str) -> Account | None:
        row = self.db.one("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return _account(row) if row else None

    def first_account(self) -> Account | None:
        row = self.db.one("SELECT * FROM accounts ORDER BY created_at LIMIT 1")
        return _account(row) if row else None

    def update_account(self, account_id: str, *, name: Any = UNSET, cap_micros: Any = UNSET) -> Account | None:
        sets, params = _assignments(name=name, cap_micros=cap_micros)
        if sets:
            with self.db.tx() as c:
                c.execute(f"UPDATE accounts SET {sets} WHERE id = ?", (*params, account_id))
        return self.get_account(account_id)

    def create_key(self, key: ApiKey, secret_hash: str) -> None:
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO keys (id, account_id, secret_hash, name, prefix, scope, cap_micros,"
                " end_user_id, metadata, spent_micros, reserved_micros, created_at, last_used_at, revoked)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key.id, key.account_id, secret_hash, key.name, key.prefix, key.scope, key.cap_micros,
                 key.end_user_id, dumps(key.metadata), key.spent_micros, key.reserved_micros,
                 key.created_at, key.last_used_at, int(key.revoked)),
            )

    def find_by_hash(self, secret_hash: str) -> ApiKey | None:
        row = self.db.one("SELECT * FROM keys WHERE secret_hash = ?", (secret_hash,))
        return _key(row) if row else None

    def get_key(self, account_id: str, key_id: str) -> ApiKey | None:
        row = self.db.one("SELECT * FROM keys WHERE id = ? AND account_id = ?", (key_id, account_id))
        return _key(row) if row else None

    def list_keys(self, account_id: str) -> list[ApiKey]:
        rows = self.db.query(
            "SELECT * FROM keys WHERE account_id = ? ORDER BY created_at DESC, rowid DESC", (account_id,)
        )
        return [_key(r) for r in rows]

    def update_key(
        self, account_id: str, key_id: str, *, name: Any = UNSET, cap_micros: Any = UNSET, metadata: Any = UNSET
    ) -> ApiKey | None:
        sets, params = _assignments(
            name=name, cap_micros=cap_micros, metadata=metadata if metadata is UNSET else dumps(metadata)
        )
        if sets:
            with self.db.tx() as c:
                c.execute(
                    f"UPDATE keys SET {sets} WHERE id = ? AND account_id = ?", (*params, key_id, account_id)
                )
        return self.get_key(account_id, key_id)

    def revoke_key(self, account_id: str, key_id: str, now_ms: int) -> bool:
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE keys SET revoked = 1 WHERE id = ? AND account_id = ? AND revoked = 0",
                (key_id, account_id),
            )
            return cur.rowcount == 1

    def touch_key(self, key_id: str, now_ms: int) -> None:
        with self.db.tx() as c:
            c.execute("UPDATE keys SET last_used_at = ? WHERE id = ?", (now_ms, key_id))


def _assignments(**fields: Any) -> tuple[str, list[Any]]:
    """SQL SET clause for the fields that were given (UNSET ones are skipped)."""
    given = {k: v for k, v in fields.items() if v is not UNSET}
    return ", ".join(f"{k} = ?" for k in given), list(given.values())
