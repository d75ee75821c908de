"""Prices, the reservation upper bound, and affordable `max_tokens` (DESIGN invariant 1).

Prices are integer micro-dollars per million tokens, so tokens × price / 1e6 is micro-dollars;
every rounding is a ceiling, in our favour of never under-reserving.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterable

from threadgate.domain.models import ModelInfo, Usage

MTOK = 1_000_000

# What a provider adds to the prompt beyond our request body (e.g. Anthropic's tool-use system
# prompt is a few hundred tokens); generous so the bound stays an upper bound.
PROVIDER_PROMPT_ALLOWANCE_TOKENS = 1_024
# An image costs at most ~1,600 tokens after the provider downsizes it (Anthropic: ≤1.15 MP ≈
# 1,600 tokens; OpenAI high detail tops out below that for one tile set). URL images have tiny
# request bytes, so they are bounded by this instead.
IMAGE_TOKENS_MAX = 1_600
# PDFs: up to 100 pages, each billed as text plus a page image (~3,000 tokens per page).
DOCUMENT_TOKENS_MAX = 100 * 3_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def apply_markup(upstream_micros: int, markup: Fraction) -> int:
    """cost_micros = ceil(upstream_cost_micros × markup)."""
    scaled = upstream_micros * markup
    return _ceil_div(scaled.numerator, scaled.denominator)


def upstream_cost(model: ModelInfo, usage: Usage) -> int:
    """Σ tokens × catalog price of that token kind, in micro-dollars (ceiling)."""
    one_hour = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
    total = (
        usage.input_tokens * model.input_price
        + usage.output_tokens * model.output_price
        + (usage.cache_creation_input_tokens - one_hour) * model.cache_write_price
        + one_hour * model.cache_write_1h
        + usage.cache_read_input_tokens * model.cache_read_price
    )
    return _ceil_div(total, MTOK)


def _media_blocks(messages: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """Images and documents among the content blocks, including those inside tool results
    (the only places the Messages API accepts them)."""
    images = documents = 0
    for message in messages:
        blocks = message.get("content")
        if not isinstance(blocks, list):
            continue
        for block in blocks:
            inner = block.get("content") if block.get("type") == "tool_result" else None
            for b in [block, *inner] if isinstance(inner, list) else (block,):
                kind = b.get("type") if isinstance(b, dict) else None
                images += kind in ("image", "image_url")
                documents += kind == "document"
    return images, documents


def input_token_bound(request_body: bytes, messages: Iterable[dict[str, Any]]) -> int:
    """Upper bound of input tokens: byte length of the serialized upstream body (a byte-level BPE
    token is at least one byte, and JSON framing outweighs per-message framing tokens), plus the
    provider's allowance, plus images and documents at their documented maximum."""
    images, documents = _media_blocks(messages)
    return (
        len(request_body)
        + PROVIDER_PROMPT_ALLOWANCE_TOKENS
        + images * IMAGE_TOKENS_MAX
        + documents * DOCUMENT_TOKENS_MAX
    )


def estimate(model: ModelInfo, input_bound: int, max_tokens: int, markup: Fraction) -> int:
    """Upper bound of one call's charged cost. Input is priced at the dearest input kind (1-hour
    cache writes cost twice plain input), output at `max_tokens`."""
    input_price = max(model.input_price, model.cache_write_price, model.cache_write_1h)
    upstream = _ceil_div(input_bound * input_price + max_tokens * model.output_price, MTOK)
    return apply_markup(upstream, markup)


def remaining(cap_micros: int | None, spent_micros: int, reserved_micros: int) -> int | None:
    return None if cap_micros is None else cap_micros - spent_micros - reserved_micros


def affordable_max_tokens(
    model: ModelInfo, input_bound: int, requested: int, budget_micros: int | None, markup: Fraction
) -> int:
    """The largest max_tokens ≤ requested whose estimate fits the budget; 0 if not even one."""
    if budget_micros is None or estimate(model, input_bound, requested, markup) <= budget_micros:
        return requested
    lo, hi = 0, requested  # invariant: estimate(lo) fits (or lo == 0), estimate(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(model, input_bound, mid, markup) <= budget_micros:
            lo = mid
        else:
            hi = mid
    return lo if lo >= 1 and estimate(model, input_bound, lo, markup) <= budget_micros else 0
