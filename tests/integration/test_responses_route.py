"""POST /v1/responses: the OpenAI Responses API passed through whole to OpenAI-family models
(metered once, nothing persisted), over real HTTP with the official `openai` SDK against the
gateway and the fake OpenAI behind it."""

from __future__ import annotations

import json
from fractions import Fraction
from math import ceil

import httpx
import openai
import pytest

from threadgate.domain.models import Usage
from tests.fakes.fake_openai import FakeReply, FakeToolCall

SOL, NANO, CLAUDE = "gpt-6.1-sol", "gpt-5.4-nano", "claude-sonnet-4-6"
MARKUP = Fraction("1.07")
TOOL = {"type": "function", "name": "get_weather", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}}


@pytest.fixture
def gw(gateway_with_openai):
    return gateway_with_openai


def client(gw, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key["secret"], max_retries=0)


def events(gw, key) -> list[dict]:
    with gw.admin() as admin:
        return admin.get(f"/v1/keys/{key['id']}/usage").json()["events"]


def expected_cost(usd: tuple[str, str, str], usage: Usage) -> int:
    """tokens × the tier's USD prices, rounded up to a micro-dollar, × markup rounded up (README)."""
    usd_in, usd_out, usd_cached = (Fraction(p) for p in usd)
    upstream = ceil(usd_in * usage.input_tokens + usd_out * usage.output_tokens + usd_cached * usage.cache_read_input_tokens)
    return ceil(upstream * MARKUP)


def post(gw, key, body, **headers) -> httpx.Response:
    with gw.client() as c:
        return c.post("/v1/responses", json=body, headers={"authorization": f"Bearer {key['secret']}", **headers})


def test_a_response_passes_through_whole_and_is_billed_once_from_its_usage(gw):
    gw.openai_fake.enqueue(FakeReply(text="Hi there.", prompt_tokens=3_000, cached_tokens=1_000, reasoning_tokens=40))
    key = gw.mint()
    body = {"model": SOL, "input": [{"role": "user", "content": "hello"}], "instructions": "Be brief.",
            "reasoning": {"effort": "high"}, "text": {"verbosity": "low"}, "include": ["reasoning.encrypted_content"],
            "store": False, "metadata": {"app": "x"}, "prompt_cache_key": "k1", "truncation": "auto"}
    raw = client(gw, key).responses.with_raw_response.create(**body)
    response = raw.parse()
    assert response.output_text == "Hi there." and response.model == SOL
    assert response.usage.output_tokens_details.reasoning_tokens == 40
    (sent,) = gw.openai_fake.requests
    assert sent.path == "/v1/responses" and sent.body == body  # every field as it came; no limit invented
    (event,) = events(gw, key)
    usage = Usage(input_tokens=2_000, output_tokens=2 + 40, cache_read_input_tokens=1_000)
    assert event["cost_micros"] == expected_cost(("2", "10", "0.1"), usage) == int(raw.headers["x-qlaud-cost-micros"])
    assert (event["input_tokens"], event["output_tokens"], event["cache_read_input_tokens"]) == (2_000, 42, 1_000)


def test_a_streamed_response_is_relayed_event_by_event_and_billed_once(gw):
    gw.openai_fake.enqueue(FakeReply(text="one two three", prompt_tokens=500, reasoning_tokens=5))
    key = gw.mint()
    with client(gw, key).responses.stream(model=SOL, input="count", tools=[TOOL]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert final.output_text == "one two three" and final.model == SOL
    assert final.usage.output_tokens == 8 and final.service_tier == "default"
    (sent,) = gw.openai_fake.requests
    assert sent.body["stream"] is True and sent.body["tools"] == [TOOL]
    (event,) = events(gw, key)
    assert event["cost_micros"] == expected_cost(("2", "10", "0.1"), Usage(input_tokens=500, output_tokens=8))


def test_function_calls_and_their_outputs_go_both_ways(gw):
    gw.openai_fake.enqueue(FakeReply(tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}, id="call_1")]),
                           FakeReply(text="It is 4 degrees."))
    key = gw.mint()
    sdk = client(gw, key)
    first = sdk.responses.create(model=SOL, input="weather in Oslo?", tools=[TOOL])
    (call,) = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Oslo"}
    items = [{"role": "user", "content": "weather in Oslo?"}, call.model_dump(exclude_none=True),
             {"type": "function_call_output", "call_id": call.call_id, "output": "4 degrees"}]
    second = sdk.responses.create(model=SOL, input=items, tools=[TOOL])
    assert second.output_text == "It is 4 degrees."
    assert len(events(gw, key)) == 2


