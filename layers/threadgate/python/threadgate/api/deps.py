"""FastAPI dependencies: the runtime, the calling principal, admin scope."""

from __future__ import annotations

from fastapi import Depends, Request

from threadgate.domain.errors import RateLimited
from threadgate.domain.keys import authenticate, principal_of, require_admin
from threadgate.domain.models import Principal
from threadgate.runtime import Runtime

# last_used_at is bookkeeping, not auth: one write per key per minute is plenty.
TOUCH_EVERY_MS = 60_000
_touched: dict[str, int] = {}  # key id -> when this process last wrote last_used_at


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
    # The auth lookup may not carry last_used_at (DynamoDB reads only the hash item), so this
    # process also remembers its own last touch: at most one write per key per minute.
    last = max(key.last_used_at or 0, _touched.get(key.id, 0))
    if now - last > TOUCH_EVERY_MS:
        rt.stores.keys.touch_key(key.id, now)
        if len(_touched) > 100_000:  # bounded memory; forgetting only costs an early write
            _touched.clear()
        _touched[key.id] = now
    limiter = rt.rate_limiter
    if limiter is not None and (wait := limiter.retry_after(key.id, now)):
        raise RateLimited(f"rate limit of {limiter.per_minute} requests per minute reached", retry_after=wait)
    principal = principal_of(key)
    request.state.principal = principal
    return principal


async def get_admin(principal: Principal = Depends(get_principal)) -> Principal:
    require_admin(principal)
    return principal


def request_id(request: Request) -> str:
    return request.scope["state"]["request_id"]
