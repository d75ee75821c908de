"""Thread turns as resumable steps over a run (`domain.runs`).

    start_run ─▶ model_step ─▶ next: tools ─▶ (deliver the calls) ─▶ tools_done ─▶ model_step …
                            └▶ done | limit | failed | cancelled (the step finished the run)

`start_run` (in the request) reserves the first call (a 402 comes before any write), persists the
user message and records the run. `model_step` makes ONE model call: it reloads what it needs
(the run; the thread when it is not the request's own first step), reserves, calls, settles
exactly once (reservation `<run_id>:<iteration>`), persists the answer and either asks for its
tool calls to be delivered or finishes the run. `tools_done` appends the tool results (read from
the RunStore's tool outcomes) as ONE message in the model's order. Any process can run any step:
the in-process driver (`domain.driver`) and Step Functions call the same functions, so both
produce the same thread, events and usage.

Each step is idempotent per (run, iteration): the thread says how far the run got (its messages
carry the run id), so a step retried after a crash neither appends twice nor calls the model
again for an answer already persisted. A call whose process died mid-way (`Run.in_flight`) is
settled from the stream events it recorded (`_settle_dead_call`), never twice.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol, Sequence

from threadgate.domain import billing
from threadgate.domain.errors import Conflict, GatewayError, NotFound, UpstreamError
from threadgate.domain.history import INTERRUPTED, build_history
from threadgate.domain.metering import Meter
from threadgate.domain.model_call import ModelCall, usage_seen
from threadgate.domain.models import Message, ModelInfo, NewMessage, Principal, Reservation, Thread, Tool, Usage
from threadgate.domain.run_events import EventSink, RunEventLog
from threadgate.domain.runs import Run, StepOutcome, ToolCallRef, ToolResultRef, outcome
from threadgate.ports import Clock, ModelProvider, RunStore, ThreadStore
from threadgate.providers.anthropic.stream_accumulator import MessageAccumulator

log = logging.getLogger(__name__)

LIMIT_REACHED = "not executed: iteration limit reached"
CANCELLED = "not executed: the turn was cancelled"
NO_RESULT = "tool failed: no result was recorded"
DIED = "the turn was interrupted (the gateway process running it stopped); the thread keeps what was done"
# Request fields forwarded upstream as they are (validated by the API layer).
FORWARDED = ("system", "temperature", "top_p", "top_k", "stop_sequences", "thinking", "metadata", "tool_choice")


class TurnFailed(GatewayError):
    """An unexpected failure after the turn began (its messages so far stay persisted)."""

    status, type = 500, "api_error"


class ToolDispatcher(Protocol):
    async def __call__(self, account_id: str, tool_id: str, call: dict[str, Any], context: dict[str, Any]) -> Any:
        """Deliver one tool call; the result has `output_text`, `is_error`, `attempts`, `status`,
        `duration_ms` (webhooks.DeliveryResult)."""


class MessageIndexer(Protocol):
    def index_messages(self, messages: Sequence[Message]) -> int: ...


@dataclass
class RunDeps:
    threads: ThreadStore
    runs: RunStore
    meter: Meter
    clock: Clock
    model_for: Callable[[str], ModelInfo]  # catalog id -> model (prices; no availability check)
    provider_for: Callable[[ModelInfo], ModelProvider]  # raises NotFound if this gateway cannot call it
    dispatch: ToolDispatcher | None = None
    indexer: MessageIndexer | None = None  # local mode: messages handed to a background batch
    on_finish: Callable[[Run], None] | None = None  # a run of a job finishes its job
    atomic: Callable[[], ContextManager[Any]] = nullcontext  # a unit of work (`Stores.atomic`)
    durable_lease_ms: int = 60 * 60 * 1000


@dataclass
class TurnRequest:
    """A validated turn (the route checked thread, model and tools)."""

    run_id: str  # the request id
    principal: Principal
    thread: Thread
    model: ModelInfo
    params: dict[str, Any]  # max_tokens + FORWARDED fields
    content: list[dict[str, Any]]  # the new user turn
    tools: list[Tool] = field(default_factory=list)
    max_iterations: int = 8
    job_id: str | None = None


@dataclass
class RunContext:
    """What one process keeps between the steps it runs; another process rebuilds it (`load`)."""

    run: Run
    model: ModelInfo
    history: list[dict[str, Any]] | None = None  # upstream messages for the next call (None: rebuild)
    reservation: Reservation | None = None  # made by start_run for the first call
    max_tokens: int = 0  # what that reservation covers
    answer: dict[str, Any] | None = None  # the last assistant answer (Anthropic message)
    pending: list[dict[str, Any]] | None = None  # its tool_use blocks awaiting results
    error: GatewayError | None = None  # why the run failed (in-process: with its HTTP status)
    to_index: list[Message] = field(default_factory=list)
    current: bool = True  # `run` is as stored (False: re-read it at the next step)
    lease: Any = None  # domain.driver.ThreadLease while this process holds the thread
    cancel: asyncio.Event | None = None  # set by the in-process driver when a cancel is asked

    @classmethod
    def load(cls, deps: RunDeps, run_id: str) -> "RunContext":
        run = deps.runs.get_run(run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return cls(run=run, model=deps.model_for(run.model))


# --- start ----------------------------------------------------------------------------------------


def start_run(deps: RunDeps, req: TurnRequest) -> RunContext:
    """Reserve the first call, persist the user message, record the run. Raises (nothing kept)
    on 400 (does not fit the context), 402, 404 (thread gone while the turn waited)."""
    p, thread, now = req.principal, req.thread, deps.clock.now_ms()
    if req.job_id is not None and deps.runs.get_run(req.run_id) is not None:
        raise Conflict(f"run {req.run_id} was started already")  # a job's run id is fixed: resume it instead
    run = Run(
        id=req.run_id, account_id=p.account_id, key_id=p.key_id, scope=p.scope, end_user_id=p.end_user_id,
        thread_id=thread.id, thread_end_user_id=thread.end_user_id, model=req.model.id, params=req.params,
        tools=[{"id": t.id, "name": t.name, "description": t.description, "input_schema": t.input_schema}
               for t in req.tools],
        max_iterations=req.max_iterations, created_at=now, updated_at=now, iteration=1, in_flight=1,
        call_from=1, job_id=req.job_id,
    )
    stored = deps.threads.list_messages(p.account_id, thread.id)
    history = build_history(stored, req.content, _budget(run, req.model))
    failure: Exception | None = None
    # One unit (SQLite: one transaction): the reservation, the user message and the run record,
    # all or none. Separately (DynamoDB) a crash between them is what recovery handles: a
    # reservation alone is swept, a user message without its run is taken back.
    with deps.atomic():
        reservation, max_tokens = _reserve(deps, run, req.model, history, 1)  # 402: nothing kept
        try:
            (user,) = deps.threads.append_messages(
                p.account_id, thread.id, [NewMessage("user", req.content, "user", request_id=run.id)], now)
            run.user_seq = user.seq
            deps.runs.create_run(run)
        except Exception as exc:  # kept inside the unit: the release (and the count) commit
            deps.meter.release(reservation)  # nothing was called: hold nothing back
            failure = exc
    if failure is not None:
        raise failure
    return RunContext(run=run, model=req.model, history=history, reservation=reservation,
                      max_tokens=max_tokens, to_index=[user])


# --- model_step -----------------------------------------------------------------------------------


async def model_step(
    deps: RunDeps, run_id: str, events: EventSink | None = None, ctx: RunContext | None = None
) -> StepOutcome:
    """One model call of the run (see the module docstring). Never raises for what happens after
    the run began: a failure finishes the run `failed` (qlaud.error + qlaud.done recorded)."""
    if ctx is None:
        try:
            ctx = RunContext.load(deps, run_id)
        except NotFound:  # deleted with its thread
            return {"run_id": run_id, "iteration": 0, "next": "failed", "tool_calls": []}
    sink = events or RunEventLog.resume(deps.runs, run_id)
    try:
        return await _model_step(deps, ctx, sink)
    except Exception as exc:
        return await abort(deps, ctx, sink, exc)


async def abort(deps: RunDeps, ctx: RunContext, sink: EventSink, exc: Exception) -> StepOutcome:
    """End the run `failed` after an unexpected error in one of its steps: a write failed (the
    thread was deleted mid-turn) or a store outage. The client learns it without details."""
    return await _finish(deps, ctx, sink, "failed", _turn_error(exc, ctx.run))


def _turn_error(exc: Exception, run: Run) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    log.error("turn failed mid-loop: %s (run %s)", type(exc).__name__, run.id)
    return TurnFailed("internal error during the turn; the thread keeps what was done")


async def _model_step(deps: RunDeps, ctx: RunContext, sink: EventSink) -> StepOutcome:
    if not _refresh(deps, ctx):
        return outcome(ctx.run)
    run, model = ctx.run, ctx.model
    if run.cancel_requested:
        return await _finish(deps, ctx, sink, "cancelled")
    history = ctx.history
    if history is None:  # not the request's own first call: the thread says how far the run got
        stored = deps.threads.list_messages(run.account_id, run.thread_id)
        mine = _messages_of(run, stored)
        if not mine:
            raise NotFound("thread not found")  # deleted (its messages went with it)
        answered = sum(m.role == "assistant" for m in mine)
        if run.in_flight is not None and answered >= run.in_flight:
            run.in_flight = None  # that call's answer was persisted before its process stopped
        if mine[-1].kind == "tool_use":  # asked for tools, then stopped before they were answered
            uses = [b for b in mine[-1].content if b.get("type") == "tool_use"]
            if set(deps.runs.get_tool_outcomes(run.id, [u["id"] for u in uses])) != {u["id"] for u in uses}:
                run.assistant_seq = mine[-1].seq
                _save(deps, run, "in_flight", "assistant_seq")
                ctx.pending, ctx.current = uses, False
                return outcome(run, [{"run_id": run.id, "tool_use_id": u["id"]} for u in uses])
            stored.append(_append_results(deps, ctx, sink, mine[-1].content, {}))  # all answered: tools_done's part
        elif mine[-1].kind == "assistant":  # the final answer is persisted: only the record lags
            ctx.answer = {"content": mine[-1].content}
            run.assistant_seq = mine[-1].seq
            return await _finish(deps, ctx, sink, "completed")
        history = build_history(stored, None, _budget(run, model))
    ctx.history = None
    iteration = run.in_flight or run.iteration + 1
    if iteration > run.max_iterations:  # stopped after answering the last calls with LIMIT_REACHED
        run.hit_max_iterations = True
        return await _finish(deps, ctx, sink, "limit_reached")
    if run.in_flight is not None and ctx.reservation is None:  # this call died mid-way once
        _settle_dead_call(deps, run, model, iteration)
        run.attempts += 1
    reservation, max_tokens = ctx.reservation, ctx.max_tokens
    ctx.reservation = None
    if reservation is None:
        try:
            reservation, max_tokens = _reserve(deps, run, model, history, iteration)
        except GatewayError as err:  # e.g. the cap ran out mid-loop
            return await _finish(deps, ctx, sink, "failed", err, iteration=iteration)
        run.iteration, run.in_flight, run.call_from = iteration, iteration, sink.next_seq
        _save(deps, run, "iteration", "in_flight", "call_from", "attempts", "cost_micros", "usage")
    if iteration > 1 or run.attempts > 1:  # a new bracket begins (also for a call made again)
        sink.emit({"type": "qlaud.iteration_start", "iteration": iteration})
    call = ModelCall(deps.meter, deps.provider_for(model), model, reservation,
                     _upstream_request(run, model, history, max_tokens), stream=True)
    try:
        stopped = await _stream(call, sink, ctx.cancel)
        step = await _after_call(deps, ctx, sink, call, stopped, iteration)
    except BaseException:
        call.close(again=True)  # whatever happened, it is settled (a rolled-back unit took it with it)
        raise
    call.close()  # at the latest: a path that kept nothing (this process lost the thread)
    return step


async def _after_call(
    deps: RunDeps, ctx: RunContext, sink: EventSink, call: ModelCall, stopped: bool, iteration: int
) -> StepOutcome:
    """Settle the call and keep what it said: a final answer ends the run in one unit with it."""
    run = ctx.run
    if ctx.lease is not None and ctx.lease.lost:  # another turn took the thread meanwhile: write nothing
        return outcome(run)
    run.cost_micros += call.cost_micros
    run.usage = (Usage(**run.usage) + call.usage).as_dict() if run.usage else call.usage.as_dict()
    run.in_flight = None
    if call.message is None:
        def keep_failed() -> None:
            call.close()
            if call.partial is not None:  # a broken or stopped stream: keep what was said
                _append_assistant(deps, ctx, call.partial, has_tools=False)
            elif iteration == 1 and not call.billed:
                _retract_user_message(deps, ctx)

        if stopped:
            return await _finish(deps, ctx, sink, "cancelled", keep=keep_failed)
        return await _finish(deps, ctx, sink, "failed", call.error or UpstreamError("the model call failed"),
                             iteration=iteration, keep=keep_failed)
    message = call.message
    tool_uses = [b for b in message["content"] if b.get("type") == "tool_use"]
    if not (tool_uses and message.get("stop_reason") == "tool_use"):
        def keep_answer() -> None:
            call.close()
            _append_assistant(deps, ctx, message, has_tools=False)

        return await _finish(deps, ctx, sink, "completed", keep=keep_answer)
    call.close()
    _append_assistant(deps, ctx, message, has_tools=True)
    if iteration >= run.max_iterations:
        run.hit_max_iterations = True
        _append_tool_results(deps, run, [_result_block(u["id"], LIMIT_REACHED, True) for u in tool_uses])
        return await _finish(deps, ctx, sink, "limit_reached")
    for use in tool_uses:
        sink.emit({"type": "qlaud.tool_dispatch_start", "tool_use_id": use["id"], "name": use["name"],
                   "iteration": iteration})
    ctx.pending = tool_uses
    await sink.flush()
    _save(deps, run, "in_flight", "assistant_seq", "answer", "cost_micros", "usage")
    ctx.current = False
    return outcome(run, [{"run_id": run.id, "tool_use_id": u["id"]} for u in tool_uses])


async def _stream(call: ModelCall, sink: EventSink, stop: asyncio.Event | None) -> bool:
    """Relay the call's events; True if `stop` interrupted it (the call settles what it was sent)."""
    async def relay() -> None:
        async for event in call.events():
            sink.emit(event)

    if stop is None:
        await relay()
        return False
    task, stopper = asyncio.ensure_future(relay()), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return True
    task.result()
    return False


