"""Usage reports: exact sums of usage events in a window, by key and by model, grouped on request
by day, model, key, end user or request (API.md §4)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from threadgate.domain.models import ApiKey, DayCounts, UsageEvent

DAY_MS = 24 * 3600 * 1000


def month_start_ms(now_ms: int) -> int:
    now = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
    return int(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def day_of(ms: int) -> str:
    """The UTC day of an epoch-ms instant, as YYYY-MM-DD."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _day_start_ms(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp() * 1000)


def _totals() -> dict[str, int]:
    return {"cost_micros": 0, "input_tokens": 0, "output_tokens": 0, "request_count": 0}


def _add(t: dict[str, int], e: UsageEvent) -> None:
    t["cost_micros"] += e.cost_micros
    t["input_tokens"] += e.input_tokens
    t["output_tokens"] += e.output_tokens
    t["request_count"] += 1


def summarize(events: Iterable[UsageEvent], keys: dict[str, ApiKey]) -> dict[str, Any]:
    total = _totals()
    by_key: dict[str, dict[str, Any]] = {}
    by_model: dict[str, dict[str, Any]] = {}
    for e in events:
        _add(total, e)
        k = keys.get(e.key_id)
        row = by_key.setdefault(
            e.key_id,
            {"key_id": e.key_id, "key_name": k.name if k else None, "key_prefix": k.prefix if k else None, **_totals()},
        )
        _add(row, e)
        _add(by_model.setdefault(e.model, {"model": e.model, **_totals()}), e)
    return {
        "total_cost_micros": total["cost_micros"],
        "total_input_tokens": total["input_tokens"],
        "total_output_tokens": total["output_tokens"],
        "request_count": total["request_count"],
        "by_key": sorted(by_key.values(), key=lambda r: -r["cost_micros"]),
        "by_model": sorted(by_model.values(), key=lambda r: -r["cost_micros"]),
    }


def event_json(e: UsageEvent) -> dict[str, Any]:
    return dict(vars(e))


# group_by dimension -> (its wire fields, how to read them from an event and its key)
_DIMENSIONS: dict[str, Callable[[UsageEvent, ApiKey | None], dict[str, Any]]] = {
    "day": lambda e, k: {"day": day_of(e.created_at)},
    "model": lambda e, k: {"model": e.model},
    "key": lambda e, k: {"key_id": e.key_id, "key_name": k.name if k else None},
    # The end user of the key that made the call (keys minted per end user, API.md §1); calls of
    # keys bound to no end user are grouped under null.
    "end_user": lambda e, k: {"end_user_id": k.end_user_id if k else None},
    "request": lambda e, k: {"request_id": e.request_id, "thread_id": e.thread_id},
    # Which price the calls were billed at: the reported service tier and the input-size tier.
    "tier": lambda e, k: {"service_tier": e.service_tier, "price_tier": e.price_tier},
}
GROUP_BY = tuple(_DIMENSIONS)


def group(events: Iterable[UsageEvent], keys: dict[str, ApiKey], by: Iterable[str]) -> list[dict[str, Any]]:
    """Totals per distinct combination of the `by` dimensions: days oldest first, then the most
    costly first (ties in a stable order: by the group's fields)."""
    readers = [_DIMENSIONS[d] for d in GROUP_BY if d in set(by)]
    groups: dict[tuple, dict[str, Any]] = {}
    for e in events:
        k = keys.get(e.key_id)
        fields: dict[str, Any] = {}
        for read in readers:
            fields.update(read(e, k))
        row = groups.get(key := tuple(fields.values()))
        if row is None:
            row = groups[key] = {**fields, **_totals()}
        _add(row, e)
    return sorted(
        groups.values(),
        key=lambda r: (r.get("day", ""), -r["cost_micros"], tuple(str(v) for v in r.values())),
    )


def daily_requests(counts: Iterable[DayCounts]) -> list[dict[str, Any]]:
    return [
        {"day": c.day, "day_start_ms": _day_start_ms(c.day), "requests": c.requests, "errors": c.errors,
         "cap_refusals": c.cap_refusals}
        for c in counts
    ]
