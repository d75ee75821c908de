"""Local mode: a finished turn's messages are indexed in a background batch, not on its request.

A turn hands its messages to `BatchedIndexer.index_messages`, which only notes them (durably, in
a small journal) and returns; a flusher thread embeds and upserts what is pending in one go once
FLUSH_DELAY_S has passed since the oldest pending message, or at once when FLUSH_AT are pending
(one tokenizer pass per message, one index transaction per batch). What holds (API.md §9):

- Read your writes: `search` first indexes everything pending (and waits for a batch in flight),
  so a search made after a turn's response finds its messages.
- Crash catch-up: the journal (`pending.sqlite3` next to the index) holds (account, thread, seq)
  of every message handed over and not yet indexed; it is written before `index_messages`
  returns and cleared when the batch is in the index. After a crash (kill -9 included) the next
  process, as it starts, reads the messages named there back from the thread store and indexes
  them (a search waits for that); a message gone meanwhile (its thread deleted) is dropped.
- Deletion wins: `delete_thread` drops the thread's pending messages and deletes its entries
  while no batch is in flight; a batch indexes only messages whose thread still exists, checked
  under the same lock. The API deletes the thread from its store before the index, so a message
  handed over before or after the deletion never becomes searchable again.
- Bounded: at most MAX_PENDING messages or MAX_PENDING_CHARS characters wait; past that the turn
  handing over more indexes the backlog itself (the inline cost, as before this module).

A thread rather than an asyncio task: embedding is CPU work that must not hold the event loop for
a whole batch, and searches (in worker threads) flush from outside the loop anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from threadgate.domain.models import Message
from threadgate.domain.search import index_document
from threadgate.local_files import open_private_sqlite
from threadgate.ports import ThreadStore

log = logging.getLogger(__name__)

FLUSH_DELAY_S = 0.1  # the longest a handed-over message waits for its batch (a search does not)
FLUSH_AT = 64  # pending messages that start a batch at once
MAX_PENDING = 1024
MAX_PENDING_CHARS = 4_000_000
IDLE_EXIT_S = 5.0  # the flusher thread ends when idle this long (restarted by the next message)


class PendingJournal:
    """(account, thread, seq) of the messages handed over and not yet indexed, in SQLite (WAL,
    synchronous=NORMAL: a commit survives the process being killed). Its own file, so that the
    request path never waits for the index's batch transaction."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_private_sqlite(path)  # message keys only, but 0600 like the rest of the data dir
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (account_id TEXT NOT NULL, thread_id TEXT NOT NULL, "
            "seq INTEGER NOT NULL, PRIMARY KEY (account_id, thread_id, seq)) WITHOUT ROWID"
        )

    def add(self, keys: Sequence[tuple[str, str, int]]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", keys)

    def remove(self, keys: Sequence[tuple[str, str, int]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM pending WHERE account_id = ? AND thread_id = ? AND seq = ?", keys)
            except BaseException:
                self._db.execute("ROLLBACK")  # else the next adds would join a transaction never committed
                raise
            self._db.execute("COMMIT")

    def remove_thread(self, account_id: str, thread_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE account_id = ? AND thread_id = ?", (account_id, thread_id))

    def remove_account(self, account_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE account_id = ?", (account_id,))

    def all(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return self._db.execute("SELECT account_id, thread_id, seq FROM pending").fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _key(doc: dict[str, Any]) -> tuple[str, str, int]:
    return doc["account_id"], doc["thread_id"], int(doc["seq"])


class BatchedIndexer:
    """The `Indexer` of local mode (same methods), with `index_messages` deferred to a batch."""

    def __init__(self, indexer: Any, threads: Callable[[], ThreadStore], journal_path: Path) -> None:
        self.indexer = indexer  # threadgate.search.indexing.Indexer
        self.threads = threads  # the runtime's thread store (a test may swap the stores)
        self.journal = PendingJournal(journal_path)
        self._pending: dict[str, dict[str, Any]] = {}  # doc id -> document (text, no vector yet)
        self._pending_chars = 0
        self._oldest = 0.0  # monotonic time the oldest pending message was handed over
        self._wake = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._closed = False
        # Held while a batch is taken, checked and indexed, and by deletions: nothing is deleted
        # while a batch that may hold the thread is in flight.
        self._flush_lock = threading.Lock()
        # What the previous process handed over and never indexed: read now, before this process
        # hands anything over; indexed by the first flush, which starts at once.
        self._left_over = self.journal.all()
        if self._left_over:
            self._start_flusher()

    @property
    def index(self) -> Any:
        return self.indexer.index

    @property
    def embedder(self) -> Any:
        return self.indexer.embedder

    # --- the turn's side ------------------------------------------------------------------

    def index_messages(self, messages: Sequence[Message]) -> int:
        """Hand the indexable messages over; returns how many. Never raises (a turn must not
        fail because search does): a journal write that fails is logged and the messages are
        indexed inline instead. Call it outside any store transaction (steps._finish does): past
        the bound it waits for a batch in flight, which reads the thread store."""
        docs = [doc for doc in (index_document(m) for m in messages) if doc is not None]
        if not docs:
            return 0
        try:
            self.journal.add([_key(doc) for doc in docs])
        except Exception as exc:  # noqa: BLE001 - not durable: index now rather than risk losing them
            log.warning("search journal write failed (%s): indexing inline", type(exc).__name__)
            return self.indexer.index_documents(docs)
        with self._wake:
            if not self._pending:
                self._oldest = time.monotonic()
            for doc in docs:
                old = self._pending.get(doc["id"])
                self._pending_chars += len(doc["text"]) - (len(old["text"]) if old else 0)
                self._pending[doc["id"]] = doc
            backlog = len(self._pending) >= MAX_PENDING or self._pending_chars >= MAX_PENDING_CHARS
            if len(self._pending) >= FLUSH_AT:
                self._wake.notify()
            self._start_flusher()
        if backlog:
            self.flush()
        return len(docs)

    def _start_flusher(self) -> None:
        with self._wake:
            if self._flusher is None and not self._closed:
                self._flusher = threading.Thread(target=self._run, name="threadgate-search-batches", daemon=True)
                self._flusher.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                deadline = time.monotonic() + IDLE_EXIT_S
                while not self._pending and not self._left_over and not self._closed:
                    if not self._wake.wait(deadline - time.monotonic()) and not self._pending:
                        self._flusher = None  # idle: end; the next message starts a new one
                        return
                while self._pending and len(self._pending) < FLUSH_AT and not self._left_over and not self._closed:
                    left = self._oldest + FLUSH_DELAY_S - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                if self._closed:
                    self._flusher = None
                    return
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - keep the thread; the journal still holds them
                log.error("search batch failed: %s", type(exc).__name__)

    # --- batches --------------------------------------------------------------------------

    def flush(self) -> None:
        """Index everything pending now (and, the first time, what a previous process left in
        the journal). Returns once it is searchable."""
        with self._flush_lock:
            recovered, left_over = self._left_over_documents(self._left_over) if self._left_over else ([], [])
            self._left_over = []
            with self._wake:
                batch = {doc["id"]: doc for doc in recovered}
                batch.update(self._pending)
                self._pending, self._pending_chars = {}, 0
            if not batch:
                return
            try:
                docs = self._of_live_threads(list(batch.values()))
            except Exception as exc:  # noqa: BLE001 - the thread store failed: retry with the next batch
                log.warning("search batch postponed, thread store unavailable: %s", type(exc).__name__)
                with self._wake:
                    self._pending = {**batch, **self._pending}
                    self._pending_chars = sum(len(doc["text"]) for doc in self._pending.values())
                    self._oldest = time.monotonic()  # the flusher retries after FLUSH_DELAY_S
                return
            if self.indexer.index_documents(docs) == len(docs):
                self.journal.remove([_key(doc) for doc in batch.values()] + left_over)
            # else: the Indexer logged it; the journal keeps them for the next start

    def _of_live_threads(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        threads = {(doc["account_id"], doc["thread_id"]) for doc in docs}
        store = self.threads()
        gone = {key for key in threads if store.get_thread(*key) is None}
        return [doc for doc in docs if (doc["account_id"], doc["thread_id"]) not in gone]

    def _left_over_documents(self, keys: list[tuple[str, str, int]]) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
        """The documents of the messages a previous process handed over but never indexed, read
        back from the thread store (missing ones are skipped: their thread is gone), and the
        journal keys they settle (all but those of a thread that could not be read)."""
        by_thread: dict[tuple[str, str], set[int]] = {}
        for account_id, thread_id, seq in keys:
            by_thread.setdefault((account_id, thread_id), set()).add(seq)
        docs: list[dict[str, Any]] = []
        settled: list[tuple[str, str, int]] = []
        for (account_id, thread_id), seqs in by_thread.items():
            try:
                messages = self.threads().list_messages(account_id, thread_id, after_seq=min(seqs) - 1)
            except Exception as exc:  # noqa: BLE001 - kept in the journal for the next start
                log.warning("search catch-up: thread %s unreadable (%s)", thread_id, type(exc).__name__)
                continue
            docs += [doc for doc in (index_document(m) for m in messages if m.seq in seqs) if doc is not None]
            settled += [(account_id, thread_id, seq) for seq in seqs]
        log.warning("search catch-up: %d message(s) left unindexed by the previous process", len(docs))
        return docs, settled

    # --- the rest of the Indexer ----------------------------------------------------------

    def search(self, **query: Any) -> list[dict[str, Any]]:
        self.flush()  # read your writes: what a finished turn handed over is searchable now
        return self.indexer.search(**query)

    def delete_thread(self, account_id: str, thread_id: str, *, deleted_at: float | None = None) -> bool:
        with self._flush_lock:
            self._drop_pending(lambda doc: doc["account_id"] == account_id and doc["thread_id"] == thread_id)
            self.journal.remove_thread(account_id, thread_id)
            return self.indexer.delete_thread(account_id, thread_id, deleted_at=deleted_at)

    def delete_account(self, account_id: str) -> None:
        with self._flush_lock:
            self._drop_pending(lambda doc: doc["account_id"] == account_id)
            self.journal.remove_account(account_id)
            self.indexer.delete_account(account_id)

    def _drop_pending(self, matches: Callable[[dict[str, Any]], bool]) -> None:
        with self._wake:
            for doc_id in [doc_id for doc_id, doc in self._pending.items() if matches(doc)]:
                self._pending_chars -= len(self._pending.pop(doc_id)["text"])

    def close(self) -> None:
        """Index what is pending and stop the flusher (server shutdown)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self.flush()
        self.journal.close()
