"""threadgate.domain.billing: the reservation is an upper bound of what a call can cost, the
affordable max_tokens is the largest that fits, and money is exact integer micro-dollars."""

from __future__ import annotations

import json
from fractions import Fraction
from math import ceil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadgate.domain import billing
from threadgate.domain.models import ModelInfo, Prices, PriceTier, Usage
from threadgate.runtime import CATALOG_FILE

MARKUP = Fraction("1.07")


def catalog_models() -> list[ModelInfo]:
    from threadgate.domain.catalog import Catalog

    return list(Catalog.from_dict(json.loads(CATALOG_FILE.read_text())))


MODELS = catalog_models()


def _odd_prices(scale: int) -> Prices:
    return Prices(input=3_333_333 * scale, output=15_000_001 * scale, cache_read=333_333 * scale,
                  cache_write=4_166_667 * scale, cache_write_1h=6_666_667 * scale)


# Odd prices too (not only round catalog numbers), with an input-size line and a priority tier.
ODD = ModelInfo("odd", "anthropic", "odd", 1_000_000, 64_000, price_tiers={
    "default": (PriceTier("base", 0, _odd_prices(1)), PriceTier("input>200K", 200_000, _odd_prices(2))),
    "priority": (PriceTier("base", 0, _odd_prices(3)),),
})
ALL_MODELS = MODELS + [ODD]
markups = st.sampled_from([Fraction(1), MARKUP, Fraction("1.5"), Fraction("1.0001"), Fraction(7, 3)])


def applied_prices(model: ModelInfo, usage: Usage) -> Prices:
    """The tier that prices this usage, found independently of billing.tier_for."""
    service = usage.service_tier if usage.service_tier in model.price_tiers else "default"
    prompt = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    return [t for t in model.price_tiers[service] if t.above_input_tokens == 0 or prompt > t.above_input_tokens][-1].prices


def exact_cost(model: ModelInfo, usage: Usage, markup: Fraction) -> Fraction:
    """What the call costs in exact rational micro-dollars, before any rounding."""
    p = applied_prices(model, usage)
    one_hour = usage.cache_creation_1h_input_tokens  # billed at the 1-hour write price
    upstream = (usage.input_tokens * p.input + usage.output_tokens * p.output
                + (usage.cache_creation_input_tokens - one_hour) * p.cache_write
                + one_hour * p.cache_write_1h
                + usage.cache_read_input_tokens * p.cache_read)
    return Fraction(upstream, billing.MTOK) * markup


def charged(model: ModelInfo, usage: Usage, markup: Fraction) -> int:
    return billing.apply_markup(billing.upstream_cost(model, usage), markup)


@st.composite
def call_within_bounds(draw):
    """A model, an input bound, max_tokens, and a usage the upstream may report for them: the
    input (split any way between plain, cache writes and cache reads) within the bound and the
    output within max_tokens."""
    model = draw(st.sampled_from(ALL_MODELS))
    bound = draw(st.integers(1, 2_000_000))
    max_tokens = draw(st.integers(1, 200_000))
    total_in = draw(st.integers(0, bound))
    writes = draw(st.integers(0, total_in))
    reads = draw(st.integers(0, total_in - writes))
    # A bare bound reaches the default and priority service tiers (what "auto" may give).
    service = draw(st.sampled_from([None, "standard", "default", "priority"]))
    usage = Usage(total_in - writes - reads, draw(st.integers(0, max_tokens)), writes, reads,
                  draw(st.integers(0, writes)), service_tier=service)
    return model, bound, max_tokens, usage


@settings(max_examples=400, deadline=None)
@given(call_within_bounds(), markups)
def test_estimate_is_an_upper_bound_of_the_charged_cost(call, markup):
    model, bound, max_tokens, usage = call
    estimate = billing.estimate(model, bound, max_tokens, markup)
    assert type(estimate) is int
    assert estimate >= charged(model, usage, markup)


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.id)
def test_estimate_is_tight_for_the_worst_case(model):
    """All input as 1-hour cache writes (the dearest input) and all output used: the estimate is
    that exact cost, rounded up once for the upstream and once for the markup — not a loose
    multiple of it."""
    worst = max(
        charged(model, Usage(0, 4_000, 100_000, 0, cache_creation_1h_input_tokens=100_000, service_tier=s), MARKUP)
        for s in ("default", "priority")
    )
    usage = Usage(0, 4_000, 100_000, 0, cache_creation_1h_input_tokens=100_000,
                  service_tier="priority" if "priority" in model.price_tiers else None)
    assert billing.estimate(model, 100_000, 4_000, MARKUP) == worst
    assert worst == ceil(Fraction(ceil(exact_cost(model, usage, Fraction(1))), 1) * MARKUP)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_MODELS), st.integers(0, 500_000), st.integers(1, 128_000),
       st.one_of(st.none(), st.integers(0, 5_000_000)), markups)
