"""POST /v1/threads/{id}/messages (a turn: a run, see api/turn_http.py) and POST /v1/messages
(Anthropic passthrough, api/passthrough.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from threadgate.api import idempotency, passthrough
from threadgate.api.deps import get_principal, get_runtime, request_id
from threadgate.api.routes.threads import visible_thread
from threadgate.api.schemas import TurnCreate
from threadgate.api.turn_http import run_thread_turn
from threadgate.domain import model_rules
from threadgate.domain.errors import InvalidRequest
from threadgate.domain.models import Principal
from threadgate.domain.history import as_blocks
from threadgate.domain.steps import TurnRequest
from threadgate.runtime import Runtime

router = APIRouter()


def _tools(rt: Runtime, p: Principal, body: TurnCreate) -> list:
    """The turn's tools, each id checked; an error names the field the caller used (tools or its
    alias tool_ids)."""
    refs = [(f"tools[{i}]", t) for i, t in enumerate(body.tools or [])]
    refs += [(f"tool_ids[{i}]", t) for i, t in enumerate(body.tool_ids or [])]
    tools: dict[str, Any] = {}
    for field, tool_id in refs:
        if tool_id in tools:
            continue
        tool = rt.stores.tools.get_tool(p.account_id, tool_id)
        if tool is None:
            raise InvalidRequest(f"{field}: unknown tool id {tool_id!r}", param=field)
        tools[tool_id] = tool
    return list(tools.values())


def thread_turn(
    rt: Runtime, p: Principal, thread_id: str, body: TurnCreate, rid: str, *, job_id: str | None = None
) -> TurnRequest:
    """A turn on a thread, its thread, model and tools checked (404/400 as this route answers).
    Shared with async jobs, which replay this route later."""
    thread = visible_thread(rt, p, thread_id)
    model = rt.model(body.model)
    params = body.forwarded()
    model_rules.check_parameters(model, params)  # before any write, reservation or upstream call
    return TurnRequest(
        run_id=rid,
        principal=p,
        thread=thread,
        model=model,
        params=params,
        content=as_blocks(body.content),
        tools=_tools(rt, p, body),
        max_iterations=body.max_iterations,
        job_id=job_id,
    )


@router.post("/v1/threads/{thread_id}/messages")
async def send_turn(
    thread_id: str,
    body: TurnCreate,
    request: Request,
    p: Principal = Depends(get_principal),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    turn = thread_turn(rt, p, thread_id, body, request_id(request))
    scope, replay = idempotency.claim_key(request, rt, p, body)
    if replay is not None:
        return replay
    return await run_thread_turn(request, rt, turn, stream=body.stream, scope=scope)


@router.post("/v1/messages")
async def messages(
    request: Request, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    return await passthrough.serve(
        request, rt, p, lambda raw, rid: passthrough.messages(rt, p, raw, rid, headers=request.headers)
    )