# --- tools_done -----------------------------------------------------------------------------------


async def tools_done(
    deps: RunDeps,
    run_id: str,
    results: Sequence[ToolResultRef] = (),
    events: EventSink | None = None,
    ctx: RunContext | None = None,
) -> None:
    """Append the tool results of the last answer as one message (model's order), from the
    recorded outcomes; `results` stand in for calls with no outcome (a delivery given up on).
    Idempotent: results already appended are not appended again."""
    if ctx is None:
        try:
            ctx = RunContext.load(deps, run_id)
        except NotFound:  # deleted with its thread: the next model_step ends it
            return
    sink = events or RunEventLog.resume(deps.runs, run_id)
    if not _refresh(deps, ctx):
        return
    run = ctx.run
    pending = ctx.pending
    if pending is None:
        mine = _messages_of(run, deps.threads.list_messages(run.account_id, run.thread_id))
        if not mine or mine[-1].kind != "tool_use":
            return  # appended already (a retried step), or nothing is pending
        pending = mine[-1].content
    _append_results(deps, ctx, sink, pending, {r["tool_use_id"]: r for r in results},
                    cancelled=run.cancel_requested)
    ctx.current = False
    await sink.flush()


def _append_results(
    deps: RunDeps,
    ctx: RunContext,
    sink: EventSink,
    answer_blocks: list[dict[str, Any]],
    results: dict[str, ToolResultRef],
    *,
    cancelled: bool = False,
) -> Message:
    run = ctx.run
    uses = [b for b in answer_blocks if b.get("type") == "tool_use"]
    recorded = deps.runs.get_tool_outcomes(run.id, [u["id"] for u in uses])
    blocks = []
    for use in uses:
        found, given = recorded.get(use["id"]), results.get(use["id"])
        if found is not None:
            text, is_error = found.output_text, found.is_error
        elif cancelled:  # a webhook still running is abandoned: its late answer is ignored
            text, is_error = CANCELLED, True
        else:
            text, is_error = ((given or {}).get("reason") or NO_RESULT), True
        blocks.append(_result_block(use["id"], text, is_error))
        # In the model's order, once all are answered: the same stream whichever driver delivered them.
        sink.emit({"type": "qlaud.tool_dispatch_done", "tool_use_id": use["id"], "name": use["name"],
                   "iteration": run.iteration, "is_error": is_error, "output": text})
    ctx.pending = None
    return _append_tool_results(deps, run, blocks)


