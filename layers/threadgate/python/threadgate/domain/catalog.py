"""The model catalog: ids, provider, limits and upstream prices (parsed from models.json)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from threadgate.domain.errors import NotFound
from threadgate.domain.models import ModelInfo

_PRICE_FIELDS = {
    "input_price": "input_usd_per_mtok",
    "output_price": "output_usd_per_mtok",
    "cache_read_price": "cache_read_usd_per_mtok",
    "cache_write_price": "cache_write_usd_per_mtok",
}


def usd_to_micros(usd: Any) -> int:
    """Exact USD → integer micro-dollars (prices are given as decimal strings, never floats)."""
    return int((Decimal(str(usd)) * 1_000_000).to_integral_value())


def micros_to_usd(micros: int | None) -> float | None:
    return None if micros is None else float(Decimal(micros) / 1_000_000)


class Catalog:
    def __init__(self, models: Iterable[ModelInfo]):
        self._models = {m.id: m for m in models}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Catalog":
        models = []
        for entry in raw["models"]:
            prices = {ours: usd_to_micros(entry[theirs]) for ours, theirs in _PRICE_FIELDS.items()}
            models.append(
                ModelInfo(
                    id=entry["id"],
                    provider=entry["provider"],
                    upstream_id=entry.get("upstream_id", entry["id"]),
                    context_window=int(entry["context_window"]),
                    max_output_tokens=int(entry["max_output_tokens"]),
                    cache_write_1h_price=usd_to_micros(entry.get("cache_write_1h_usd_per_mtok", 0)),
                    **prices,
                )
            )
        return cls(models)

    def get(self, model_id: str) -> ModelInfo:
        model = self._models.get(model_id)
        if model is None:
            raise NotFound(f"model {model_id!r} not found; GET /v1/models lists the available models", param="model")
        return model

    def __iter__(self):
        return iter(self._models.values())
