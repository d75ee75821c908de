"""Regenerate the model catalog from the maintained price data (`make catalog`).

    catalog/lineup.json  (which models we offer, output limits, parameter rules, Bedrock ids)
  + genai-prices         (prices, long-context tiers, service tiers, batch, context windows)
  → layers/threadgate/python/threadgate/catalog/models.json   (what the gateway reads)

The price library is read here, at build time, not by the gateway: importing it costs ~0.3-0.9 s
(a Lambda cold start) and it would fetch price updates over the network. The generated file is
committed, so a price change is a reviewable diff; tests/unit/test_catalog.py fails when the
installed genai-prices would generate something else (bump it, run `make catalog`, review).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LINEUP = ROOT / "catalog" / "lineup.json"
OUTPUT = ROOT / "layers" / "threadgate" / "python" / "threadgate" / "catalog" / "models.json"

# Our service-tier names → the genai-prices request context that selects their prices.
SERVICE_TIERS = {
    "default": {},
    "priority": {"service_tier": "priority"},
    "flex": {"service_tier": "flex"},
    "batch": {"processing": "batch"},
}
# Our price kinds → genai-prices price keys.
KINDS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}


def _usd(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _price_at(price: Any, above: int) -> Decimal | None:
    """The price that applies to a request with more than `above` input tokens (whole-request
    tiers: crossing a threshold prices every token of the request at that tier)."""
    if price is None:
        return None
    if not hasattr(price, "tiers"):
        return price
    applicable = price.base
    for tier in price.tiers:
        if above >= tier.start:
            applicable = tier.price
    return applicable


def _tiers(model_price: Any, family_is_claude: bool) -> list[dict[str, Any]]:
    raw = {ours: getattr(model_price, theirs) for ours, theirs in KINDS.items()}
    starts = sorted({t.start for p in raw.values() if hasattr(p, "tiers") for t in p.tiers})
    tiers = []
    for above in [0, *starts]:
        at = {kind: _price_at(p, above) for kind, p in raw.items()}
        if at["input"] is None or at["output"] is None:
            raise SystemExit(f"no input/output price in {model_price}")
        # Kinds the provider does not price apart: OpenAI bills cache writes as input; Anthropic's
        # 1-hour writes cost twice the base input; without a cached price, reads cost input.
        at["cache_read"] = at["cache_read"] if at["cache_read"] is not None else at["input"]
        at["cache_write"] = at["cache_write"] if at["cache_write"] is not None else at["input"]
        if at["cache_write_1h"] is None:
            at["cache_write_1h"] = 2 * at["input"] if family_is_claude else at["cache_write"]
        tier: dict[str, Any] = {"tier": "base" if above == 0 else f"input>{above // 1000}K"}
        if above:
            tier["above_input_tokens"] = above
        tier.update({kind: _usd(v) for kind, v in at.items()})
        tiers.append(tier)
    return tiers


def _has_variant(gp_model: Any, context: dict[str, str], when: datetime) -> bool:
    for variant in gp_model.price_variants or ():
        if variant.constraint is not None and not variant.constraint.active(when):
            continue
        if variant.when == context:
            return True
    return False


def build(lineup: dict[str, Any]) -> dict[str, Any]:
    import genai_prices
    from genai_prices import data_snapshot

    providers = {p.id: p for p in data_snapshot.get_snapshot().providers}
    when = datetime.fromisoformat(lineup["prices_as_of"]).replace(tzinfo=timezone.utc)
    models = []
    for entry in lineup["models"]:
        out = {k: v for k, v in entry.items() if k not in ("price_ref", "rules")}
        out["rules"] = lineup["rules"][entry["rules"]]
        out.setdefault("upstream_id", entry["id"])
        if "price_ref" in entry:
            provider_id, ref = entry["price_ref"].split("/", 1)
            gp = providers[provider_id].find_model(ref, all_providers=list(providers.values()))
            if gp is None:
                raise SystemExit(f"genai-prices {genai_prices.__version__} does not know {entry['price_ref']}")
            out.setdefault("context_window", gp.context_window)
            claude = entry["tokenizer"].startswith("claude")
            prices = {}
            for name, context in SERVICE_TIERS.items():
                if name == "default" or _has_variant(gp, context, when):
                    prices[name] = _tiers(gp.get_prices(when, context or None), claude)
            out["prices"] = prices
            out["price_source"] = f"genai-prices {genai_prices.__version__}: {provider_id}/{gp.id}"
        if not out.get("context_window"):
            raise SystemExit(f"{entry['id']}: no context window (set one in the lineup)")
        models.append(out)
    return {
        "_generated": "by scripts/build_catalog.py from catalog/lineup.json and the price data; "
        "do not edit: change the lineup, or put negotiated prices in THREADGATE_MODEL_OVERRIDES_FILE",
        "prices_as_of": lineup["prices_as_of"],
        "models": models,
    }


def render(catalog: dict[str, Any]) -> str:
    lines = ["{"]
    lines.append(f'  "_generated": {json.dumps(catalog["_generated"])},')
    lines.append(f'  "prices_as_of": {json.dumps(catalog["prices_as_of"])},')
    lines.append('  "models": [')
    body = [f"    {json.dumps(m, ensure_ascii=False)}" for m in catalog["models"]]
    lines.append(",\n".join(body))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render(build(json.loads(LINEUP.read_text())))
    if "--check" in sys.argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run `make catalog`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
