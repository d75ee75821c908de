"""Prices, the reservation upper bound, and affordable `max_tokens` (DESIGN invariant 1).

Rounding (docs/api.md §4): prices are integer micro-dollars per million tokens, so a call's
upstream cost is Σ tokens × price / 1e6 rounded UP to a whole micro-dollar, and the charged cost
is that × markup rounded UP again. Reservations round up the same way: never under-reserve.

Tiers are evaluated per call: a service tier (what the upstream reports it used: OpenAI
`service_tier`, Anthropic `usage.service_tier`, batch) selects a price list, and within it an
input-size tier prices the WHOLE call once its prompt tokens (cached ones included) exceed the
tier's line. The reservation prices the dearest tier the request can reach; settlement prices
the tier that applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from threadgate import jsoncodec
from threadgate.domain.models import ModelInfo, PriceTier, Usage

MTOK = 1_000_000

# An image costs at most ~1,600 tokens after the provider downsizes it (Anthropic: ≤1.15 MP ≈
# 1,600 tokens; OpenAI high detail tops out below that for one tile set). URL images have tiny
# request bytes, so they are bounded by this instead.
IMAGE_TOKENS_MAX = 1_600
# PDFs: up to 100 pages, each billed as text plus a page image (~3,000 tokens per page).
DOCUMENT_TOKENS_MAX = 100 * 3_000
# Kept for callers that budget a thread's history (domain/turns.py): the largest framing a
# provider adds to a request with tools.
PROVIDER_PROMPT_ALLOWANCE_TOKENS = 1_024


@dataclass(frozen=True)
class Framing:
    """Tokens a provider adds around what we count (chat-template and role markers, block
    separators, the tool-use system prompt). Generous: the bound must stay an upper bound."""

    request: int
    message: int
    block: int
    tools: int  # once when the request has tools (Anthropic's tool prompt is ~350 tokens)
    tool: int  # per tool definition, beyond its JSON


# Text is bounded at ONE TOKEN PER UTF-8 BYTE: a byte-level BPE token (Claude 4 and 5, OpenAI
# o200k) is at least one byte, whatever the generation's merges; a denser tokenizer (Sonnet 5
# makes ~30% more tokens than Claude 4) only moves the count further under that line. What we do
# not count as bytes is JSON syntax around message text, which is not tokenized as such.
FAMILIES = {
    "claude-4": Framing(request=16, message=8, block=8, tools=1_024, tool=32),
    "claude-5": Framing(request=24, message=12, block=12, tools=1_024, tool=48),
    "openai": Framing(request=16, message=8, block=8, tools=512, tool=32),
}
LOCAL = "local"  # the offline model counts JSON bytes / 4 of its request: bound by its bytes

# Request fields that are not prompt text (never tokenized as input).
_NOT_PROMPT = frozenset(
    {
        "model", "max_tokens", "max_completion_tokens", "max_output_tokens", "stream", "stream_options",
        "temperature", "top_p", "top_k", "metadata", "service_tier", "user", "seed", "store", "n",
        "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty", "logit_bias",
        "parallel_tool_calls", "reasoning_effort", "verbosity", "prompt_cache_key", "safety_identifier",
        "stop", "stop_sequences", "thinking", "modalities", "prediction_disabled",
    }
)
# Block fields that are not text: the block kind, cache marks, thinking signatures.
_NOT_TEXT = frozenset({"type", "cache_control", "signature", "id", "tool_use_id", "is_error"})
_IMAGES = frozenset({"image", "image_url", "input_image"})
_DOCUMENTS = frozenset({"document", "file", "input_file"})

_ASCII = bytes(range(128))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _bytes(value: Any) -> int:
    """UTF-8 bytes of a string, or of the compact JSON of anything else (tool inputs and
    schemas are rendered into the prompt as JSON text)."""
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    try:
        raw = jsoncodec.dumps(value)
    except (TypeError, ValueError):
        raw = repr(value).encode("utf-8", "surrogatepass")
    # A provider may render JSON ASCII-escaped ("\u00e9", "\ud83d\ude00"): at most 3× the
    # UTF-8 bytes of each non-ASCII character, so count those bytes three times.
    return len(raw) + 2 * len(raw.translate(None, _ASCII))


def apply_markup(upstream_micros: int, markup: Fraction) -> int:
    """cost_micros = ceil(upstream_cost_micros × markup)."""
    scaled = upstream_micros * markup
    return _ceil_div(scaled.numerator, scaled.denominator)


# --- tiers ------------------------------------------------------------------------------------


def service_tier_name(model: ModelInfo, reported: str | None) -> str:
    """The price list for what the upstream reported: Anthropic's "standard" and OpenAI's
    "auto"/"default" are the default list; a tier the catalog does not price apart (e.g.
    OpenAI "scale", committed capacity billed outside the per-token price) uses it too."""
    if reported in (None, "standard", "auto", "default", "standard_only"):
        return "default"
    return reported if reported in model.price_tiers else "default"


def tier_for(model: ModelInfo, service_tier: str, prompt_tokens: int) -> PriceTier:
    """The input-size tier that prices a call with `prompt_tokens` input tokens."""
    tiers = model.price_tiers.get(service_tier) or model.price_tiers["default"]
    applied = tiers[0]
    for tier in tiers[1:]:
        if prompt_tokens > tier.above_input_tokens:
            applied = tier
    return applied


@dataclass(frozen=True)
class Priced:
    upstream_micros: int
    price_tier: str
    service_tier: str


def price_call(model: ModelInfo, usage: Usage) -> Priced:
    """Σ tokens × the applied tier's price of that token kind, in micro-dollars (ceiling)."""
    service = service_tier_name(model, usage.service_tier)
    tier = tier_for(model, service, usage.prompt_tokens)
    p = tier.prices
    one_hour = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
    total = (
        usage.input_tokens * p.input
        + usage.output_tokens * p.output
        + (usage.cache_creation_input_tokens - one_hour) * p.cache_write
        + one_hour * p.cache_write_1h
        + usage.cache_read_input_tokens * p.cache_read
    )
    return Priced(_ceil_div(total, MTOK), tier.name, service)


