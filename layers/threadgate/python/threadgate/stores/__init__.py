"""Store adapters, one per port: `sqlite/` (embedded default) and `dynamodb/` (AWS)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

from threadgate.ports import (
    DeliveryLog,
    IdempotencyStore,
    JobStore,
    KeyStore,
    Ledger,
    RequestCounts,
    RunStore,
    ThreadStore,
    ToolStore,
)


@dataclass
class Stores:
    keys: KeyStore
    threads: ThreadStore
    ledger: Ledger
    idempotency: IdempotencyStore
    tools: ToolStore
    close: Callable[[], Any] = lambda: None
    jobs: JobStore | None = None  # None: this deployment runs no async jobs
    deliveries: DeliveryLog | None = None  # None: webhook deliveries are not recorded
    request_counts: RequestCounts | None = None  # None: requests per day are not counted
    runs: RunStore | None = None  # runs of thread turns, their events and tool outcomes
    # A unit of work: the store calls made inside commit together where the store allows it
    # (SQLite: one transaction); elsewhere (DynamoDB) each commits by itself, in order, so the
    # code inside must be crash-safe either way. No await inside (stores/sqlite/db.py: tx).
    atomic: Callable[[], ContextManager[Any]] = nullcontext
