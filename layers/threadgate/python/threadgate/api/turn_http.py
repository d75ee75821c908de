"""Turns over HTTP: one JSON answer or an SSE stream, with idempotency.

- `run_turn`: a passthrough call (`domain.passthrough.PassthroughCall`, built by api/passthrough.py).
- `run_thread_turn`: a thread turn = a run (`domain.steps`): the thread lease, `start_run`, the
  in-process driver in a background task, and the answer — streamed live from the driver (each
  event with its `id:`), then from the RunStore if the run was handed to a durable driver;
  non-streaming: the final message once the run ends within `turn_wait_s`, else 202 with the run.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from threadgate.api import idempotency, render, sse
from threadgate.api.errors import envelope, error_response
from threadgate.api.responses import FastJSONResponse
from threadgate.domain.driver import ThreadLease, drive
from threadgate.domain.errors import GatewayError, InvalidRequest
from threadgate.domain.off_loop import off_loop
from threadgate.domain.run_events import RunEventLog
from threadgate.domain.runs import Run
from threadgate.domain.steps import RunContext, TurnRequest, recover_dead_turn, start_run
from threadgate.domain.passthrough import PassthroughCall
from threadgate.ports import RunStore
from threadgate.runtime import Runtime

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
POLL_S = (0.05, 0.5)  # store polling while relaying a run driven elsewhere: fastest, slowest


async def run_turn(
    request: Request,
    rt: Runtime,
    turn: PassthroughCall,
    *,
    scope: idempotency.Claim | None,
    render: Callable[[PassthroughCall], tuple[Any, dict[str, str]]],
    stream_render: Callable[[dict[str, Any]], list[bytes]] | None = None,
) -> Any:
    """A passthrough call. `render` builds the JSON answer and headers from a finished call;
    `stream_render` maps each engine event to this route's SSE frames."""

    def answer() -> tuple[int, Any, dict[str, str]]:
        body, headers = render(turn)
        err = turn.result.error
        if err is not None and not turn.spec.stream:
            return err.status, envelope(request.url.path, err.type, err.message, err.param), headers
        return 200, body, headers

    async def finish() -> None:
        if scope is None:
            return
        if turn.result.message is not None:
            idempotency.complete(rt, scope, *answer())  # rendered only when it is to be stored
        else:
            idempotency.abandon(rt, scope)

    queue = sse.run_in_background(turn.events(), on_finish=finish)
    ping_s = rt.settings.ping_interval_s
    try:
        # Errors before the first event still get a plain status; but a stream whose upstream is
        # slow to start (a long prompt, thinking) must not sit silent past a proxy's idle timeout.
        first = await asyncio.wait_for(sse.next_item(queue), timeout=ping_s if turn.spec.stream else None)
    except asyncio.TimeoutError:
        first = {"type": "ping"}
    if isinstance(first, Exception):
        await sse.drain(queue)
        raise first
    if first is not None and first.get("type") == "qlaud.error":
        # The call failed before anything was streamed: a plain error status.
        await sse.drain(queue)
        return error_response(request, turn.result.error)
    if not turn.spec.stream:
        await sse.drain(queue)
        status, body, headers = answer()
        return FastJSONResponse(body, status_code=status, headers=headers)
    body = sse.stream(first, queue, ping_s, stream_render or sse.native)
    return TurnStreamingResponse(body, queue.task, media_type="text/event-stream", headers=SSE_HEADERS)


async def run_thread_turn(
    request: Request, rt: Runtime, req: TurnRequest, *, stream: bool, scope: idempotency.Claim | None
) -> Any:
    deps = rt.run_deps()
    lease = ThreadLease(rt.stores.threads, rt.clock, req.thread.id, req.run_id, rt.settings.turn_lease_ms)
    try:
        await lease.acquire(rt.settings.turn_lock_wait_s)
        try:
            if lease.taken_from is not None:  # its holder died mid-turn: end that turn first
                await recover_dead_turn(deps, req.principal.account_id, req.thread.id, lease.taken_from)
            ctx = start_run(deps, req)  # 400/402/404 here are plain statuses: nothing was kept
        except BaseException:
            lease.release()
            raise
    except BaseException:
        idempotency.abandon(rt, scope)
        raise
    ctx.lease = lease
    lease.start_heartbeat()
    feed = sse.Feed()
    log = RunEventLog(rt.stores.runs, ctx.run.id, live=lambda seq, event: feed.put_nowait((seq, event)))

    async def run() -> None:
        try:
            await drive(deps, ctx, log, tool_loop=rt.tool_loop)
            if not ctx.run.finished:  # a durable driver has it: stay until it ends (Lambda freezes otherwise)
                ctx.run, ctx.answer = await wait_for_end(rt.stores.runs, ctx.run.id, None), None
        finally:
            lease.release()
            feed.put_nowait(sse.DONE)
            if scope is not None:
                if ctx.run.finished and ctx.run.assistant_seq is not None:
                    idempotency.complete(rt, scope, *turn_answer(request, rt, ctx))
                else:
                    idempotency.abandon(rt, scope)

    feed.task = sse.spawn(run())
    ping_s = rt.settings.ping_interval_s
    try:
        first = await asyncio.wait_for(feed.get(), timeout=ping_s if stream else None)
    except asyncio.TimeoutError:
        first = None
    if isinstance(first, tuple) and first[1].get("type") == "qlaud.error":
        # The first call failed before anything was streamed: a plain error status.
        await sse.drain(feed)
        return error_response(request, ctx.error)
    if stream:
        frames = relay(rt.stores.runs, ctx, first, feed, ping_s)
        headers = {**SSE_HEADERS, "x-qlaud-thread-id": ctx.run.thread_id, "x-qlaud-run-id": ctx.run.id}
        return TurnStreamingResponse(frames, feed.task, media_type="text/event-stream", headers=headers)
    try:
        await asyncio.wait_for(asyncio.shield(feed.task), timeout=rt.settings.turn_wait_s)
    except asyncio.TimeoutError:
        return FastJSONResponse(render.run(ctx.run), status_code=202, headers=run_location(ctx.run))
    status, body, headers = turn_answer(request, rt, ctx)
    return FastJSONResponse(body, status_code=status, headers=headers)


