"""POST /v1/chat/completions: OpenAI shape in and out, any catalog model (API.md §10)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from threadgate.api import passthrough
from threadgate.api.deps import get_principal, get_runtime
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(
    request: Request, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    return await passthrough.serve(request, rt, p, lambda raw, rid: passthrough.chat(rt, p, raw, rid))
