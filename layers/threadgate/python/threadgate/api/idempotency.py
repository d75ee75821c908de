"""Idempotency-Key (API.md §12): a retry with the same key and body replays the first answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from threadgate.domain.errors import Conflict, GatewayError, InvalidRequest
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

TTL_MS = 24 * 3600 * 1000
Outcome = tuple[int, Any, dict[str, str]]


def idempotency_scope(key_id: str, method: str, path: str, idempotency_key: str) -> str:
    """Keys are per API key and per route: another caller's key never replays our answer."""
    return f"{key_id}:{method}:{path}:{idempotency_key}"


def claim_key(request: Request, rt: Runtime, p: Principal, body: BaseModel) -> tuple[str | None, JSONResponse | None]:
    """(scope to complete later, or None) and a replayed response when this is a repeat."""
    idem = request.headers.get("idempotency-key")
    if idem is None:
        return None, None
    if not 1 <= len(idem) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1-255 characters", param="Idempotency-Key")
    scope = idempotency_scope(p.key_id, request.method, request.url.path, idem)
    payload = body.model_dump(mode="json", exclude={"stream"})
    body_hash = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    now = rt.clock.now_ms()
    existing = rt.stores.idempotency.claim(scope, body_hash, now, TTL_MS)
    if existing is not None and existing.state != "done" and now - existing.created_at > rt.settings.reservation_ttl_ms:
        # Its owner died without completing or abandoning (a crash, a Lambda timeout): no
        # request runs longer than a reservation lives, so a retry takes the key over.
        rt.stores.idempotency.abandon(scope)
        existing = rt.stores.idempotency.claim(scope, body_hash, now, TTL_MS)
    if existing is None:
        return scope, None
    if existing.body_hash != body_hash:
        raise Conflict("Idempotency-Key was already used with a different body", param="Idempotency-Key")
    if existing.state != "done":
        raise Conflict("a request with this Idempotency-Key is still in progress", param="Idempotency-Key")
    stored = existing.response or {}
    headers = {**stored.get("headers", {}), "idempotent-replayed": "true"}
    return None, JSONResponse(stored.get("body"), status_code=existing.status_code or 200, headers=headers)


def complete(rt: Runtime, scope: str | None, status: int, body: Any, headers: dict[str, str]) -> None:
    if scope is not None:
        rt.stores.idempotency.complete(scope, status, {"body": body, "headers": headers})


async def idempotent(
    request: Request, rt: Runtime, p: Principal, body: BaseModel, run: Callable[[], Awaitable[Outcome]]
) -> JSONResponse:
    scope, replay = claim_key(request, rt, p, body)
    if replay is not None:
        return replay
    try:
        status, out, headers = await run()
    except GatewayError:
        if scope is not None:
            rt.stores.idempotency.abandon(scope)  # a failed request may be retried with the same key
        raise
    complete(rt, scope, status, out, headers)
    return JSONResponse(out, status_code=status, headers=headers)
