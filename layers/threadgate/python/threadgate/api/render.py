"""Records → wire JSON (API.md field names; money stays integer micros except *_usd)."""

from __future__ import annotations

from typing import Any

from threadgate.domain import billing
from threadgate.domain.catalog import micros_to_usd
from threadgate.domain.jobs import Job
from threadgate.domain.models import Account, ApiKey, DeliveryRecord, Message, ModelInfo, PriceTier, Thread, Tool, Usage
from threadgate.domain.runs import Run


def key(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "object": "key",
        "name": k.name,
        "prefix": k.prefix,
        "scope": k.scope,
        "max_spend_usd": micros_to_usd(k.cap_micros),
        "end_user_id": k.end_user_id,
        "metadata": k.metadata,
        "spent_micros": k.spent_micros,
        "reserved_micros": k.reserved_micros,
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
        "revoked": k.revoked,
    }


def self_key(k: ApiKey, account: Account | None) -> dict[str, Any]:
    left = billing.remaining(k.cap_micros, k.spent_micros, k.reserved_micros)
    if account is not None:
        acct_left = billing.remaining(account.cap_micros, account.spent_micros, account.reserved_micros)
        if acct_left is not None:
            left = acct_left if left is None else min(left, acct_left)
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scope": k.scope,
        "end_user_id": k.end_user_id,
        "cap_micros": k.cap_micros,
        "spent_micros": k.spent_micros,
        "reserved_micros": k.reserved_micros,
        "remaining_micros": None if left is None else max(0, left),
    }


def account(a: Account) -> dict[str, Any]:
    return {
        "id": a.id,
        "object": "account",
        "name": a.name,
        "max_spend_usd": micros_to_usd(a.cap_micros),
        "spent_micros": a.spent_micros,
        "reserved_micros": a.reserved_micros,
        "created_at": a.created_at,
    }


def thread(t: Thread) -> dict[str, Any]:
    return {
        "id": t.id,
        "object": "thread",
        "end_user_id": t.end_user_id,
        "metadata": t.metadata,
        "title": t.title,
        "created_at": t.created_at,
        "last_active_at": t.last_active_at,
        "message_count": t.message_count,
    }


def message(m: Message) -> dict[str, Any]:
    return {
        "seq": m.seq,
        "role": m.role,
        "content": m.content,
        "model": m.model,
        "request_id": m.request_id,
        "created_at": m.created_at,
    }


def _tier(t: PriceTier) -> dict[str, Any]:
    p = t.prices
    return {
        "tier": t.name,
        "above_input_tokens": t.above_input_tokens,
        "input_usd_per_mtok": micros_to_usd(p.input),
        "output_usd_per_mtok": micros_to_usd(p.output),
        "cache_read_usd_per_mtok": micros_to_usd(p.cache_read),
        "cache_write_usd_per_mtok": micros_to_usd(p.cache_write),
        "cache_write_1h_usd_per_mtok": micros_to_usd(p.cache_write_1h),
    }


def model(m: ModelInfo, markup: Any) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "model",
        "provider": m.provider,
        "upstream_id": m.upstream_id,
        "context_window": m.context_window,
        "max_output_tokens": m.max_output_tokens,
        "legacy": m.legacy,
        # The base prices (default service tier, below every input-size line), as in round 1.
        **{k: v for k, v in _tier(m.price_tiers["default"][0]).items() if k.endswith("per_mtok")},
        "price_tiers": {service: [_tier(t) for t in tiers] for service, tiers in m.price_tiers.items()},
        "price_source": m.price_source,
        "rules": vars(m.rules),
        "markup": float(markup),
    }


def tool(t: Tool, *, secret: str | None = None) -> dict[str, Any]:
    out = {
        "id": t.id,
        "object": "tool",
        "name": t.name,
        "description": t.description,
        "input_schema": t.input_schema,
        "webhook_url": t.webhook_url,
        "timeout_ms": t.timeout_ms,
        "created_at": t.created_at,
    }
    if secret is not None:
        out["secret"] = secret
    return out


def job(j: Job) -> dict[str, Any]:
    return {
        "id": j.id,
        "object": "job",
        "status": j.status,
        "endpoint": j.endpoint,
        "model": j.model,
        "created_at": j.created_at,
        "started_at": j.started_at,
        "completed_at": j.completed_at,
        "response": j.response,
        "error": j.error,
        "cost_micros": j.cost_micros,
    }


def delivery(d: DeliveryRecord) -> dict[str, Any]:
    out = {"object": "delivery", **vars(d)}
    del out["account_id"]  # the caller's own account: not worth repeating on every record
    return out


def run(r: Run) -> dict[str, Any]:
    """A thread turn's run (status route, 202 answers)."""
    return {
        "id": r.id,
        "object": "run",
        "thread_id": r.thread_id,
        "status": r.status,
        "model": r.model,
        "iterations": r.iteration,
        "max_iterations": r.max_iterations,
        "hit_max_iterations": r.hit_max_iterations,
        "incomplete": r.incomplete,
        "cancel_requested": r.cancel_requested,
        "assistant_seq": r.assistant_seq,
        "cost_micros": r.cost_micros,
        "usage": r.usage or Usage().as_dict(),
        "error": None if r.error is None else {"type": r.error["type"], "message": r.error["message"]},
        "job_id": r.job_id,
        "attempts": r.attempts,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def run_answer(r: Run, content: list[dict[str, Any]]) -> dict[str, Any]:
    """A finished run's non-streaming answer: its last assistant message, usage summed over
    every call of the turn (API.md §6.1)."""
    answer = r.answer or {}
    return {
        "id": answer.get("id") or f"msg_{r.id}",
        "type": "message",
        "role": "assistant",
        "model": r.model,
        "content": content,
        "stop_reason": answer.get("stop_reason"),
        "stop_sequence": answer.get("stop_sequence"),
        "usage": r.usage or Usage().as_dict(),
        "hit_max_iterations": r.hit_max_iterations,
    }