def upstream_cost(model: ModelInfo, usage: Usage) -> int:
    return price_call(model, usage).upstream_micros


# --- the input upper bound -------------------------------------------------------------------


class _Walk:
    """One pass over a request: the token bound, and whether it marks anything for caching."""

    def __init__(self, f: Framing):
        self.f = f
        self.cache_marked = False

    def block(self, block: Any) -> int:
        f = self.f
        if not isinstance(block, dict):
            return f.block + _bytes(block)
        kind = block.get("type")
        self.cache_marked = self.cache_marked or "cache_control" in block
        if kind in _IMAGES:
            return f.block + IMAGE_TOKENS_MAX
        if kind in _DOCUMENTS:
            return f.block + DOCUMENT_TOKENS_MAX
        total = f.block
        for key, value in block.items():
            if key in _NOT_TEXT:
                continue
            # tool_result content: text or nested blocks (images included)
            total += self.content(value) if key == "content" else _bytes(value)
        return total

    def content(self, content: Any) -> int:
        if isinstance(content, list):
            return sum(self.block(b) for b in content)
        return _bytes(content) if content is not None else 0

    def message(self, message: Any) -> int:
        if not isinstance(message, dict):
            return self.f.message + _bytes(message)
        total = self.f.message
        for key, value in message.items():
            if key != "role":
                total += self.content(value) if key == "content" else _bytes(value)
        return total

    def request(self, request: dict[str, Any]) -> int:
        f = self.f
        total = f.request
        for key, value in request.items():
            if key in _NOT_PROMPT or value is None:
                continue
            if key in ("messages", "input") and isinstance(value, list):  # Responses: `input` items
                total += sum(self.message(m) for m in value)
            elif key == "system":
                total += f.message + self.content(value)
            elif key == "tools" and isinstance(value, list):
                self.cache_marked = self.cache_marked or any(isinstance(t, dict) and "cache_control" in t for t in value)
                total += (f.tools if value else 0) + len(value) * f.tool + _bytes(value)
            else:
                self.cache_marked = self.cache_marked or key == "cache_control"
                total += _bytes(value)
        return total


def _walk(request: dict[str, Any], model: ModelInfo) -> tuple[int, bool]:
    if model.tokenizer == LOCAL:
        return _bytes(request), False
    walk = _Walk(FAMILIES.get(model.tokenizer, FAMILIES["claude-5"]))
    return walk.request(request), walk.cache_marked


def input_bound(request: dict[str, Any], model: ModelInfo) -> int:
    """An upper bound of the prompt tokens `request` can be billed for on `model`, in either
    request shape (Anthropic Messages or OpenAI Chat Completions): one token per UTF-8 byte of
    everything that is prompt text, JSON bytes of tool definitions and tool inputs, images and
    documents at their documented maximum, plus the provider's framing. A field this function
    does not know counts as its full JSON bytes, so new upstream fields stay bounded."""
    return _walk(request, model)[0]


# --- the reservation -------------------------------------------------------------------------


@dataclass(frozen=True)
class CallBound:
    """What one call can reach, as far as price goes."""

    input_tokens: int  # upper bound of prompt tokens
    service_tiers: tuple[str, ...] = ("default", "priority")  # the price lists it can be billed at
    cache_writes: bool = True  # the request can write to a prompt cache


