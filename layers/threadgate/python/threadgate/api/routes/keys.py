"""/v1/keys (admin), /v1/key (any key, about itself), /v1/account (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from threadgate.api import render
from threadgate.api.deps import get_admin, get_principal, get_runtime
from threadgate.api.idempotency import idempotent
from threadgate.api.schemas import AccountPatch, KeyCreate, KeyPatch
from threadgate.domain import usage as usage_domain
from threadgate.domain.catalog import usd_to_micros
from threadgate.domain.errors import Conflict, InvalidRequest, NotFound
from threadgate.domain.keys import check_revocable, display_prefix, hash_secret, matching_keys, new_id, new_secret
from threadgate.domain.models import UNSET, ApiKey, Principal
from threadgate.runtime import Runtime

router = APIRouter()

# Epoch ms bounds: larger integers fit no storage column (SQLite INTEGER is 64-bit).
MAX_MS = 2**63 - 1


def _cap(usd: float | None) -> int | None:
    return None if usd is None else usd_to_micros(usd)


def mint_key(rt: Runtime, account_id: str, body: KeyCreate) -> tuple[ApiKey, str]:
    secret = new_secret(rt.settings.key_prefix)
    key = ApiKey(
        id=new_id("key_"),
        account_id=account_id,
        name=body.name,
        prefix=display_prefix(secret),
        scope=body.scope,
        cap_micros=_cap(body.max_spend_usd),
        end_user_id=body.end_user_id,
        metadata=body.metadata,
        created_at=rt.clock.now_ms(),
    )
    rt.stores.keys.create_key(key, hash_secret(secret))
    return key, secret


@router.post("/v1/keys", status_code=201)
async def create_key(
    request: Request, body: KeyCreate, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)
) -> Any:
    async def run() -> tuple[int, dict[str, Any], dict[str, str]]:
        key, secret = mint_key(rt, p.account_id, body)
        out = render.key(key)
        out = {k: out[k] for k in ("id", "object", "name", "prefix", "scope", "max_spend_usd", "end_user_id",
                                    "metadata", "created_at")}
        out["secret"] = secret
        return 201, out, {}

    return await idempotent(request, rt, p, body, run)


@router.get("/v1/keys")
def list_keys(
    q: str | None = Query(default=None, max_length=256),
    end_user_id: str | None = Query(default=None, min_length=1, max_length=256),
    limit: int | None = Query(default=None, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=MAX_MS),
    p: Principal = Depends(get_admin),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    found = matching_keys(rt.stores.keys.list_keys(p.account_id), q, end_user_id)
    page = found[offset:] if limit is None else found[offset:offset + limit]
    return {"keys": [render.key(k) for k in page], "total": len(found), "has_more": offset + len(page) < len(found)}


def active_admin_keys(rt: Runtime, account_id: str) -> int:
    return sum(1 for k in rt.stores.keys.list_keys(account_id) if k.scope == "admin" and not k.revoked)


def _key_or_404(rt: Runtime, p: Principal, key_id: str) -> ApiKey:
    key = rt.stores.keys.get_key(p.account_id, key_id)
    if key is None:
        raise NotFound("key not found")
    return key


@router.get("/v1/keys/{key_id}")
def get_key(key_id: str, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    return render.key(_key_or_404(rt, p, key_id))


@router.patch("/v1/keys/{key_id}")
def patch_key(key_id: str, body: KeyPatch, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    if _key_or_404(rt, p, key_id).revoked:
        raise Conflict("key is revoked: a revoked key cannot be changed")
    if body.given("name") and body.name is None:
        raise InvalidRequest("name: must be a string", param="name")
    key = rt.stores.keys.update_key(
        p.account_id,
        key_id,
        name=body.name if body.given("name") else UNSET,
        cap_micros=_cap(body.max_spend_usd) if body.given("max_spend_usd") else UNSET,
        metadata=body.metadata if body.given("metadata") else UNSET,
    )
    return render.key(key)


@router.delete("/v1/keys/{key_id}")
def revoke_key(key_id: str, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    target = _key_or_404(rt, p, key_id)
    check_revocable(target, by_key_id=p.key_id, active_admin_keys=active_admin_keys(rt, p.account_id))
    if not rt.stores.keys.revoke_key(p.account_id, key_id, rt.clock.now_ms()):
        raise NotFound("key not found")
    return {"ok": True}


def window(rt: Runtime, from_ms: int | None, to_ms: int | None) -> tuple[int, int]:
    now = rt.clock.now_ms()
    start = usage_domain.month_start_ms(now) if from_ms is None else from_ms
    end = max(now + 1, start) if to_ms is None else to_ms  # an open window never ends before it starts
    if start < 0 or end < 0:
        raise InvalidRequest("from_ms/to_ms must be non-negative", param="from_ms" if start < 0 else "to_ms")
    if end < start:
        raise InvalidRequest("to_ms must not be before from_ms", param="to_ms")
    return start, end


@router.get("/v1/keys/{key_id}/usage")
def key_usage(
    key_id: str,
    from_ms: int | None = Query(default=None, le=MAX_MS),
    to_ms: int | None = Query(default=None, le=MAX_MS),
    p: Principal = Depends(get_admin),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    key = _key_or_404(rt, p, key_id)
    start, end = window(rt, from_ms, to_ms)
    events = rt.stores.ledger.usage_events(p.account_id, start, end, key_id=key.id)
    summary = usage_domain.summarize(events, {key.id: key})
    return {
        "key_id": key.id,
        "key_name": key.name,
        "key_prefix": key.prefix,
        "from_ms": start,
        "to_ms": end,
        "cost_micros": summary["total_cost_micros"],
        "cap_micros": key.cap_micros,
        "spent_micros": key.spent_micros,
        "reserved_micros": key.reserved_micros,
        "input_tokens": summary["total_input_tokens"],
        "output_tokens": summary["total_output_tokens"],
        "request_count": summary["request_count"],
        "by_model": summary["by_model"],
        "events": [usage_domain.event_json(e) for e in events[:100]],
    }


@router.get("/v1/key")
def whoami(p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    key = _key_or_404(rt, p, p.key_id)
    return render.self_key(key, rt.stores.keys.get_account(p.account_id))


@router.get("/v1/account")
def get_account(p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    account = rt.stores.keys.get_account(p.account_id)
    if account is None:
        raise NotFound("account not found")
    return render.account(account)


@router.patch("/v1/account")
def patch_account(body: AccountPatch, p: Principal = Depends(get_admin), rt: Runtime = Depends(get_runtime)) -> Any:
    if body.given("name") and body.name is None:
        raise InvalidRequest("name: must be a string", param="name")
    account = rt.stores.keys.update_account(
        p.account_id,
        name=body.name if body.given("name") else UNSET,
        cap_micros=_cap(body.max_spend_usd) if body.given("max_spend_usd") else UNSET,
    )
    return render.account(account)


def _group_by(raw: str | None) -> list[str]:
    by = [d.strip() for d in (raw or "").split(",") if d.strip()]
    unknown = [d for d in by if d not in usage_domain.GROUP_BY]
    if unknown:
        raise InvalidRequest(
            f"group_by: unknown dimension {unknown[0]!r} (one or more of {', '.join(usage_domain.GROUP_BY)})",
            param="group_by",
        )
    return by


@router.get("/v1/usage")
def account_usage(
    from_ms: int | None = Query(default=None, le=MAX_MS),
    to_ms: int | None = Query(default=None, le=MAX_MS),
    group_by: str | None = Query(default=None, max_length=200),
    key_id: str | None = Query(default=None, min_length=1, max_length=128),
    end_user_id: str | None = Query(default=None, min_length=1, max_length=256),
    thread_id: str | None = Query(default=None, min_length=1, max_length=128),
    p: Principal = Depends(get_admin),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    by = _group_by(group_by)
    start, end = window(rt, from_ms, to_ms)
    events = rt.stores.ledger.usage_events(p.account_id, start, end, key_id=key_id)
    keys = {k.id: k for k in rt.stores.keys.list_keys(p.account_id)}
    if end_user_id is not None:
        events = [e for e in events if e.key_id in keys and keys[e.key_id].end_user_id == end_user_id]
    if thread_id is not None:
        events = [e for e in events if e.thread_id == thread_id]
    out = {"object": "usage", "from_ms": start, "to_ms": end, **usage_domain.summarize(events, keys)}
    if by:
        out["groups"] = usage_domain.group(events, keys, by)
    return out


@router.get("/v1/usage/requests")
def request_counts(
    from_ms: int | None = Query(default=None, le=MAX_MS),
    to_ms: int | None = Query(default=None, le=MAX_MS),
    p: Principal = Depends(get_admin),
    rt: Runtime = Depends(get_runtime),
) -> Any:
    start, end = window(rt, from_ms, to_ms)
    counter = rt.stores.request_counts
    counts = [] if counter is None or end <= start else counter.daily(
        p.account_id, usage_domain.day_of(start), usage_domain.day_of(end - 1)
    )
    return {"object": "list", "from_ms": start, "to_ms": end, "data": usage_domain.daily_requests(counts)}


@router.get("/v1/models")
def list_models(p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)) -> Any:
    return {"object": "list", "data": [render.model(m, rt.markup) for m in rt.available_models()]}
