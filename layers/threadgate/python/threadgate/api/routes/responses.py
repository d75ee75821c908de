"""POST /v1/responses: the OpenAI Responses API, OpenAI-family models only, passed through whole
(API.md §10.1; an extension of the qlaud contract)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from threadgate.api import idempotency, passthrough
from threadgate.api.deps import get_principal, get_runtime, request_id
from threadgate.api.turn_http import run_turn
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

router = APIRouter()


@router.post("/v1/responses")
async def responses(
    request: Request, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    raw = passthrough.json_body(await request.body())
    call = passthrough.responses(rt, p, raw, request_id(request))
    scope, replay = idempotency.claim_key(request, rt, p, raw)
    if replay is not None:
        return replay
    return await run_turn(request, rt, call.call, scope=scope, render=call.render, stream_render=call.stream_render)
