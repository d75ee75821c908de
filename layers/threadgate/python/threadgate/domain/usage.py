"""Usage reports: exact sums of usage events in a window, by key and by model (API.md §4)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from threadgate.domain.models import ApiKey, UsageEvent


def month_start_ms(now_ms: int) -> int:
    now = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc)
    return int(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


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