def test_affordable_max_tokens_is_the_largest_that_fits(model, bound, requested, budget, markup):
    got = billing.affordable_max_tokens(model, bound, requested, budget, markup)
    assert type(got) is int and 0 <= got <= requested

    def fits(n: int) -> bool:
        return budget is None or billing.estimate(model, bound, n, markup) <= budget

    if got == 0:
        assert not fits(1)  # not even one output token is affordable
    else:
        assert fits(got)
        assert got == requested or not fits(got + 1)  # its neighbour above does not fit


def test_affordable_max_tokens_at_the_exact_budget_edge():
    model = next(m for m in MODELS if m.id == "claude-haiku-4-5")
    bound, requested = 1_000, 10_000
    for n in (1, 2, 777, 9_999, 10_000):
        budget = billing.estimate(model, bound, n, MARKUP)
        assert billing.affordable_max_tokens(model, bound, requested, budget, MARKUP) >= n
        below = billing.affordable_max_tokens(model, bound, requested, budget - 1, MARKUP)
        assert below < n
        assert billing.estimate(model, bound, below, MARKUP) <= budget - 1 or below == 0
    assert billing.affordable_max_tokens(model, bound, requested, None, MARKUP) == requested
    assert billing.affordable_max_tokens(model, bound, requested, 0, MARKUP) == 0
    assert billing.affordable_max_tokens(model, bound, requested, -5, MARKUP) == 0


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 10**15), markups)
def test_apply_markup_is_the_exact_integer_ceiling(upstream, markup):
    cost = billing.apply_markup(upstream, markup)
    assert type(cost) is int
    exact = upstream * markup
    assert cost - 1 < exact <= cost


@pytest.mark.parametrize("upstream,expected", [
    (0, 0), (1, 2), (100, 107), (101, 109), (1_000_000, 1_070_000), (14, 15), (15, 17),
    # 10**15 micros = $1e9: a float would already be off by one here.
    (10**15 + 1, 1_070_000_000_000_002), (999_999_999_999_999, 1_069_999_999_999_999),
])
def test_apply_markup_known_values(upstream, expected):
    assert billing.apply_markup(upstream, MARKUP) == expected


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_MODELS), st.integers(0, 10**7), st.integers(0, 10**6), st.integers(0, 10**7),
       st.integers(0, 10**7))
def test_upstream_cost_is_the_integer_ceiling_of_tokens_times_prices(model, i, o, w, r):
    usage = Usage(i, o, w, r)
    cost = billing.upstream_cost(model, usage)
    assert type(cost) is int
    exact = exact_cost(model, usage, Fraction(1))
    assert cost - 1 < exact <= cost


def test_remaining():
    assert billing.remaining(None, 10, 5) is None
    assert billing.remaining(100, 30, 20) == 50
    assert billing.remaining(10, 30, 0) == -20  # over cap after a PATCH: negative, never unlimited


def test_one_hour_cache_writes_cost_twice_the_input_price():
    model = next(m for m in MODELS if m.id == "claude-sonnet-4-6")
    five_min = billing.upstream_cost(model, Usage(0, 0, 1_000_000, 0))
    one_hour = billing.upstream_cost(model, Usage(0, 0, 1_000_000, 0, cache_creation_1h_input_tokens=1_000_000))
    assert (five_min, one_hour) == (3_750_000, 6_000_000)  # $3.75 and $6 per Mtok
    usage = Usage.from_anthropic({"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 300,
                                  "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}})
    assert (usage.cache_creation_input_tokens, usage.cache_creation_1h_input_tokens) == (300, 200)
