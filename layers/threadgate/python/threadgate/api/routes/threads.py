"""/v1/threads: create, list (cursor), get, patch, delete, history."""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query

from threadgate.api import render
from threadgate.api.deps import get_principal, get_runtime
from threadgate.api.schemas import ThreadCreate, ThreadPatch, check_metadata_size
from threadgate.domain.errors import InvalidRequest, NotFound
from threadgate.domain.keys import new_id, scoped_end_user
from threadgate.domain.models import UNSET, Principal, Thread
from threadgate.runtime import Runtime

router = APIRouter()

MAX_INT = 2**63 - 1  # the largest integer a storage column holds (SQLite INTEGER is 64-bit)


def visible_thread(rt: Runtime, p: Principal, thread_id: str) -> Thread:
    """The thread if this key may see it; 404 otherwise (never reveal existence)."""
    thread = rt.stores.threads.get_thread(p.account_id, thread_id, p.end_user_id)
    if thread is None:
        raise NotFound("thread not found")
    return thread


@router.post("/v1/threads", status_code=201)
def create_thread(body: ThreadCreate, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    end_user = scoped_end_user(p, body.end_user_id)
    now = rt.clock.now_ms()
    thread = Thread(new_id("thr_"), p.account_id, end_user, body.metadata, None, now, now, 0)
    rt.stores.threads.create_thread(thread)
    return render.thread(thread)


def _encode_cursor(t: Thread) -> str:
    return base64.urlsafe_b64encode(f"{t.last_active_at}:{t.id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, sep, thread_id = raw.partition(":")
        if not sep or not 0 <= int(ts) <= MAX_INT:
            raise ValueError(cursor)
        return int(ts), thread_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("before: not a cursor returned by this API", param="before") from None


@router.get("/v1/threads")
def list_threads(
    end_user_id: str | None = Query(default=None, min_length=1, max_length=256),
    limit: int = Query(default=20, ge=1, le=100),
    before: str | None = Query(default=None, max_length=512),
    p: Principal = Depends(get_principal),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    end_user = scoped_end_user(p, end_user_id)
    cursor = _decode_cursor(before) if before else None
    threads = rt.stores.threads.list_threads(p.account_id, end_user, limit + 1, cursor)
    page, has_more = threads[:limit], len(threads) > limit
    return {
        "object": "list",
        "data": [render.thread(t) for t in page],
        "has_more": has_more,
        "next_cursor": _encode_cursor(page[-1]) if has_more and page else None,
    }


@router.get("/v1/threads/{thread_id}")
def get_thread(thread_id: str, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    return render.thread(visible_thread(rt, p, thread_id))


@router.patch("/v1/threads/{thread_id}")
def patch_thread(
    thread_id: str, body: ThreadPatch, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    visible_thread(rt, p, thread_id)
    title = body.title if body.given("title") else UNSET
    if not body.given("metadata"):
        updated = rt.stores.threads.update_thread(p.account_id, thread_id, title=title)
    else:
        changes = body.metadata or {}

        def merged(current: dict[str, Any] | None) -> dict[str, Any] | None:
            """`changes` over `current` (null removes a key); the store applies it atomically."""
            metadata = {**(current or {}), **changes}
            for k, v in changes.items():
                if v is None:
                    del metadata[k]
            try:
                return check_metadata_size(metadata)
            except ValueError as err:  # each patch fits, but together they may not
                raise InvalidRequest(str(err), param="metadata") from None

        updated = rt.stores.threads.update_thread_metadata(p.account_id, thread_id, merged, title=title)
    if updated is None:
        raise NotFound("thread not found")
    return render.thread(updated)


@router.delete("/v1/threads/{thread_id}")
async def delete_thread(thread_id: str, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    visible_thread(rt, p, thread_id)
    if not rt.stores.threads.delete_thread(p.account_id, thread_id):
        raise NotFound("thread not found")
    if rt.stores.runs is not None:  # their events and tool outcomes hold the thread's text too
        rt.stores.runs.delete_thread_runs(p.account_id, thread_id)
    if rt.indexer is not None:
        rt.indexer.delete_thread(p.account_id, thread_id)
    return {"id": thread_id, "object": "thread", "deleted": True}


@router.get("/v1/threads/{thread_id}/messages")
def list_messages(
    thread_id: str,
    limit: int = Query(default=50, ge=1, le=200),
    order: Literal["asc", "desc"] = Query(default="asc"),
    after_seq: int | None = Query(default=None, ge=0, le=MAX_INT),
    before_seq: int | None = Query(default=None, ge=1, le=MAX_INT),
    p: Principal = Depends(get_principal),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    visible_thread(rt, p, thread_id)
    rows = rt.stores.threads.list_messages(
        p.account_id, thread_id, after_seq=after_seq, before_seq=before_seq, limit=limit + 1,
        descending=order == "desc",
    )
    page, has_more = rows[:limit], len(rows) > limit
    return {
        "object": "list",
        "data": [render.message(m) for m in page],
        "has_more": has_more,
        "first_seq": page[0].seq if page else None,
        "last_seq": page[-1].seq if page else None,
    }
