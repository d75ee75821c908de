"""The model catalog: ids, provider, limits, price tiers and parameter rules.

Read from `catalog/models.json` (generated from maintained price data by scripts/build_catalog.py)
and merged with an operator's override file: negotiated prices for a catalog model, or custom
models. Every model says where its prices came from (`price_source`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from threadgate.domain.errors import NotFound
from threadgate.domain.models import ModelInfo, ModelRules, Prices, PriceTier

_KINDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")
# Round-1 catalog files (THREADGATE_MODELS_FILE) priced one flat tier with these names.
_FLAT_FIELDS = {
    "input": "input_usd_per_mtok",
    "output": "output_usd_per_mtok",
    "cache_read": "cache_read_usd_per_mtok",
    "cache_write": "cache_write_usd_per_mtok",
    "cache_write_1h": "cache_write_1h_usd_per_mtok",
}


def usd_to_micros(usd: Any) -> int:
    """Exact USD → integer micro-dollars (prices are given as decimal strings, never floats)."""
    return int((Decimal(str(usd)) * 1_000_000).to_integral_value())


def micros_to_usd(micros: int | None) -> float | None:
    return None if micros is None else float(Decimal(micros) / 1_000_000)


def _prices(raw: dict[str, Any], where: str) -> Prices:
    missing = [k for k in ("input", "output") if raw.get(k) is None]
    if missing:
        raise ValueError(f"{where}: missing price {missing[0]!r}")
    usd = {k: raw.get(k) for k in _KINDS}
    usd["cache_read"] = usd["cache_read"] if usd["cache_read"] is not None else usd["input"]
    usd["cache_write"] = usd["cache_write"] if usd["cache_write"] is not None else usd["input"]
    if usd["cache_write_1h"] is None:
        usd["cache_write_1h"] = 2 * Decimal(str(usd["input"]))
    return Prices(**{k: usd_to_micros(v) for k, v in usd.items()})


def _tiers(raw: list[dict[str, Any]], where: str) -> tuple[PriceTier, ...]:
    tiers = sorted(
        (
            PriceTier(
                name=str(t.get("tier") or ("base" if not t.get("above_input_tokens") else f"input>{t['above_input_tokens']}")),
                above_input_tokens=int(t.get("above_input_tokens") or 0),
                prices=_prices(t, f"{where}[{i}]"),
            )
            for i, t in enumerate(raw)
        ),
        key=lambda t: t.above_input_tokens,
    )
    if not tiers or tiers[0].above_input_tokens != 0:
        raise ValueError(f"{where}: the first tier must be the base tier (no above_input_tokens)")
    return tuple(tiers)


def model_from_dict(entry: dict[str, Any]) -> ModelInfo:
    where = f"model {entry.get('id')!r}"
    raw_prices = entry.get("prices")
    if raw_prices is None:  # a round-1 flat entry
        raw_prices = {"default": [{k: entry.get(f) for k, f in _FLAT_FIELDS.items()}]}
    price_tiers = {name: _tiers(tiers, f"{where} prices.{name}") for name, tiers in raw_prices.items()}
    if "default" not in price_tiers:
        raise ValueError(f"{where}: prices need a 'default' service tier")
    rules = entry.get("rules") or {}
    return ModelInfo(
        id=entry["id"],
        provider=entry["provider"],
        upstream_id=entry.get("upstream_id", entry["id"]),
        context_window=int(entry["context_window"]),
        max_output_tokens=int(entry["max_output_tokens"]),
        price_tiers=price_tiers,
        tokenizer=entry.get("tokenizer", "claude-4"),
        rules=ModelRules(**{k: bool(v) for k, v in rules.items() if k in ModelRules.__dataclass_fields__}),
        price_source=entry.get("price_source", "catalog file"),
        legacy=bool(entry.get("legacy", False)),
        extra={k: entry[k] for k in ("foundation_model",) if k in entry},
    )


def merge_overrides(base: list[dict[str, Any]], overrides: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """An override of a catalog model replaces the fields it names (a service tier's prices
    replace that tier's list); an unknown id adds a custom model, which must be complete."""
    merged = {e["id"]: dict(e) for e in base}
    for o in overrides:
        entry = merged.setdefault(o["id"], {})
        prices = {**entry.get("prices", {}), **o.get("prices", {})}
        entry.update(o)
        if prices:
            entry["prices"] = prices
        entry["price_source"] = o.get("price_source", f"override: {source}")
    return list(merged.values())


class Catalog:
    def __init__(self, models: Iterable[ModelInfo]):
        self._models = {m.id: m for m in models}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "") -> "Catalog":
        entries = raw["models"]
        if overrides:
            entries = merge_overrides(entries, overrides.get("models", []), source)
        return cls(model_from_dict(e) for e in entries)

    def get(self, model_id: str) -> ModelInfo:
        model = self._models.get(model_id)
        if model is None:
            raise NotFound(f"model {model_id!r} not found; GET /v1/models lists the available models", param="model")
        return model

    def __iter__(self):
        return iter(self._models.values())
