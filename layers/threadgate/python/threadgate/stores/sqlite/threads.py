"""ThreadStore on SQLite: threads, their messages (dense seq per thread) and turn locks."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Sequence

from threadgate.domain.errors import NotFound
from threadgate.domain.models import UNSET, Message, NewMessage, Thread
from threadgate.stores.sqlite.db import Database, dumps, loads

_THREAD_COLUMNS = "id, account_id, end_user_id, metadata, title, created_at, last_active_at, message_count"


def _thread(row: sqlite3.Row) -> Thread:
    return Thread(
        id=row["id"],
        account_id=row["account_id"],
        end_user_id=row["end_user_id"],
        metadata=loads(row["metadata"]),
        title=row["title"],
        created_at=row["created_at"],
        last_active_at=row["last_active_at"],
        message_count=row["message_count"],
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        thread_id=row["thread_id"],
        seq=row["seq"],
        role=row["role"],
        content=loads(row["content"]),
        kind=row["kind"],
        model=row["model"],
        request_id=row["request_id"],
        created_at=row["created_at"],
        account_id=row["account_id"],
        end_user_id=row["end_user_id"],
    )


def _set(c: sqlite3.Connection, account_id: str, thread_id: str, *, metadata: Any, title: Any) -> None:
    given = {}
    if metadata is not UNSET:
        given["metadata"] = dumps(metadata)
    if title is not UNSET:
        given["title"] = title
    if given:
        sets = ", ".join(f"{k} = ?" for k in given)
        c.execute(f"UPDATE threads SET {sets} WHERE id = ? AND account_id = ?", (*given.values(), thread_id, account_id))


class SqliteThreadStore:
    inline = True  # microsecond calls: made on the event loop (domain/off_loop.py)

    def __init__(self, db: Database):
        self.db = db

    def create_thread(self, t: Thread) -> None:
        with self.db.tx() as c:
            c.execute(
                f"INSERT INTO threads ({_THREAD_COLUMNS}, next_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (t.id, t.account_id, t.end_user_id, dumps(t.metadata), t.title, t.created_at,
                 t.last_active_at, t.message_count),
            )

    def get_thread(self, account_id: str, thread_id: str, end_user_id: str | None = None) -> Thread | None:
        sql = f"SELECT {_THREAD_COLUMNS} FROM threads WHERE id = ? AND account_id = ?"
        params: list[Any] = [thread_id, account_id]
        if end_user_id is not None:
            sql += " AND end_user_id = ?"
            params.append(end_user_id)
        row = self.db.one(sql, params)
        return _thread(row) if row else None

    def list_threads(
        self, account_id: str, end_user_id: str | None, limit: int, before: tuple[int, str] | None = None
    ) -> list[Thread]:
        sql = f"SELECT {_THREAD_COLUMNS} FROM threads WHERE account_id = ?"
        params: list[Any] = [account_id]
        if end_user_id is not None:
            sql += " AND end_user_id = ?"
            params.append(end_user_id)
        if before is not None:
            sql += " AND (last_active_at < ? OR (last_active_at = ? AND id < ?))"
            params += [before[0], before[0], before[1]]
        sql += " ORDER BY last_active_at DESC, id DESC LIMIT ?"
        params.append(limit)
        return [_thread(r) for r in self.db.query(sql, params)]

    def update_thread(self, account_id: str, thread_id: str, *, metadata: Any = UNSET, title: Any = UNSET) -> Thread | None:
        if metadata is not UNSET or title is not UNSET:  # nothing to change: no write transaction
            with self.db.tx() as c:
                _set(c, account_id, thread_id, metadata=metadata, title=title)
        return self.get_thread(account_id, thread_id)

    def update_thread_metadata(
        self, account_id: str, thread_id: str, change: Callable[[Any], Any], *, title: Any = UNSET
    ) -> Thread | None:
        with self.db.tx() as c:  # read and write inside one write transaction: nothing between
            row = c.execute(
                "SELECT metadata FROM threads WHERE id = ? AND account_id = ?", (thread_id, account_id)
            ).fetchone()
            if row is None:
                return None
            _set(c, account_id, thread_id, metadata=change(loads(row["metadata"])), title=title)
        return self.get_thread(account_id, thread_id)

    def delete_thread(self, account_id: str, thread_id: str) -> bool:
        with self.db.tx() as c:
            cur = c.execute("DELETE FROM threads WHERE id = ? AND account_id = ?", (thread_id, account_id))
            if cur.rowcount != 1:
                return False
            c.execute("DELETE FROM messages WHERE thread_id = ?", (thread_id,))
            c.execute("DELETE FROM thread_locks WHERE thread_id = ?", (thread_id,))
            return True

    def append_messages(
        self, account_id: str, thread_id: str, messages: Sequence[NewMessage], now_ms: int
    ) -> list[Message]:
        with self.db.tx() as c:
            # The counters move first (RETURNING: no read before the write); the inserts follow.
            row = c.execute(
                "UPDATE threads SET next_seq = next_seq + ?, message_count = message_count + ?, last_active_at = ?"
                " WHERE id = ? AND account_id = ? RETURNING next_seq, end_user_id",
                (len(messages), len(messages), now_ms, thread_id, account_id),
            ).fetchone()
            if row is None:
                raise NotFound("thread not found")
            seq, end_user_id = row["next_seq"] - len(messages), row["end_user_id"]
            stored = []
            for m in messages:
                c.execute(
                    "INSERT INTO messages (thread_id, seq, account_id, end_user_id, role, kind, content,"
                    " model, request_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (thread_id, seq, account_id, end_user_id, m.role, m.kind, dumps(m.content), m.model,
                     m.request_id, now_ms),
                )
                stored.append(
                    Message(thread_id, seq, m.role, m.content, m.kind, m.model, m.request_id, now_ms,
                            account_id, end_user_id)
                )
                seq += 1
            return stored

    def retract_last_message(self, account_id: str, thread_id: str, seq: int) -> bool:
        with self.db.tx() as c:
            cur = c.execute(
                "UPDATE threads SET next_seq = next_seq - 1, message_count = message_count - 1"
                " WHERE id = ? AND account_id = ? AND next_seq = ?",
                (thread_id, account_id, seq + 1),
            )
            if cur.rowcount != 1:
                return False
            c.execute("DELETE FROM messages WHERE thread_id = ? AND seq = ?", (thread_id, seq))
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
        sql = "SELECT * FROM messages WHERE thread_id = ? AND account_id = ?"
        params: list[Any] = [thread_id, account_id]
        if after_seq is not None:
            sql += " AND seq > ?"
            params.append(after_seq)
        if before_seq is not None:
            sql += " AND seq < ?"
            params.append(before_seq)
        sql += " ORDER BY seq " + ("DESC" if descending else "ASC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_message(r) for r in self.db.query(sql, params)]

    def acquire_turn_lock(self, thread_id: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
        return self.take_turn_lock(thread_id, holder, now_ms, ttl_ms)[0]

    def take_turn_lock(self, thread_id: str, holder: str, now_ms: int, ttl_ms: int) -> tuple[bool, str | None]:
        with self.db.tx() as c:
            row = c.execute("SELECT holder, expires_at FROM thread_locks WHERE thread_id = ?", (thread_id,)).fetchone()
            if row is not None and row["holder"] != holder and row["expires_at"] > now_ms:
                return False, None
            c.execute(
                "INSERT INTO thread_locks (thread_id, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT(thread_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
                (thread_id, holder, now_ms + ttl_ms),
            )
            return True, row["holder"] if row is not None and row["holder"] != holder else None

    def release_turn_lock(self, thread_id: str, holder: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM thread_locks WHERE thread_id = ? AND holder = ?", (thread_id, holder))
