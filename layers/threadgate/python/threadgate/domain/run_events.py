"""Where a run's §6.2 events go: numbered (the SSE `id:`), stored in the RunStore, and handed
live to whoever streams the run in this process.

Every run's events are stored, so a dropped stream resumes with `Last-Event-ID` from any process
and a run driven elsewhere (Step Functions) is relayed from the store. Stream deltas are stored
in batches — at most every `interval_s` and at each step boundary — written off the event loop
(`domain.off_loop`), so the live stream never waits for a network store (a short answer costs
one write).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Protocol

from threadgate.domain.off_loop import off_loop
from threadgate.ports import RunStore

FLUSH_INTERVAL_S = 0.2


class EventSink(Protocol):
    next_seq: int  # the number the next event will get
    inline: bool  # the store answers inline (SQLite): flush_inline() may be used

    def emit(self, event: dict[str, Any]) -> int:
        """Number, store (soon) and hand on one event; returns its number."""

    async def flush(self) -> None:
        """Every event emitted so far is stored when this returns."""

    def flush_inline(self) -> None:
        """flush() without an await, for an inline store: inside a unit of work
        (`Stores.atomic`) the events commit with the run's other writes."""


class RunEventLog:
    def __init__(
        self,
        runs: RunStore,
        run_id: str,
        *,
        next_seq: int = 1,
        live: Callable[[int, dict[str, Any]], None] | None = None,
        interval_s: float = FLUSH_INTERVAL_S,
    ):
        self._runs, self._run_id, self._live, self._interval = runs, run_id, live, interval_s
        self.next_seq = next_seq
        self._pending: list[dict[str, Any]] = []
        self._pending_from = next_seq
        self._writer: asyncio.Task | None = None
        self._failure: Exception | None = None
        self._written_at = time.monotonic()

    @property
    def inline(self) -> bool:
        return getattr(self._runs, "inline", False)

    @classmethod
    def resume(cls, runs: RunStore, run_id: str, **kwargs: Any) -> "RunEventLog":
        """A log continuing after the events a previous step (maybe another process) stored."""
        return cls(runs, run_id, next_seq=runs.last_event_seq(run_id) + 1, **kwargs)

    def emit(self, event: dict[str, Any]) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self._pending.append(event)
        if self._live is not None:
            self._live(seq, event)
        if self._writer is None and time.monotonic() - self._written_at >= self._interval:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return seq

    async def flush(self) -> None:
        """Raises what the store raised if a batch could not be written (it stays pending)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._pending:
            self._writer = asyncio.get_running_loop().create_task(self._write())
            await asyncio.shield(self._writer)
        self._raise_failure()

    def flush_inline(self) -> None:
        """Raises what the store raised (the batch stays pending). A writer task not yet run
        finds nothing left to write: an inline store's writer runs without suspending."""
        assert self.inline, "flush_inline() needs a store that answers inline"
        if self._pending:
            batch, first = self._pending, self._pending_from
            self._runs.append_events(self._run_id, first, batch)
            self._pending, self._pending_from = [], first + len(batch)
            self._written_at = time.monotonic()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    async def _write(self) -> None:
        try:
            while self._pending:
                batch, first = self._pending, self._pending_from
                self._pending, self._pending_from = [], first + len(batch)
                try:
                    await off_loop(self._runs.append_events, self._run_id, first, batch)
                except Exception as exc:  # keep the batch (no gap in the numbers); flush reports it
                    self._pending, self._pending_from = batch + self._pending, first
                    self._failure = exc
                    return
                self._written_at = time.monotonic()
        finally:
            self._writer = None