def turn_answer(request: Request, rt: Runtime, ctx: RunContext) -> tuple[int, Any, dict[str, str]]:
    """The non-streaming answer of a finished run: the final message, or — when a call after
    the first failed (e.g. the cap ran out mid-loop) — its error status and envelope; both with
    the turn's headers (what was done before is persisted and billed)."""
    run = ctx.run
    headers = {
        "x-qlaud-thread-id": run.thread_id,
        "x-qlaud-assistant-seq": str(run.assistant_seq or ""),
        "x-qlaud-cost-micros": str(run.cost_micros),
        "x-qlaud-iterations": str(run.iteration),
        "x-qlaud-run-id": run.id,
    }
    if run.error is not None:
        err = ctx.error or GatewayError(run.error["message"])
        if ctx.error is None:
            err.status, err.type = run.error.get("status", 500), run.error["type"]
        return err.status, envelope(request.url.path, err.type, err.message, err.param), headers
    content = ctx.answer["content"] if ctx.answer is not None else _assistant_content(rt, run)
    return 200, render.run_answer(run, content), headers


def _assistant_content(rt: Runtime, run: Run) -> list[dict[str, Any]]:
    if run.assistant_seq is None:
        return []
    found = rt.stores.threads.list_messages(run.account_id, run.thread_id, after_seq=run.assistant_seq - 1, limit=1)
    return found[0].content if found and found[0].seq == run.assistant_seq else []


def run_location(run: Run) -> dict[str, str]:
    return {"location": f"/v1/threads/{run.thread_id}/runs/{run.id}", "x-qlaud-run-id": run.id}


async def relay(
    runs: RunStore, ctx: RunContext, first: Any, feed: sse.Feed, ping_s: float
) -> AsyncIterator[bytes]:
    """The run's SSE: live from the driver in this process, then from the store if a durable
    driver took it on. A `ping` (no id) whenever nothing else was sent for `ping_s`."""
    last = 0
    item = first
    while True:
        if item is sse.DONE:
            break
        if item is None:
            yield sse.encode({"type": "ping"})
        else:
            last = item[0]
            yield sse.encode(item[1], item[0])
        try:
            item = await asyncio.wait_for(feed.get(), timeout=ping_s)
        except asyncio.TimeoutError:
            item = None
    async for seq, event in stored_events(runs, ctx.run.id, last, ping_s):
        yield sse.encode({"type": "ping"}) if event is None else sse.encode(event, seq)


async def stored_events(
    runs: RunStore, run_id: str, after_seq: int, ping_s: float
) -> AsyncIterator[tuple[int, dict[str, Any] | None]]:
    """A run's stored events after `after_seq`, following the run until its `qlaud.done`;
    (seq, None) stands for a ping when nothing came for `ping_s`."""
    loop = asyncio.get_running_loop()
    poll, quiet_since = POLL_S[0], loop.time()
    while True:
        batch = await off_loop(runs.list_events, run_id, after_seq, 500)
        for seq, event in batch:
            after_seq = seq
            yield seq, event
            if event.get("type") == "qlaud.done":
                return
        if batch:
            poll, quiet_since = POLL_S[0], loop.time()
            continue
        run = await off_loop(runs.get_run, run_id)
        if run is None or (run.finished and not await off_loop(runs.list_events, run_id, after_seq, 1)):
            return  # gone, or ended with nothing more to send
        if loop.time() - quiet_since >= ping_s:
            quiet_since = loop.time()
            yield after_seq, None
        await asyncio.sleep(poll)
        poll = min(POLL_S[1], poll * 1.5)


async def wait_for_end(runs: RunStore, run_id: str, timeout_s: float | None) -> Run:
    """The run once it has ended (or as it is when `timeout_s` ran out)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    poll = POLL_S[0]
    while True:
        run = await off_loop(runs.get_run, run_id)
        if run is None:
            raise InvalidRequest(f"run {run_id} is gone")
        if run.finished or (deadline is not None and loop.time() >= deadline):
            return run
        await asyncio.sleep(poll)
        poll = min(POLL_S[1], poll * 1.5)


class TurnStreamingResponse(StreamingResponse):
    """Returns from the ASGI call only once the turn is over, even when the client left early.

    On Lambda the Web Adapter ends the invocation as soon as the client leaves; what keeps it
    open is `background/invocation_hold.py`, until this call returns. Returning at the disconnect
    would let Lambda freeze the rest of the turn (its persistence and exact settlement) until the
    sweeper bills the estimate (tests/infra/test_stream_function.py). Locally it changes nothing
    a client can see."""

    def __init__(self, content: Any, turn: asyncio.Task, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.turn = turn

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self.turn)
