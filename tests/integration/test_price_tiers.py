"""Billing what the provider bills (issue 14), end to end over HTTP against fake upstreams:
whole-request input-size tiers, the service tier the upstream reports, the reservation at the
dearest reachable tier (402 before any upstream call), and the smallest call a nearly spent key
can still make (issue 11 item 12)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from math import ceil

import pytest

from threadgate.domain import billing
from threadgate.domain.models import Usage
from tests.fakes.fake_openai import FakeReply, running_fake_openai

MARKUP = Fraction("1.07")
SOL = "gpt-6.1-sol"


@pytest.fixture(scope="module")
def fake_openai():
    with running_fake_openai() as fake:
        yield fake


@pytest.fixture
def gw(gateway_factory, fake_openai):
    fake_openai.reset()
    return gateway_factory(openai_api_key=fake_openai.api_key, openai_base_url=fake_openai.v1_url)


def _turn(c, model: str, content: str, max_tokens: int = 10, **extra):
    t = c.post("/v1/threads", json={}).json()
    return c.post(f"/v1/threads/{t['id']}/messages", json={"model": model, "max_tokens": max_tokens,
                                                            "content": content, **extra})


def _events(gw, key_id: str) -> list[dict]:
    with gw.admin() as admin:
        return admin.get(f"/v1/keys/{key_id}/usage").json()["events"]


def _expected_cost(usd_in: str, usd_out: str, usd_cached: str, usage: Usage) -> int:
    """Event cost by hand: tokens × the tier's USD price, rounded up to a micro-dollar, × markup
    rounded up (README, Billing)."""
    upstream = ceil(Fraction(usd_in) * usage.input_tokens + Fraction(usd_out) * usage.output_tokens
                    + Fraction(usd_cached) * usage.cache_read_input_tokens)
    return ceil(upstream * MARKUP)


@pytest.mark.parametrize("prompt_tokens,tier,usd", [
    (272_000, "base", ("2", "10", "0.1")),        # on the line: still the base price
    (272_001, "input>272K", ("4", "15", "0.2")),  # one token above: the whole request at 4 / 15
])
def test_request_just_below_and_above_272k_is_billed_at_its_tier(gw, fake_openai, prompt_tokens, tier, usd):
    fake_openai.enqueue(FakeReply(text="done", prompt_tokens=prompt_tokens, completion_tokens=1_000,
                                  cached_tokens=2_000))
    key = gw.mint()
    with gw.client(key["secret"]) as c:
        r = _turn(c, SOL, "summarize the attached corpus")
    assert r.status_code == 200, r.text
    (event,) = _events(gw, key["id"])
    assert (event["price_tier"], event["service_tier"]) == (tier, "default")
    usage = Usage(prompt_tokens - 2_000, 1_000, 0, 2_000)
    assert event["cost_micros"] == _expected_cost(*usd, usage) == int(r.headers["x-qlaud-cost-micros"])
    assert event["upstream_cost_micros"] == ceil(Fraction(usd[0]) * (prompt_tokens - 2_000)
                                                 + Fraction(usd[1]) * 1_000 + Fraction(usd[2]) * 2_000)
    with gw.admin() as admin:
        groups = admin.get("/v1/usage", params={"group_by": "model,tier"}).json()["groups"]
    assert {"model": SOL, "service_tier": "default", "price_tier": tier,
            "cost_micros": event["cost_micros"], "request_count": 1} in [
        {k: row[k] for k in ("model", "service_tier", "price_tier", "cost_micros", "request_count")} for row in groups]


@pytest.mark.parametrize("reported,usd", [
    ("priority", ("4", "20", "0.2")),   # ×2
    ("flex", ("1", "5", "0.05")),       # ×0.5
    ("default", ("2", "10", "0.1")),
    ("scale", ("2", "10", "0.1")),      # a tier the catalog does not price apart: the default list
])
def test_the_service_tier_the_upstream_reports_decides_the_price(gw, fake_openai, reported, usd):
    fake_openai.enqueue(FakeReply(text="ok", prompt_tokens=5_000, completion_tokens=300, service_tier=reported))
    key = gw.mint()
    with gw.client(key["secret"]) as c:
        r = _turn(c, SOL, "hello")
    assert r.status_code == 200, r.text
    (event,) = _events(gw, key["id"])
    assert event["service_tier"] == (reported if reported != "scale" else "default")
    assert event["cost_micros"] == _expected_cost(*usd, Usage(5_000, 300))


@pytest.mark.parametrize("stream", [False, True])
def test_same_family_passthrough_bills_the_reported_service_tier(gw, fake_openai, stream):
    fake_openai.enqueue(FakeReply(text="ok", prompt_tokens=5_000, completion_tokens=300, service_tier="priority"))
    key = gw.mint()
    with gw.client(key["secret"]) as c:
        r = c.post("/v1/chat/completions", json={"model": SOL, "max_completion_tokens": 400, "stream": stream,
                                                 "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    (event,) = _events(gw, key["id"])
    assert (event["service_tier"], event["price_tier"]) == ("priority", "base")
    assert event["cost_micros"] == _expected_cost("4", "20", "0.2", Usage(5_000, 300))


def test_a_cap_that_covers_the_base_price_but_not_the_tier_price_gets_402_before_the_call(gw, fake_openai):
    """~300K input tokens can cross the 272K line: the reservation prices the tier, so a key
    that could pay the base price is refused before anything reaches the upstream."""
    model = gw.runtime.catalog.get(SOL)
    text = "data " * 60_000  # 300,000 bytes: an input bound above the line
    bound = billing.CallBound(input_tokens=len(text), service_tiers=("default", "priority"))
    base_only = dataclasses.replace(model, price_tiers={k: v[:1] for k, v in model.price_tiers.items()})
    covers_base = billing.estimate(base_only, bound, 10, MARKUP) * 5 // 4  # the base price, and some
    assert covers_base < billing.estimate(model, bound, 1, MARKUP)  # but not the tier at any max_tokens
    key = gw.mint(max_spend_usd=covers_base / 1_000_000)
    sent = len(fake_openai.requests)
    with gw.client(key["secret"]) as c:
        r = _turn(c, SOL, text)
        assert r.status_code == 402, r.text
        message = r.json()["error"]["message"]
        assert "input>272K" in message and "micro-dollars" in message
        assert c.get("/v1/key").json()["spent_micros"] == 0
    assert len(fake_openai.requests) == sent  # nothing reached the upstream
    assert _events(gw, key["id"]) == []


def test_a_key_with_two_tenths_of_a_cent_left_can_make_a_small_call(gw):
    """Issue 11 item 12: "hi" with max_tokens 1 costs ~10 µ$; the reservation must be close to
    that, not ~2,400 µ$."""
    key = gw.mint(max_spend_usd=0.002)
    with gw.client(key["secret"]) as c:
        r = _turn(c, "claude-haiku-4-5", "hi", max_tokens=1)
        assert r.status_code == 200, r.text
        spent = c.get("/v1/key").json()["spent_micros"]
    assert 0 < spent < 100


def test_the_402_says_what_the_call_needed(gw):
    key = gw.mint(max_spend_usd=0.000005)
    with gw.client(key["secret"]) as c:
        r = _turn(c, "claude-haiku-4-5", "hi", max_tokens=1)
    assert r.status_code == 402
    message = r.json()["error"]["message"]
    assert "(5 micro-dollars)" in message and "needs" in message
    needed = int(message.split("needs ")[1].split(" ")[0])
    assert 5 < needed < 100
