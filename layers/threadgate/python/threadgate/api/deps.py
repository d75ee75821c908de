"""FastAPI dependencies: the runtime, the calling principal, admin scope."""

from __future__ import annotations

from fastapi import Depends, Request

from threadgate.domain.keys import authenticate, principal_of, require_admin
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

# last_used_at is bookkeeping, not auth: one write per key per minute is plenty.
TOUCH_EVERY_MS = 60_000


# Async on purpose: FastAPI runs sync dependencies in a threadpool, a hop that costs more than
# these microsecond lookups.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def get_principal(request: Request, rt: Runtime = Depends(get_runtime)) -> Principal:
    key = authenticate(rt.stores.keys, presented_key(request))
    now = rt.clock.now_ms()
    if key.last_used_at is None or now - key.last_used_at > TOUCH_EVERY_MS:
        rt.stores.keys.touch_key(key.id, now)
    principal = principal_of(key)
    request.state.principal = principal
    return principal


async def get_admin(principal: Principal = Depends(get_principal)) -> Principal:
    require_admin(principal)
    return principal


def request_id(request: Request) -> str:
    return request.scope["state"]["request_id"]
