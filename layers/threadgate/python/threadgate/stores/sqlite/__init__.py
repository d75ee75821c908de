"""SQLite adapters (the embedded default): one file in WAL mode, safe across processes."""

from __future__ import annotations

from pathlib import Path

from threadgate.stores import Stores
from threadgate.stores.sqlite.db import Database
from threadgate.stores.sqlite.deliveries import SqliteDeliveryLog
from threadgate.stores.sqlite.idempotency import SqliteIdempotencyStore
from threadgate.stores.sqlite.jobs import SqliteJobStore
from threadgate.stores.sqlite.keys import SqliteKeyStore
from threadgate.stores.sqlite.ledger import SqliteLedger
from threadgate.stores.sqlite.request_counts import SqliteRequestCounts
from threadgate.stores.sqlite.runs import SqliteRunStore
from threadgate.stores.sqlite.threads import SqliteThreadStore
from threadgate.stores.sqlite.sealing import KEY_FILE, LocalSecretBox
from threadgate.stores.sqlite.tools import SqliteToolStore


def open_sqlite(path: str) -> Stores:
    """Stores on the database file `path` (":memory:" for a throwaway one); webhook secrets are
    sealed with the key file beside it (an in-memory database gets an in-memory key)."""
    db = Database(path)
    secrets = LocalSecretBox.ephemeral() if path == ":memory:" else LocalSecretBox.from_key_file(
        Path(path).with_name(KEY_FILE))
    return Stores(
        keys=SqliteKeyStore(db),
        threads=SqliteThreadStore(db),
        ledger=SqliteLedger(db),
        idempotency=SqliteIdempotencyStore(db),
        tools=SqliteToolStore(db, secrets),
        close=db.close,
        jobs=SqliteJobStore(db),
        deliveries=SqliteDeliveryLog(db),
        request_counts=SqliteRequestCounts(db),
        runs=SqliteRunStore(db),
        atomic=db.tx,
    )


__all__ = ["open_sqlite", "Database"]
