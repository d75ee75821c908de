"""Connection, schema and transactions.

One connection per process, guarded by a lock: SQLite serializes writers anyway, and the gateway's
store calls are short. `BEGIN IMMEDIATE` takes the write lock up front so a check-then-write
(the cap reservation) is atomic across processes sharing the file, not only across threads.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from threadgate import jsoncodec
from threadgate.local_files import open_private_sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, cap_micros INTEGER,
  spent_micros INTEGER NOT NULL DEFAULT 0, reserved_micros INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, account_id TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL, prefix TEXT NOT NULL, scope TEXT NOT NULL, cap_micros INTEGER,
  end_user_id TEXT, metadata TEXT, spent_micros INTEGER NOT NULL DEFAULT 0,
  reserved_micros INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,
  last_used_at INTEGER, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS keys_by_account ON keys(account_id, created_at DESC);
CREATE TABLE IF NOT EXISTS threads (
  id TEXT PRIMARY KEY, account_id TEXT NOT NULL, end_user_id TEXT, metadata TEXT, title TEXT,
  created_at INTEGER NOT NULL, last_active_at INTEGER NOT NULL,
  message_count INTEGER NOT NULL DEFAULT 0, next_seq INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS threads_by_account ON threads(account_id, last_active_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS threads_by_end_user
  ON threads(account_id, end_user_id, last_active_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS messages (
  thread_id TEXT NOT NULL, seq INTEGER NOT NULL, account_id TEXT NOT NULL, end_user_id TEXT,
  role TEXT NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL, model TEXT, request_id TEXT,
  created_at INTEGER NOT NULL, PRIMARY KEY (thread_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS thread_locks (
  thread_id TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
  id TEXT PRIMARY KEY, key_id TEXT NOT NULL, account_id TEXT NOT NULL,
  estimate_micros INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  request_id TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, thread_id TEXT
);
-- Open reservations only (a settle deletes its row): the sweep scans them; an index on expiry
-- would be written by every reserve and settle for a read every few seconds.
DROP INDEX IF EXISTS reservations_by_expiry;
CREATE TABLE IF NOT EXISTS usage_events (
  id TEXT PRIMARY KEY, request_id TEXT NOT NULL, key_id TEXT NOT NULL, account_id TEXT NOT NULL,
  thread_id TEXT, model TEXT NOT NULL, provider TEXT NOT NULL,
  input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
  cache_creation_input_tokens INTEGER NOT NULL, cache_read_input_tokens INTEGER NOT NULL,
  upstream_cost_micros INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
  latency_ms INTEGER NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
  price_tier TEXT NOT NULL DEFAULT 'base', service_tier TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX IF NOT EXISTS usage_by_account ON usage_events(account_id, created_at DESC);
CREATE INDEX IF NOT EXISTS usage_by_key ON usage_events(key_id, created_at DESC);
CREATE TABLE IF NOT EXISTS idempotency (
  scope TEXT PRIMARY KEY, body_hash TEXT NOT NULL, state TEXT NOT NULL, status_code INTEGER,
  response TEXT, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tools (
  id TEXT PRIMARY KEY, account_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
  input_schema TEXT NOT NULL, webhook_url TEXT NOT NULL, timeout_ms INTEGER NOT NULL,
  secret TEXT NOT NULL, created_at INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS tools_live_name ON tools(account_id, name) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, account_id TEXT NOT NULL, key_id TEXT NOT NULL, endpoint TEXT NOT NULL,
  body TEXT NOT NULL, model TEXT, status TEXT NOT NULL, created_at INTEGER NOT NULL,
  started_at INTEGER, completed_at INTEGER, response TEXT, error TEXT,
  cost_micros INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs(key_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs(created_at) WHERE status IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  account_id TEXT NOT NULL, tool_id TEXT NOT NULL, tool_use_id TEXT NOT NULL, attempt INTEGER NOT NULL,
  outcome TEXT NOT NULL, status_code INTEGER, reason TEXT, latency_ms INTEGER NOT NULL,
  created_at INTEGER NOT NULL, thread_id TEXT, request_id TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_by_tool
  ON webhook_deliveries(account_id, tool_id, created_at DESC, attempt DESC);
CREATE INDEX IF NOT EXISTS deliveries_by_age ON webhook_deliveries(created_at);
CREATE TABLE IF NOT EXISTS request_counts (
  account_id TEXT NOT NULL, day TEXT NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
  errors INTEGER NOT NULL DEFAULT 0, cap_refusals INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (account_id, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, account_id TEXT NOT NULL, thread_id TEXT NOT NULL, status TEXT NOT NULL,
  created_at INTEGER NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs(created_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS runs_by_thread ON runs(thread_id);
CREATE TABLE IF NOT EXISTS run_events (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tool_outcomes (
  run_id TEXT NOT NULL, tool_use_id TEXT NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (run_id, tool_use_id)
) WITHOUT ROWID;
"""


def dumps(value: Any) -> str | None:
    return None if value is None else jsoncodec.dumps(value).decode()


def loads(raw: str | None) -> Any:
    return None if raw is None else jsoncodec.loads(raw)


class Database:
    def __init__(self, path: str):
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (autocommit otherwise).
        if path == ":memory:":
            self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        else:
            self.conn = open_private_sqlite(Path(path), timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        self._depth = 0  # transactions open (nested ones are savepoints); guarded by `lock`
        with self.lock:
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(SCHEMA)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added after a database was created (CREATE TABLE IF NOT EXISTS keeps the old
        shape): round 2 records the price tiers on usage events."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(usage_events)")}
        for column, default in (("price_tier", "base"), ("service_tier", "default")):
            if column not in have:
                self.conn.execute(f"ALTER TABLE usage_events ADD COLUMN {column} TEXT NOT NULL DEFAULT '{default}'")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database write lock from its first statement.

        Opened inside another (a unit of work, `Stores.atomic`), it is a savepoint of that one:
        it rolls back alone when it raises (each store call stays atomic by itself), and commits
        with the outer one. An exception leaving the outermost rolls ALL of it back: a unit
        catches inside what it must keep. Never held across an await: the lock is re-entrant on
        the event loop's thread, so another coroutine's statements would join the transaction."""
        with self.lock:
            depth = self._depth
            self.conn.execute(f"SAVEPOINT s{depth}" if depth else "BEGIN IMMEDIATE")
            self._depth = depth + 1  # only once begun: a BEGIN that timed out opened nothing
            try:
                yield self.conn
            except BaseException:
                self.conn.execute(f"ROLLBACK TO s{depth}" if depth else "ROLLBACK")
                if depth:
                    self.conn.execute(f"RELEASE s{depth}")
                raise
            else:
                self.conn.execute(f"RELEASE s{depth}" if depth else "COMMIT")
            finally:
                self._depth = depth

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: tuple | list = ()) -> sqlite3.Row | None:
        with self.lock:
            return self.conn.execute(sql, params).fetchone()

    def close(self) -> None:
        with self.lock:
            self.conn.close()
