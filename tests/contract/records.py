"""Domain records for the contract suites, with defaults so each test states only what matters."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from threadgate.domain.models import Account, ApiKey, NewMessage, Reservation, Thread, Tool, UsageEvent

_ids = itertools.count(1)

# 2026-03-31T23:59:59.000Z: one second before a month boundary (usage is partitioned by month).
MARCH_END = 1_775_001_599_000
APRIL_START = MARCH_END + 1_000


def uid(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


def account(id: str | None = None, *, cap: int | None = None, created_at: int = 1_000) -> Account:
    return Account(id=id or uid("acct"), name="Acme", cap_micros=cap, created_at=created_at)


def key(account_id: str, *, id: str | None = None, cap: int | None = None, created_at: int = 2_000,
        **fields: Any) -> ApiKey:
    key_id = id or uid("key")
    return ApiKey(
        id=key_id,
        account_id=account_id,
        name=fields.pop("name", f"key {key_id}"),
        prefix="qlk_live_abcd…wxyz",
        scope=fields.pop("scope", "standard"),
        cap_micros=cap,
        created_at=created_at,
        **fields,
    )


def reservation(k: ApiKey, estimate: int, *, id: str | None = None, created_at: int = 10_000,
                expires_at: int | None = None) -> Reservation:
    return Reservation(
        id=id or uid("res"),
        key_id=k.id,
        account_id=k.account_id,
        estimate_micros=estimate,
        created_at=created_at,
        expires_at=created_at + 60_000 if expires_at is None else expires_at,
        request_id=uid("req"),
        model="claude-test",
        provider="anthropic",
    )


def event(res: Reservation, cost: int, *, created_at: int | None = None, status: str = "ok") -> UsageEvent:
    return UsageEvent(
        id=uid("evt"),
        request_id=res.request_id,
        key_id=res.key_id,
        account_id=res.account_id,
        thread_id=res.thread_id,
        model=res.model,
        provider=res.provider,
        input_tokens=120,
        output_tokens=30,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=5,
        upstream_cost_micros=cost,
        cost_micros=cost,
        latency_ms=42,
        status=status,
        created_at=res.created_at if created_at is None else created_at,
    )


def thread(account_id: str, *, end_user_id: str | None = None, id: str | None = None,
           last_active_at: int = 5_000, metadata: dict[str, Any] | None = None) -> Thread:
    return Thread(
        id=id or uid("thr"),
        account_id=account_id,
        end_user_id=end_user_id,
        metadata=metadata,
        title=None,
        created_at=last_active_at,
        last_active_at=last_active_at,
    )


def user_says(text: str) -> NewMessage:
    return NewMessage(role="user", content=text, kind="user")


def tool(account_id: str, name: str, *, id: str | None = None, created_at: int = 3_000) -> Tool:
    return Tool(
        id=id or uid("tool"),
        account_id=account_id,
        name=name,
        description="Looks up the weather",
        input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        webhook_url="https://hooks.example.com/weather",
        timeout_ms=30_000,
        secret="wsk_" + "ab" * 32,
        created_at=created_at,
    )


def setup_key(stores, *, key_cap: int | None, account_cap: int | None = None) -> ApiKey:
    """A key (with its account) stored in `stores`."""
    acct = account(cap=account_cap)
    stores.keys.create_account(acct)
    k = key(acct.id, cap=key_cap)
    stores.keys.create_key(k, hashlib.sha256(k.id.encode()).hexdigest())
    return k
