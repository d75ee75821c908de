"""Runs a `Turn` for HTTP: one JSON answer or an SSE stream, with idempotency and the thread lock."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from threadgate.api import idempotency, sse
from threadgate.api.errors import envelope, error_response
from threadgate.api.responses import FastJSONResponse
from threadgate.domain.errors import Conflict, GatewayError
from threadgate.domain.turns import Turn
from threadgate.runtime import Runtime

LOCK_WAIT_S = 120.0
LOCK_POLL_S = 0.02

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def acquire_thread(rt: Runtime, thread_id: str, holder: str) -> None:
    """Concurrent turns on one thread run one after another (invariant 3)."""
    ttl = rt.settings.reservation_ttl_ms
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT_S
    while not rt.stores.threads.acquire_turn_lock(thread_id, holder, rt.clock.now_ms(), ttl):
        if loop.time() > deadline:
            raise Conflict("another turn on this thread is still running; retry later")
        await asyncio.sleep(LOCK_POLL_S)


async def run_turn(
    request: Request,
    rt: Runtime,
    turn: Turn,
    *,
    scope: idempotency.Claim | None,
    render: Callable[[Turn], tuple[Any, dict[str, str]]],
    lock: tuple[str, str] | None = None,
    stream_render: Callable[[dict[str, Any]], list[bytes]] | None = None,
) -> Any:
    """`render` builds the JSON answer and headers from a finished turn; `stream_render` maps each
    engine event to this route's SSE frames (default: our native events, API.md §6.2)."""

    def answer() -> tuple[int, Any, dict[str, str]]:
        """The non-streaming answer. A call after the first that failed (e.g. the cap ran out
        mid-loop) answers with its error status and envelope, plus the turn's headers: what was
        done before it is persisted and billed."""
        body, headers = render(turn)
        err = turn.result.error
        if err is not None and not turn.spec.stream:
            return err.status, envelope(request.url.path, err.type, err.message, err.param), headers
        return 200, body, headers

    async def finish() -> None:
        if lock is not None:
            rt.stores.threads.release_turn_lock(*lock)
        if scope is None:
            return
        if turn.result.message is not None:
            idempotency.complete(rt, scope, *answer())  # rendered only when it is to be stored
        else:
            idempotency.abandon(rt, scope)

    try:
        if lock is not None:
            await acquire_thread(rt, *lock)
    except GatewayError:
        idempotency.abandon(rt, scope)
        raise
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
        # The first model call failed before anything was streamed: a plain error status.
        await sse.drain(queue)
        return error_response(request, turn.result.error)
    if not turn.spec.stream:
        await sse.drain(queue)
        status, body, headers = answer()
        return FastJSONResponse(body, status_code=status, headers=headers)
    body = sse.stream(first, queue, ping_s, stream_render or sse.native)
    return TurnStreamingResponse(body, queue.task, media_type="text/event-stream", headers=SSE_HEADERS)


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
