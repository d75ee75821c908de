"""A thread turn's run: status, its event stream (resumable with Last-Event-ID), cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse

from threadgate.api import render, sse
from threadgate.api.deps import get_principal, get_runtime
from threadgate.api.routes.threads import visible_thread
from threadgate.api.turn_http import SSE_HEADERS, stored_events
from threadgate.domain.errors import Conflict, InvalidRequest, NotFound
from threadgate.domain.models import Principal
from threadgate.domain.runs import Run
from threadgate.runtime import Runtime

router = APIRouter()


def visible_run(rt: Runtime, p: Principal, thread_id: str, run_id: str) -> Run:
    """The run if this key may see its thread; 404 otherwise (never reveal existence)."""
    visible_thread(rt, p, thread_id)
    run = rt.stores.runs.get_run(run_id, p.account_id) if rt.stores.runs else None
    if run is None or run.thread_id != thread_id:
        raise NotFound("run not found")
    return run


@router.get("/v1/threads/{thread_id}/runs/{run_id}")
def get_run(thread_id: str, run_id: str, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    return render.run(visible_run(rt, p, thread_id, run_id))


@router.get("/v1/threads/{thread_id}/runs/{run_id}/events")
async def run_events(
    thread_id: str,
    run_id: str,
    last_event_id: str | None = Header(default=None, max_length=20),
    p: Principal = Depends(get_principal),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    """The run's §6.2 events after `Last-Event-ID` (all of them without it), then live until
    its `qlaud.done`."""
    visible_run(rt, p, thread_id, run_id)
    after = 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise InvalidRequest("Last-Event-ID: must be an event id of this run (a non-negative integer)",
                                 param="Last-Event-ID")
        after = int(last_event_id)
    ping_s = rt.settings.ping_interval_s

    async def frames():
        async for seq, event in stored_events(rt.stores.runs, run_id, after, ping_s):
            yield sse.encode({"type": "ping"}) if event is None else sse.encode(event, seq)

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/v1/threads/{thread_id}/runs/{run_id}/cancel")
def cancel_run(thread_id: str, run_id: str, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    """Ask the run to stop at its next step boundary (after the model call in progress; a tool
    call in progress is abandoned and its late answer ignored). 409 if it already ended."""
    run = visible_run(rt, p, thread_id, run_id)
    updated = rt.stores.runs.update_run(run.id, {"cancel_requested": True, "updated_at": rt.clock.now_ms()})
    if updated is None:
        current = rt.stores.runs.get_run(run.id) or run
        raise Conflict(f"run {run.id} already {current.status}; only a running run can be cancelled")
    return render.run(updated)
