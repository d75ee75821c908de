"""The small interfaces the domain needs. Adapters live in stores/, search/ and providers/.

Store ports are synchronous: SQLite answers in microseconds and each Lambda instance serves one
request at a time, so an async facade would add cost without buying concurrency. Every query that
reads tenant data takes `account_id` (and `end_user_id` where a bound key asks) and applies it
INSIDE the adapter's query (invariant 4), never as a filter over a wider result.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Protocol, Sequence

from threadgate.domain.jobs import Job, JobOutcome
from threadgate.domain.runs import Run, ToolCallRef, ToolOutcome
from threadgate.domain.models import (
    Account,
    ApiKey,
    DayCounts,
    DeliveryRecord,
    IdempotencyRecord,
    Message,
    NewMessage,
    Reservation,
    Thread,
    Tool,
    UsageEvent,
)


class Clock(Protocol):
    def now_ms(self) -> int: ...


class KeyStore(Protocol):
    def create_account(self, account: Account) -> None: ...
    def get_account(self, account_id: str) -> Account | None: ...
    def update_account(self, account_id: str, *, name: Any = ..., cap_micros: Any = ...) -> Account | None:
        """Fields left at UNSET are unchanged. Returns the updated account or None if absent."""

    def first_account(self) -> Account | None:
        """Any existing account (local bootstrap: is this a first start?)."""

    def create_key(self, key: ApiKey, secret_hash: str) -> None: ...
    def find_by_hash(self, secret_hash: str) -> ApiKey | None:
        """The auth lookup (ONE point read on DynamoDB). Returns revoked keys too; the caller
        refuses them. Only identity fields (id, account_id, name, prefix, scope, end_user_id,
        revoked) must be current; balances may be stale or zero (use get_key for those)."""

    def get_key(self, account_id: str, key_id: str) -> ApiKey | None: ...
    def list_keys(self, account_id: str) -> list[ApiKey]:
        """Newest first, revoked keys included."""

    def update_key(
        self, account_id: str, key_id: str, *, name: Any = ..., cap_micros: Any = ..., metadata: Any = ...
    ) -> ApiKey | None: ...
    def revoke_key(self, account_id: str, key_id: str, now_ms: int) -> bool:
        """False if the key is unknown, foreign or already revoked."""

    def touch_key(self, key_id: str, now_ms: int) -> None:
        """Record last use (best effort)."""


class Ledger(Protocol):
    """Reservations, settlements and usage events. Balances live on key and account records."""

    def reserve(self, reservation: Reservation, *, count_request: bool = False) -> bool:
        """Atomically add the estimate to the key's and the account's `reserved_micros`, on the
        condition that `spent + reserved + estimate <= cap` for both (a null cap is unlimited),
        and record the reservation. Raises KeyCapExceeded / AccountBudgetExceeded otherwise and
        changes nothing.

        `count_request`: also count one inference request of the account on the reservation's
        UTC day (`RequestCounts.add`, no error) in the same atomic write, where the store can.
        Returns True if it did; False: nothing was counted (the caller counts separately)."""

    def settle(self, reservation_id: str, event: UsageEvent) -> bool:
        """Exactly once per reservation: delete it, `reserved -= estimate`, `spent += event.cost`
        on key and account, and store the usage event, in one atomic write. Returns False (and
        changes nothing) when the reservation is already settled or released."""

    def release(self, reservation_id: str) -> bool:
        """Drop a reservation whose call produced no usage (nothing billed)."""

    def expired_reservations(self, now_ms: int, limit: int = 100) -> list[Reservation]: ...

    def usage_events(
        self, account_id: str, from_ms: int, to_ms: int, key_id: str | None = None
    ) -> list[UsageEvent]:
        """Events with from_ms <= created_at < to_ms, newest first."""


class ThreadStore(Protocol):
    def create_thread(self, thread: Thread) -> None: ...
    def get_thread(self, account_id: str, thread_id: str, end_user_id: str | None = None) -> Thread | None:
        """`end_user_id` given: the thread must belong to that end user."""

    def list_threads(
        self,
        account_id: str,
        end_user_id: str | None,
        limit: int,
        before: tuple[int, str] | None = None,
    ) -> list[Thread]:
        """Newest `last_active_at` first (ties by id descending), strictly after the cursor
        `(last_active_at, id)`; at most `limit` items."""

    def update_thread(
        self, account_id: str, thread_id: str, *, metadata: Any = ..., title: Any = ...
    ) -> Thread | None: ...
    def update_thread_metadata(
        self,
        account_id: str,
        thread_id: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        title: Any = ...,
    ) -> Thread | None:
        """Sets the metadata to `change(current metadata)` atomically: no update made between the
        read and the write is lost. `change` may run more than once (it must be pure); what it
        raises propagates and nothing is written. None: no such thread in this account."""

    def delete_thread(self, account_id: str, thread_id: str) -> bool:
        """Removes the thread and all its messages at once."""

    def append_messages(
        self, account_id: str, thread_id: str, messages: Sequence[NewMessage], now_ms: int
    ) -> list[Message]:
        """Assign the next dense `seq` values atomically, store, bump `last_active_at` and
        `message_count`. Raises NotFound if the thread is gone."""

    def retract_last_message(self, account_id: str, thread_id: str, seq: int) -> bool:
        """Remove message `seq` only if it is still the thread's last one (seq stays dense).
        Used when the first model call of a turn failed: the turn then leaves no trace."""

    def list_messages(
        self,
        account_id: str,
        thread_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[Message]: ...

    def acquire_turn_lock(self, thread_id: str, holder: str, now_ms: int, ttl_ms: int) -> bool:
        """Serializes turns on a thread. True if acquired (or the previous holder's lease expired).
        The holder renews its lease by acquiring again."""

    def take_turn_lock(self, thread_id: str, holder: str, now_ms: int, ttl_ms: int) -> tuple[bool, str | None]:
        """`acquire_turn_lock` that also tells whose EXPIRED lease it took over (a turn whose
        process died): (True, that holder), (True, None) if the lock was free or ours,
        (False, None) if another holder's lease runs."""

    def release_turn_lock(self, thread_id: str, holder: str) -> None: ...


class IdempotencyStore(Protocol):
    def claim(self, scope: str, body_hash: str, now_ms: int, ttl_ms: int) -> IdempotencyRecord | None:
        """None: the caller now owns `scope` and must complete() or abandon() it. Otherwise the
        existing live record (in progress or done) is returned unchanged."""

    def complete(self, scope: str, status_code: int, response: Any) -> None: ...
    def abandon(self, scope: str) -> None: ...


class ToolStore(Protocol):
    def create_tool(self, tool: Tool) -> None:
        """Raises Conflict when a live tool of the account has the same name."""

    def get_tool(self, account_id: str, tool_id: str, *, with_secret: bool = False) -> Tool | None:
        """Live tools only. `secret` is "" unless `with_secret` (only webhook delivery asks)."""

    def list_tools(self, account_id: str) -> list[Tool]: ...
    def delete_tool(self, account_id: str, tool_id: str) -> bool: ...


class DeliveryLog(Protocol):
    """Webhook delivery attempts, for operators (API.md §7.1). Observability, not billing:
    records expire after DELIVERY_RETENTION_MS."""

    def record(self, delivery: DeliveryRecord) -> None: ...
    def recent(self, account_id: str, tool_id: str, limit: int) -> list[DeliveryRecord]:
        """The tool's newest attempts first (ties: later attempt first), at most `limit`."""


class RequestCounts(Protocol):
    """Per account and UTC day: inference requests answered, errors, 402s (API.md §4.2)."""

    def add(
        self, account_id: str, day: str, *, error: bool = False, cap_refusal: bool = False, request: bool = True
    ) -> None:
        """Count one request (atomic increments; concurrent adds all count). `request=False`: the
        request itself was counted already (with its reservation, `Ledger.reserve`): only its
        error or cap refusal is added."""

    def daily(self, account_id: str, first_day: str, last_day: str) -> list[DayCounts]:
        """Days with counts in first_day..last_day (inclusive, YYYY-MM-DD), oldest first."""


class JobStore(Protocol):
    """Async jobs (API.md §11). Status changes are conditional writes, so a worker and a cancel
    racing on one job never both win."""

    def create_job(self, job: Job) -> None: ...
    def get_job(self, account_id: str, job_id: str, key_id: str | None = None) -> Job | None:
        """`key_id` given: only a job that key submitted (None = any key of the account: admin)."""

    def list_jobs(self, account_id: str, key_id: str, limit: int) -> list[Job]:
        """The key's jobs, newest first (ties by id descending), at most `limit`."""

    def start_job(self, job_id: str, now_ms: int) -> Job | None:
        """queued -> running, setting `started_at`. None (and nothing changed) unless queued."""

    def finish_job(self, job_id: str, outcome: JobOutcome, now_ms: int) -> bool:
        """running -> outcome.status with its response/error. A job cancelled meanwhile stays
        cancelled but records outcome.cost_micros (what it was billed before it stopped).
        True if the outcome was stored as the job's result."""

    def cancel_job(self, account_id: str, job_id: str, key_id: str | None, now_ms: int) -> Job | None:
        """queued|running -> cancelled. None if the job is not visible (scoped as get_job);
        raises Conflict if it already finished."""

    def unfinished_jobs(self, limit: int = 100) -> list[Job]:
        """Queued and running jobs of every account, oldest first (worker recovery)."""

    def requeue_job(self, job_id: str) -> bool:
        """running -> queued (its worker died). False unless it was running."""


class RunStore(Protocol):
    """Runs (one per thread turn, `domain.runs`), their SSE events and their tool outcomes.

    A run is written by one driver at a time (the holder of its thread's lock); `update_run` is
    conditional on the run still running, so a late write from a dead or cancelled driver never
    reopens or overwrites a finished run."""

    def create_run(self, run: Run) -> bool:
        """Store a new run. False (and nothing changed) if a run with this id exists."""

    def get_run(self, run_id: str, account_id: str | None = None) -> Run | None:
        """`account_id` given: only a run of that account (None = internal callers)."""

    def update_run(self, run_id: str, changes: dict[str, Any], *, only_if_running: bool = True) -> Run | None:
        """Set `changes` (fields of `runs.MUTABLE`) atomically; returns the updated run, or None
        (nothing changed) if the run is absent or, with `only_if_running`, already finished."""

    def unfinished_runs(self, limit: int = 100) -> list[Run]:
        """Running runs of every account, oldest first (recovery at a local start)."""

    def prune_runs(self, created_before_ms: int, limit: int = 100) -> int:
        """Remove up to `limit` finished runs created before that time, with their events and
        outcomes (local mode's retention; DynamoDB's TTL does it on AWS). Returns how many."""

    def delete_run(self, run_id: str) -> None:
        """Remove the run with its events and outcomes (nothing if it is absent)."""

    def delete_thread_runs(self, account_id: str, thread_id: str) -> None:
        """Remove the runs of a deleted thread with their events and outcomes (which hold its
        text: the streamed answers and tool outputs)."""

    def append_events(self, run_id: str, first_seq: int, events: Sequence[dict[str, Any]]) -> None:
        """Store events numbered first_seq, first_seq + 1, … (dense per run, from 1). The writer
        numbers them (it is the only writer); a batch starting at a stored number raises Conflict."""

    def list_events(self, run_id: str, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        """(seq, event) with seq > after_seq, ascending, at most `limit`."""

    def last_event_seq(self, run_id: str) -> int:
        """The highest stored event number (0: none)."""

    def put_tool_outcome(self, run_id: str, tool_use_id: str, outcome: ToolOutcome) -> ToolOutcome:
        """First write wins: returns the outcome now stored (the earlier one if there was one).
        Outputs up to the 1 MiB webhook answer limit are kept whole."""

    def get_tool_outcomes(self, run_id: str, tool_use_ids: Sequence[str]) -> dict[str, ToolOutcome]:
        """The recorded outcomes among `tool_use_ids` (absent ones are left out)."""


class ToolLoop(Protocol):
    """A durable driver for the rest of a run whose model asked for tools (Step Functions)."""

    def start(self, run_id: str, tool_calls: list[ToolCallRef]) -> None:
        """Start driving the run from its pending tool calls. Idempotent per run (the execution
        is named after the run): a repeated start is a no-op."""


class ModelProvider(Protocol):
    """One upstream. Requests and answers are in the Anthropic Messages shape (our canonical
    form); providers of other shapes translate at their edge."""

    name: str

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming call. Returns an Anthropic `message` object (with `usage`)."""

    def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streaming call. Yields Anthropic stream events as dicts (`message_start` … `message_stop`).
        Retries happen only before the first event; a break after it raises UpstreamError."""


class Embedder(Protocol):
    dimensions: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class VectorIndex(Protocol):
    def upsert(self, docs: Sequence[dict[str, Any]]) -> None:
        """Each doc: id `<thread>#<seq>`, account_id, end_user_id, thread_id, seq, role, text,
        created_at, vector. Searchable when this returns, where the index can promise it."""

    def delete_thread(self, account_id: str, thread_id: str, *, deleted_at: float | None = None) -> None:
        """Remove every entry of the thread, including ones written just before. `deleted_at`
        (epoch s): an eventually consistent index keeps sweeping until writes made before then
        are visible (background callers only: it may take seconds)."""

    def delete_account(self, account_id: str) -> None: ...
    def search(
        self,
        vector: Sequence[float],
        *,
        account_id: str,
        end_user_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 10,
    ) -> list[tuple[dict[str, Any], float]]:
        """(doc without vector, cosine score), best first; filters applied inside the query."""

    def candidates(
        self,
        *,
        vector: Sequence[float] | None,
        text: str | None,
        account_id: str,
        end_user_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 10,
    ) -> tuple[list[tuple[dict[str, Any], float]], list[tuple[dict[str, Any], float]]]:
        """(semantic hits by cosine, lexical hits by BM25), each best first, each at most
        `limit`, filters applied inside both queries. A side without a usable vector (None,
        zero) or without text is empty."""