def reachable_service_tiers(model: ModelInfo, request: dict[str, Any]) -> tuple[str, ...]:
    """An explicit tier is what the call asks for (it may be served at a cheaper one; never a
    dearer one); without one — or "auto" — the upstream picks the project's default, which an
    operator may have set to priority, so both are reachable."""
    asked = request.get("service_tier")
    if isinstance(asked, str) and asked not in ("auto",):
        return (service_tier_name(model, asked),)
    return tuple(t for t in ("default", "priority") if t in model.price_tiers)


def call_bound(model: ModelInfo, request: dict[str, Any]) -> CallBound:
    """The bound of a request as it goes upstream (either shape). Output is the caller's to
    bound: `max_tokens` passed to the reservation covers every answer (OpenAI `n`)."""
    tokens, cache_marked = _walk(request, model)
    return CallBound(
        input_tokens=tokens,
        service_tiers=reachable_service_tiers(model, request),
        # Anthropic writes a cache only where a request marks one; OpenAI caches by itself.
        cache_writes=cache_marked or model.provider == "openai",
    )


def _as_bound(bound: CallBound | int) -> CallBound:
    return bound if isinstance(bound, CallBound) else CallBound(input_tokens=bound)


def bound_tokens(bound: CallBound | int) -> int:
    return _as_bound(bound).input_tokens


def _dearest_input(tier: PriceTier, cache_writes: bool) -> int:
    p = tier.prices
    return max(p.input, p.cache_write, p.cache_write_1h) if cache_writes else p.input


def _dearest(model: ModelInfo, bound: CallBound, max_tokens: int) -> tuple[int, str, PriceTier]:
    """(cost × 1e6, service tier, input-size tier) of the dearest tier the call can reach: any
    tier whose line is below the input bound can apply, so a cap holds across a line."""
    best: tuple[int, str, PriceTier] | None = None
    for service in bound.service_tiers or ("default",):
        for tier in model.price_tiers.get(service) or model.price_tiers["default"]:
            if tier.above_input_tokens and bound.input_tokens <= tier.above_input_tokens:
                continue
            cost = bound.input_tokens * _dearest_input(tier, bound.cache_writes) + max_tokens * tier.prices.output
            if best is None or cost > best[0]:
                best = (cost, service, tier)
    assert best is not None  # every price list has a base tier
    return best


def reserved_tier(model: ModelInfo, bound: CallBound | int, max_tokens: int) -> tuple[str, PriceTier]:
    """The (service tier, input-size tier) a reservation is priced at."""
    _, service, tier = _dearest(model, _as_bound(bound), max_tokens)
    return service, tier


def estimate(model: ModelInfo, bound: CallBound | int, max_tokens: int, markup: Fraction) -> int:
    """Upper bound of one call's charged cost at the dearest tier it can reach: input at the
    dearest input kind it can be billed as, output at `max_tokens`."""
    return apply_markup(_ceil_div(_dearest(model, _as_bound(bound), max_tokens)[0], MTOK), markup)


def remaining(cap_micros: int | None, spent_micros: int, reserved_micros: int) -> int | None:
    return None if cap_micros is None else cap_micros - spent_micros - reserved_micros


def affordable_max_tokens(
    model: ModelInfo, bound: CallBound | int, requested: int, budget_micros: int | None, markup: Fraction
) -> int:
    """The largest max_tokens ≤ requested whose estimate fits the budget; 0 if not even one."""
    if budget_micros is None or estimate(model, bound, requested, markup) <= budget_micros:
        return requested
    lo, hi = 0, requested  # invariant: estimate(lo) fits (or lo == 0), estimate(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(model, bound, mid, markup) <= budget_micros:
            lo = mid
        else:
            hi = mid
    return lo if lo >= 1 and estimate(model, bound, lo, markup) <= budget_micros else 0


def context_overflow(model: ModelInfo, bound: CallBound | int, max_tokens: int) -> str | None:
    """Why a request cannot fit the model's context window, or None. Refused only when even the
    smallest count it can have (its bound shrunk by the densest tokenization, 1 token per 8
    bytes) plus max_tokens exceeds the window: a request that might fit goes upstream."""
    bound = _as_bound(bound)
    if max_tokens > model.max_output_tokens:
        return f"max_tokens: {max_tokens} exceeds {model.id}'s output limit of {model.max_output_tokens}"
    least = bound.input_tokens // 8 if model.tokenizer != LOCAL else bound.input_tokens // 4
    if least + max_tokens > model.context_window:
        return (
            f"the request does not fit {model.id}'s context window of {model.context_window} tokens "
            f"(at least {least} input tokens + max_tokens {max_tokens})"
        )
    return None
