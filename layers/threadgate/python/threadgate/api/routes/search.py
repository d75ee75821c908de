"""GET /v1/search and GET /v1/threads/{id}/search (API.md §9)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from threadgate.api.deps import get_principal, get_runtime
from threadgate.api.routes.threads import visible_thread
from threadgate.domain.errors import NotFound
from threadgate.domain.keys import scoped_end_user
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

router = APIRouter()


Mode = Literal["semantic", "lexical", "hybrid"]


async def _search(
    rt: Runtime, p: Principal, q: str, limit: int, mode: str, end_user_id: str | None, thread_id: str | None
) -> Any:
    if rt.indexer is None:
        raise NotFound("search is not configured on this gateway")
    end_user = scoped_end_user(p, end_user_id)
    # Embedding is CPU work (local) or a network call (Bedrock): keep it off the event loop.
    data = await asyncio.to_thread(
        rt.indexer.search, account_id=p.account_id, end_user_id=end_user, thread_id=thread_id, q=q, limit=limit,
        mode=mode,
    )
    return {"object": "list", "query": q, "mode": mode, "data": data}


@router.get("/v1/search")
async def search(
    q: str = Query(default="", max_length=2000),
    limit: int = Query(default=10, ge=1, le=50),
    mode: Mode = Query(default="hybrid"),
    end_user_id: str | None = Query(default=None, min_length=1, max_length=256),
    thread_id: str | None = Query(default=None, min_length=1, max_length=128),
    p: Principal = Depends(get_principal),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    return await _search(rt, p, q, limit, mode, end_user_id, thread_id)


@router.get("/v1/threads/{thread_id}/search")
async def search_thread(
    thread_id: str,
    q: str = Query(default="", max_length=2000),
    limit: int = Query(default=10, ge=1, le=50),
    mode: Mode = Query(default="hybrid"),
    p: Principal = Depends(get_principal),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    visible_thread(rt, p, thread_id)
    return await _search(rt, p, q, limit, mode, None, thread_id)