def test_a_claude_model_is_refused_by_name_in_openais_error_shape(gw):
    key = gw.mint()
    with pytest.raises(openai.BadRequestError) as err:
        client(gw, key).responses.create(model=CLAUDE, input="hi")
    assert err.value.body["param"] == "model" and "OpenAI models only" in err.value.body["message"]
    assert gw.openai_fake.requests == [] and gw.fake.requests == [] and events(gw, key) == []


@pytest.mark.parametrize("field, body", [
    ("previous_response_id", {"previous_response_id": "resp_123"}),
    ("conversation", {"conversation": "conv_123"}),
    ("prompt", {"prompt": {"id": "pmpt_1"}}),
    ("background", {"background": True}),
    ("background_options", {"background_options": {"completion_window": "2h"}}),
    ("input[1].type", {"input": [{"role": "user", "content": "hi"}, {"type": "item_reference", "id": "msg_1"}]}),
    ("tools[0].type", {"tools": [{"type": "web_search"}]}),
    ("service_tier", {"service_tier": "scale"}),
    ("max_output_tokens", {"max_output_tokens": 0}),
    ("input", {"input": 5}),
])
def test_what_cannot_be_metered_is_refused_by_name_before_any_call(gw, field, body):
    key = gw.mint()
    r = post(gw, key, {"model": SOL, "input": "hi", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and r.json()["error"]["type"] == "invalid_request_error"
    assert gw.openai_fake.requests == [] and events(gw, key) == []


def test_unauthenticated_and_unknown_models_get_openai_errors(gw):
    with gw.client() as c:
        r = c.post("/v1/responses", json={"model": SOL, "input": "hi"})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = post(gw, gw.mint(), {"model": "gpt-nope", "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_a_key_that_cannot_pay_for_the_models_limit_gets_a_lower_max_output_tokens(gw):
    key = gw.mint(max_spend_usd=0.02)
    r = post(gw, key, {"model": SOL, "input": "hi"})
    assert r.status_code == 200, r.text
    sent = gw.openai_fake.requests[-1].body["max_output_tokens"]
    assert 16 <= sent < 128_000  # what $0.02 covers at the dearest reachable tier (priority: $20/M out)


def test_a_key_that_cannot_pay_for_the_smallest_answer_gets_402_before_any_call(gw):
    key = gw.mint(max_spend_usd=0.0003)  # covers "hi" and ~9 output tokens; the API takes 16 at least
    r = post(gw, key, {"model": SOL, "input": "hi"})
    assert r.status_code == 402 and r.json()["error"]["type"] == "key_cap_exceeded"
    assert gw.openai_fake.requests == [] and events(gw, key) == []
    r = post(gw, key, {"model": SOL, "input": "hi", "max_output_tokens": 8})  # the caller's own limit: as it came
    assert r.status_code == 400 and "max_output_tokens" in r.json()["error"]["message"]
    assert gw.openai_fake.requests[-1].body["max_output_tokens"] == 8 and events(gw, key) == []


def test_a_stream_broken_midway_is_billed_once_for_what_was_seen(gw):
    gw.openai_fake.enqueue(FakeReply(text="a b c d e f g h"))
    gw.openai_fake.break_stream_after(6)
    key = gw.mint()
    seen = list(client(gw, key).responses.create(model=SOL, input="hi", stream=True))
    assert seen[-1].type == "error" and "response.completed" not in {e.type for e in seen}  # the API's own error event
    assert seen[-1].sequence_number == seen[-2].sequence_number + 1
    (event,) = events(gw, key)
    deltas = sum(e.type == "response.output_text.delta" for e in seen)
    assert deltas == 2 and event["output_tokens"] == deltas and event["status"] == "incomplete"


@pytest.mark.parametrize("stream", [True, False])
def test_a_response_that_failed_is_recorded_as_incomplete_and_billed_once_for_its_usage(gw, stream):
    """The caller saw the upstream give up (`response.failed`): its usage event says so, as a chat
    or messages call that failed after it began does, and the tokens the upstream reports are billed."""
    gw.openai_fake.enqueue(FakeReply(text="a b c", prompt_tokens=200, completion_tokens=3, failed=True))
    key = gw.mint()
    if stream:
        seen = list(client(gw, key).responses.create(model=SOL, input="hi", stream=True))
        assert seen[-1].type == "response.failed" and seen[-1].response.error.code == "server_error"
    else:
        assert client(gw, key).responses.create(model=SOL, input="hi").status == "failed"
    (event,) = events(gw, key)
    assert event["status"] == "incomplete"
    assert (event["input_tokens"], event["output_tokens"]) == (200, 3)
    assert event["cost_micros"] == expected_cost(("2", "10", "0.1"), Usage(input_tokens=200, output_tokens=3))


# --- service tiers (priced per model by the catalog) -----------------------------------------------


@pytest.mark.parametrize("route", ["/v1/responses", "/v1/chat/completions"])
@pytest.mark.parametrize("model, tier, served", [
    (SOL, "priority", ("4", "20", "0.2")),
    (SOL, "flex", ("1", "5", "0.05")),
    (NANO, "flex", ("0.1", "0.625", "0.01")),
])
def test_a_priced_service_tier_is_served_and_billed_at_its_prices(gw, route, model, tier, served):
    gw.openai_fake.enqueue(FakeReply(text="ok", prompt_tokens=1_000, completion_tokens=100))
    key = gw.mint()
    body = {"model": model, "service_tier": tier}
    body.update({"input": "hi"} if route == "/v1/responses" else {"messages": [{"role": "user", "content": "hi"}]})
    with gw.client() as c:
        r = c.post(route, json=body, headers={"authorization": f"Bearer {key['secret']}"})
    assert r.status_code == 200, r.text
    assert gw.openai_fake.requests[-1].body["service_tier"] == tier
    (event,) = events(gw, key)
    assert event["service_tier"] == tier
    assert event["cost_micros"] == expected_cost(served, Usage(input_tokens=1_000, output_tokens=100))


@pytest.mark.parametrize("route", ["/v1/responses", "/v1/chat/completions"])
def test_a_service_tier_the_catalog_does_not_price_for_the_model_is_refused_by_name(gw, route):
    key = gw.mint()
    body = {"model": NANO, "service_tier": "priority"}  # gpt-5.4-nano has no priority prices
    body.update({"input": "hi"} if route == "/v1/responses" else {"messages": [{"role": "user", "content": "hi"}]})
    with gw.client() as c:
        r = c.post(route, json=body, headers={"authorization": f"Bearer {key['secret']}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "service_tier"
    assert "gpt-5.4-nano has no priority prices" in r.json()["error"]["message"]
    assert gw.openai_fake.requests == [] and events(gw, key) == []


def test_every_responses_sdk_request_field_has_a_rule():
    """A field the next `openai` SDK adds fails here until field_map.RESPONSES says what happens to it."""
    from openai.types.responses.response_create_params import ResponseCreateParamsStreaming as Params

    from threadgate.providers import field_map

    assert set(Params.__required_keys__ | Params.__optional_keys__) - set(field_map.RESPONSES.rules) == set()
