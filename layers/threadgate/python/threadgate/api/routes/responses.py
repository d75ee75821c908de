"""POST /v1/responses: the OpenAI Responses API, OpenAI-family models only, passed through whole
(API.md §10.1; an extension of the qlaud contract)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from threadgate.api import passthrough
from threadgate.api.deps import get_principal, get_runtime
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

router = APIRouter()


@router.post("/v1/responses")
async def responses(
    request: Request, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    return await passthrough.serve(request, rt, p, lambda raw, rid: passthrough.responses(rt, p, raw, rid))
