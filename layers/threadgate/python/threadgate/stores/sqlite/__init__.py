"""SQLite adapters (the embedded default): one file in WAL mode, safe across processes."""

from __future__ import annotations

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
from threadgate.stores.sqlite.tools import SqliteToolStore


def open_sqlite(path: str) -> Stores:
    db = Database(path)
    return Stores(
        keys=SqliteKeyStore(db),
        threads=SqliteThreadStore(db),
        ledger=SqliteLedger(db),
        idempotency=SqliteIdempotencyStore(db),
        tools=SqliteToolStore(db),
        close=db.close,
        jobs=SqliteJobStore(db),
        deliveries=SqliteDeliveryLog(db),
        request_counts=SqliteRequestCounts(db),
        runs=SqliteRunStore(db),
    )


__all__ = ["open_sqlite", "Database"]