# --- webhook worker support -----------------------------------------------------------------------


@dataclass(frozen=True)
class PendingToolCall:
    """One tool call to deliver: the webhook worker reads the tool (URL, secret) by id."""

    account_id: str
    tool_id: str | None  # None: the model named a tool this run does not have
    call: dict[str, Any]  # the tool_use block: id, name, input
    context: dict[str, Any]  # thread_id, end_user_id, request_id (the webhook body fields)


def tool_call(deps: RunDeps, run_id: str, tool_use_id: str) -> PendingToolCall:
    """The pending call `tool_use_id` of the run's last answer (NotFound if it is not pending)."""
    run = deps.runs.get_run(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    mine = _messages_of(run, deps.threads.list_messages(run.account_id, run.thread_id))
    if mine and mine[-1].kind == "tool_use":
        for block in mine[-1].content:
            if block.get("type") == "tool_use" and block.get("id") == tool_use_id:
                return _pending_call(run, block)
    raise NotFound(f"tool call {tool_use_id} is not pending in run {run_id}")


def pending_tool_calls(deps: RunDeps, ctx: RunContext) -> list[PendingToolCall]:
    """The calls of the last answer that have no recorded outcome yet."""
    run = ctx.run
    uses = ctx.pending
    if uses is None:
        mine = _messages_of(run, deps.threads.list_messages(run.account_id, run.thread_id))
        if not mine or mine[-1].kind != "tool_use":
            return []
        uses = ctx.pending = [b for b in mine[-1].content if b.get("type") == "tool_use"]
    recorded = deps.runs.get_tool_outcomes(run.id, [u["id"] for u in uses])
    return [_pending_call(run, u) for u in uses if u["id"] not in recorded]


def _pending_call(run: Run, block: dict[str, Any]) -> PendingToolCall:
    tool_id = next((t["id"] for t in run.tools if t["name"] == block.get("name")), None)
    context = {"thread_id": run.thread_id, "end_user_id": run.thread_end_user_id, "request_id": run.id}
    return PendingToolCall(run.account_id, tool_id, block, context)


# --- ending a run ---------------------------------------------------------------------------------


async def fail_run(deps: RunDeps, run_id: str, reason: str, events: EventSink | None = None) -> StepOutcome:
    """End a run that cannot go on (a durable driver's Catch; a dead process found by another):
    its open call is settled from what it recorded, the thread is left valid (an interrupted
    first answer keeps what it said, else the user message is taken back; unanswered tool calls
    are answered as interrupted), qlaud.error + qlaud.done are recorded, its job finished."""
    ctx = RunContext.load(deps, run_id)
    sink = events or RunEventLog.resume(deps.runs, run_id)
    run = ctx.run
    if run.finished:
        return outcome(run)
    if run.in_flight is not None:
        _settle_dead_call(deps, run, ctx.model, run.in_flight)
    mine = _messages_of(run, deps.threads.list_messages(run.account_id, run.thread_id))
    # What the dead turn had stored stays searchable (its end would have handed it to the indexer);
    # a user message taken back below is dropped from this, a partial answer added.
    ctx.to_index = [m for m in mine if m.kind in ("user", "assistant")]
    tail = mine[-1] if mine else None
    if tail is not None and tail.kind == "user" and run.in_flight is not None:
        partial = _partial_answer(deps, run)
        if partial is not None:
            _append_assistant(deps, ctx, partial, has_tools=False)
        else:
            _retract_user_message(deps, ctx)
    elif tail is not None and tail.kind == "tool_use":
        uses = [b for b in tail.content if b.get("type") == "tool_use"]
        recorded = deps.runs.get_tool_outcomes(run.id, [u["id"] for u in uses])
        _append_tool_results(deps, run, [
            _result_block(u["id"], recorded[u["id"]].output_text, recorded[u["id"]].is_error)
            if u["id"] in recorded else _result_block(u["id"], INTERRUPTED, True) for u in uses])
    elif tail is not None and tail.kind == "assistant":
        run.assistant_seq = tail.seq
    run.in_flight = None
    if tail is not None and tail.kind == "assistant":  # it had answered: only its record lagged
        return await _finish(deps, ctx, sink, "completed")
    return await _finish(deps, ctx, sink, "failed", TurnFailed(reason), iteration=run.iteration)


async def recover_dead_turn(deps: RunDeps, account_id: str, thread_id: str, holder: str) -> None:
    """The thread lock of `holder` (a turn's request id) expired and was taken over: that turn's
    process died. Its run ends as `fail_run` ends it; a turn that died before recording its run
    may have left its user message alone at the end of the thread: that is taken back."""
    run = deps.runs.get_run(holder)
    if run is not None:
        if run.account_id == account_id and not run.finished:
            await fail_run(deps, run.id, DIED)
        return
    last = deps.threads.list_messages(account_id, thread_id, limit=1, descending=True)
    if last and last[0].request_id == holder and last[0].kind == "user":
        deps.threads.retract_last_message(account_id, thread_id, last[0].seq)


async def _finish(
    deps: RunDeps,
    ctx: RunContext,
    sink: EventSink,
    status: str,
    error: GatewayError | None = None,
    *,
    iteration: int | None = None,
    keep: Callable[[], None] | None = None,
) -> StepOutcome:
    """Record the end: events (qlaud.error, qlaud.done) first, then the record, so a reader who
    sees the run finished finds its last event stored. Releases the thread; finishes a job.

    `keep`: the last call's settlement and what it leaves in the thread, written first. Where
    the events are written inline (SQLite) all of it is one unit: one transaction."""
    run = ctx.run
    failure: Exception | None = None
    stored: Run | None = None
    with deps.atomic() if sink.inline else nullcontext():
        if keep is not None:
            try:
                keep()
            except Exception as exc:  # e.g. the thread was deleted meanwhile: the run fails
                status, error = "failed", _turn_error(exc, run)
        if status == "cancelled":
            error = Conflict("the turn was cancelled")
            if run.in_flight is None:
                _close_pending_as_cancelled(deps, ctx, sink)
        if error is not None:
            ctx.error = error
            run.error = {"type": error.type, "message": error.message, "status": error.status}
            run.incomplete = True
            sink.emit({"type": "qlaud.error", "error": {"type": error.type, "message": error.message},
                       "iteration": iteration or run.iteration})
        if isinstance(error, NotFound):
            ctx.to_index.clear()  # the thread is gone: never make its messages searchable again
        run.status = status  # type: ignore[assignment]
        sink.emit(done_event(run))
        if ctx.lease is not None:
            ctx.lease.stop()
        if sink.inline:
            try:
                sink.flush_inline()
            except Exception as exc:  # the record and the release still commit; raised below
                failure = exc
            stored = _end_record(deps, ctx)
    if not sink.inline:  # a network store: the events first (awaited), then the record
        try:
            await sink.flush()
        finally:
            stored = _end_record(deps, ctx)
    if failure is not None:
        raise failure
    if isinstance(error, NotFound):
        deps.runs.delete_run(run.id)  # its thread is gone: so is everything of the run's (events hold text)
    _index(deps, ctx)
    if deps.on_finish is not None and run.job_id and stored is not None:
        deps.on_finish(ctx.run)
    return outcome(ctx.run)


def _end_record(deps: RunDeps, ctx: RunContext) -> Run | None:
    """The run's final record (None: it had ended already), then its thread's lock released."""
    run = ctx.run
    stored = _save(deps, run, *_END_FIELDS)
    if stored is not None:
        ctx.run = stored
    deps.threads.release_turn_lock(run.thread_id, run.id)
    if ctx.lease is not None:
        ctx.lease.released = True  # the request's end has nothing left to release
    return stored


_END_FIELDS = ("status", "iteration", "in_flight", "assistant_seq", "answer", "cost_micros", "usage",
               "hit_max_iterations", "incomplete", "error", "attempts")


def _close_pending_as_cancelled(deps: RunDeps, ctx: RunContext, sink: EventSink) -> None:
    run = ctx.run
    pending = ctx.pending
    if pending is None:
        mine = _messages_of(run, deps.threads.list_messages(run.account_id, run.thread_id))
        pending = mine[-1].content if mine and mine[-1].kind == "tool_use" else None
    if pending:
        _append_results(deps, ctx, sink, pending, {}, cancelled=True)


def done_event(run: Run) -> dict[str, Any]:
    return {
        "type": "qlaud.done",
        "thread_id": run.thread_id,
        "seq": run.assistant_seq,
        "iterations": run.iteration,
        "hit_max_iterations": run.hit_max_iterations,
        "incomplete": run.incomplete,
        "cost_micros": run.cost_micros,
        "usage": run.usage or Usage().as_dict(),
    }


# --- helpers --------------------------------------------------------------------------------------


def _refresh(deps: RunDeps, ctx: RunContext) -> bool:
    """Bring `ctx.run` up to date (a cancel may have been asked meanwhile). False: it ended, or
    this process lost the thread to another (then it must write nothing more)."""
    if ctx.lease is not None and ctx.lease.lost:
        return False
    if not ctx.current:
        run = deps.runs.get_run(ctx.run.id)
        if run is None:
            raise NotFound("thread not found")  # deleted with its thread mid-turn
        ctx.run, ctx.current = run, True
    run = ctx.run
    if run.finished:
        return False
    if run.durable and not deps.threads.acquire_turn_lock(
            run.thread_id, run.id, deps.clock.now_ms(), deps.durable_lease_ms):
        raise GatewayError("the run lost its thread to another turn")
    return True


def _messages_of(run: Run, stored: list[Message]) -> list[Message]:
    return [m for m in stored if m.request_id == run.id and (run.user_seq is None or m.seq >= run.user_seq)]


def _budget(run: Run, model: ModelInfo) -> int:
    return model.context_window - int(run.params["max_tokens"]) - billing.PROVIDER_PROMPT_ALLOWANCE_TOKENS


def _upstream_request(run: Run, model: ModelInfo, history: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    request: dict[str, Any] = {"model": model.upstream_id, "max_tokens": max_tokens}
    request.update({k: run.params[k] for k in FORWARDED if run.params.get(k) is not None})
    request["messages"] = history
    if run.tools:
        request["tools"] = [{k: t[k] for k in ("name", "description", "input_schema")} for t in run.tools]
    return request


def _reserve(deps: RunDeps, run: Run, model: ModelInfo, history: list[dict[str, Any]], iteration: int):
    requested = int(run.params["max_tokens"])
    return deps.meter.reserve(
        run.principal, model,
        input_bound=billing.call_bound(model, _upstream_request(run, model, history, requested)),
        max_tokens=requested,
        request_id=run.id,
        reservation_id=_reservation_id(run, iteration),
        thread_id=run.thread_id,
    )


def _reservation_id(run: Run, iteration: int) -> str:
    """`<run>:<iteration>`; a call made again after its process died gets `/<attempt>` appended."""
    return f"{run.id}:{iteration}" if run.attempts == 1 else f"{run.id}:{iteration}/{run.attempts}"


def _reservation_of(run: Run, model: ModelInfo, iteration: int) -> Reservation:
    """The fields settling needs (the ledger keeps the estimate itself)."""
    return Reservation(id=_reservation_id(run, iteration), key_id=run.key_id, account_id=run.account_id, estimate_micros=0,
                       created_at=0, expires_at=0, request_id=run.id, model=model.id, provider=model.provider,
                       thread_id=run.thread_id)


def _call_events(deps: RunDeps, run: Run) -> list[dict[str, Any]]:
    """The stream events the in-flight call recorded before its process died."""
    events = deps.runs.list_events(run.id, (run.call_from or 1) - 1, 1_000_000)
    return [e for _, e in events if not e.get("type", "").startswith("qlaud.")]


def _settle_dead_call(deps: RunDeps, run: Run, model: ModelInfo, iteration: int) -> None:
    """Settle the call a dead process left open, from what its recorded events show (input from
    message_start, output at least one token per delta seen); released if it never started. The
    ledger settles a reservation once: a call settled before its process died is not again."""
    reservation = _reservation_of(run, model, iteration)
    usage = usage_seen(_call_events(deps, run))
    if usage is None:
        deps.meter.release(reservation)
        return
    event = deps.meter.priced(reservation, model, usage, latency_ms=0, status="incomplete")
    if deps.meter.ledger.settle(reservation.id, event):
        run.cost_micros += event.cost_micros
        run.usage = (Usage(**run.usage) + usage).as_dict() if run.usage else usage.as_dict()


def _partial_answer(deps: RunDeps, run: Run) -> dict[str, Any] | None:
    acc = MessageAccumulator()
    for event in _call_events(deps, run):
        acc.feed(event)
    if not acc.started:
        return None
    message = acc.message()
    message["content"] = [b for b in message["content"] if b.get("type") in ("text", "thinking")]
    return message if message["content"] else None


def _append_assistant(deps: RunDeps, ctx: RunContext, message: dict[str, Any], *, has_tools: bool) -> None:
    run = ctx.run
    kind = "tool_use" if has_tools else "assistant"
    (stored,) = deps.threads.append_messages(
        run.account_id, run.thread_id,
        [NewMessage("assistant", message["content"], kind, model=run.model, request_id=run.id)],
        deps.clock.now_ms(),
    )
    ctx.answer = message
    run.assistant_seq = stored.seq
    run.answer = {k: message.get(k) for k in ("id", "stop_reason", "stop_sequence")}
    if kind == "assistant":
        ctx.to_index.append(stored)


def _append_tool_results(deps: RunDeps, run: Run, blocks: list[dict[str, Any]]) -> Message:
    (stored,) = deps.threads.append_messages(
        run.account_id, run.thread_id, [NewMessage("user", blocks, "tool_result", request_id=run.id)],
        deps.clock.now_ms(),
    )
    return stored


def _retract_user_message(deps: RunDeps, ctx: RunContext) -> None:
    """The first call failed before the model said anything: take the user turn back, so the
    failed request changes nothing and a retry does not send the same text twice."""
    run = ctx.run
    if run.user_seq is not None and deps.threads.retract_last_message(run.account_id, run.thread_id, run.user_seq):
        ctx.to_index = [m for m in ctx.to_index if m.seq != run.user_seq]


def _save(deps: RunDeps, run: Run, *names: str) -> Run | None:
    run.updated_at = deps.clock.now_ms()
    return deps.runs.update_run(run.id, {n: getattr(run, n) for n in ("updated_at", *names)})


def _index(deps: RunDeps, ctx: RunContext) -> None:
    if deps.indexer is None or not ctx.to_index:
        return
    batch, ctx.to_index = ctx.to_index, []
    # Local mode: noted for a background batch (background/search_batcher.py, API.md §9).
    deps.indexer.index_messages(batch)


def _result_block(tool_use_id: str, text: str, is_error: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
    if is_error:
        block["is_error"] = True
    return block
