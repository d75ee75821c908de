"""AnthropicProvider against the fake Anthropic upstream over real HTTP: the wire requests it
sends, its retry policy (only before the first byte), and how upstream failures surface."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import httpx
import pytest

from tests.fakes.fake_anthropic import FAKE_API_KEY, FakeReply, FakeToolUse, running_fake_anthropic
from threadgate.domain.errors import (
    InvalidRequest,
    RateLimited,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from threadgate.providers import UpstreamStreamBroken
from threadgate.providers.anthropic.client import AnthropicProvider
from threadgate.providers.anthropic.stream_accumulator import accumulate

pytestmark = pytest.mark.anyio

REQUEST = {
    "model": "claude-fake-1",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hello gateway"}],
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def served_fake():
    with running_fake_anthropic() as fake:
        yield fake


@pytest.fixture
def fake(served_fake):
    served_fake.reset()
    return served_fake


@pytest.fixture
async def provider(fake):
    # Tiny backoff keeps retry tests fast; the policy (which failures retry) is what is tested.
    provider = AnthropicProvider(
        fake.base_url,
        FAKE_API_KEY,
        timeout_s=5,
        connect_timeout_s=2,
        attempts=3,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )
    yield provider
    await provider.aclose()


async def collect(provider, request=REQUEST):
    return [event async for event in provider.stream(request)]


async def test_create_returns_the_upstream_message_and_sends_anthropic_headers(provider, fake):
    message = await provider.create({**REQUEST, "stream": False})
    assert message["content"] == [{"type": "text", "text": "Fake reply to: hello gateway"}]
    assert message["usage"]["output_tokens"] == 5
    sent = fake.requests[0]
    assert sent.headers["x-api-key"] == FAKE_API_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == REQUEST  # "stream" is not sent to a non-streaming call
    assert sent.path == "/v1/messages"


async def test_base_url_with_trailing_slash_is_respected(fake):
    provider = AnthropicProvider(fake.base_url + "/", FAKE_API_KEY, attempts=1)
    try:
        await provider.create(REQUEST)
    finally:
        await provider.aclose()
    assert [r.path for r in fake.requests] == ["/v1/messages"]


async def test_stream_yields_anthropic_events_without_pings(provider, fake):
    events = await collect(provider)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "ping" not in kinds
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Fake reply to: hello gateway"
    assert fake.requests[0].body["stream"] is True
    assert accumulate(events) == await provider.create(REQUEST) | {"id": events[0]["message"]["id"]}


async def test_streamed_tool_use_accumulates_to_the_upstream_message(provider, fake):
    tool = FakeToolUse("get_weather", {"city": "Paris", "days": [1, 2]}, id="toolu_1")
    reply = FakeReply(text="Checking.", tool_uses=[tool], input_tokens=30, output_tokens=12)
    fake.enqueue(reply, reply)
    streamed = accumulate(await collect(provider))
    created = await provider.create(REQUEST)
    assert (
        streamed["content"]
        == created["content"]
        == [
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris", "days": [1, 2]},
            },
        ]
    )
    assert streamed["stop_reason"] == "tool_use"
    assert streamed["usage"]["input_tokens"] == 30 and streamed["usage"]["output_tokens"] == 12


async def test_the_http_client_is_reused_across_calls(provider):
    await provider.create(REQUEST)
    first_client = provider._http()
    await collect(provider)
    assert provider._http() is first_client


@pytest.mark.parametrize("status", [529, 503, 500])
async def test_overloaded_and_5xx_are_retried_then_succeed(provider, fake, status):
    fake.fail_next(status=status, times=2)
    message = await provider.create(REQUEST)
    assert message["content"][0]["text"] == "Fake reply to: hello gateway"
    assert len(fake.requests) == 3


async def test_stream_retries_before_the_first_event(provider, fake):
    fake.fail_next(status=529, times=1)
    events = await collect(provider)
    assert events[-1]["type"] == "message_stop"
    assert len(fake.requests) == 2


async def test_exhausted_retries_on_529_raise_overloaded(provider, fake):
    fake.fail_next(status=529, times=3)
    with pytest.raises(UpstreamOverloaded):
        await provider.create(REQUEST)
    assert len(fake.requests) == 3


async def test_exhausted_retries_on_5xx_raise_overloaded_for_streams_too(provider, fake):
    fake.fail_next(status=502, times=3)
    with pytest.raises(UpstreamOverloaded) as raised:
        await collect(provider)
    assert raised.value.status == 503
    assert len(fake.requests) == 3


async def test_429_is_retried_honouring_a_small_retry_after(provider, fake):
    fake.fail_next(status=429, times=1, retry_after=0)
    await provider.create(REQUEST)
    assert len(fake.requests) == 2


async def test_persistent_429_raises_rate_limited_with_retry_after(provider, fake):
    fake.fail_next(status=429, times=3, retry_after=0)
    with pytest.raises(RateLimited) as raised:
        await provider.create(REQUEST)
    assert raised.value.retry_after == 1  # at least one second, never zero
    assert len(fake.requests) == 3


async def test_429_with_a_long_retry_after_is_not_waited_for(provider, fake):
    fake.fail_next(status=429, times=1, retry_after=120)
    with pytest.raises(RateLimited) as raised:
        await provider.create(REQUEST)
    assert raised.value.retry_after == 120
    assert len(fake.requests) == 1


async def test_rejected_credentials_do_not_leak_the_key_or_body(fake):
    provider = AnthropicProvider(fake.base_url, "sk-ant-api03-our-secret-provider-key", attempts=3)
    try:
        with pytest.raises(UpstreamError) as raised:
            await provider.create(REQUEST)
    finally:
        await provider.aclose()
    assert raised.value.message == "upstream rejected the gateway's credentials"
    assert "secret" not in str(raised.value) and "x-api-key" not in str(raised.value)
    assert len(fake.requests) == 1  # a 401 is not retried


async def test_upstream_request_errors_become_invalid_request_with_the_upstream_message(provider, fake):
    with pytest.raises(InvalidRequest) as raised:
        await provider.create({"model": "claude-fake-1", "messages": REQUEST["messages"]})
    assert raised.value.message == "max_tokens: Field required"
    assert len(fake.requests) == 1


async def test_keys_in_upstream_error_messages_are_redacted(provider, fake):
    fake.fail_next(status=400, message="bad header sk-ant-api03-AAAAAAAAAAAAAAAAAAAA given")
    with pytest.raises(InvalidRequest) as raised:
        await provider.create(REQUEST)
    assert raised.value.message == "bad header [redacted] given"


async def test_headers_arriving_too_late_time_out_after_retries(fake):
    provider = AnthropicProvider(
        fake.base_url, FAKE_API_KEY, timeout_s=0.2, attempts=2, backoff_initial_s=0.01
    )
    fake.delay_headers(1.0, times=2)
    try:
        with pytest.raises(UpstreamTimeout) as raised:
            await provider.create(REQUEST)
    finally:
        await provider.aclose()
    assert raised.value.status == 504
    assert len(fake.requests) == 2


async def test_one_slow_header_is_retried_and_then_answers(fake):
    provider = AnthropicProvider(
        fake.base_url, FAKE_API_KEY, timeout_s=0.3, attempts=2, backoff_initial_s=0.01
    )
    fake.delay_headers(1.0, times=1)
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()
    assert events[-1]["type"] == "message_stop"


async def test_unreachable_upstream_is_unavailable(fake):
    # A port that was free a moment ago: connection refused on every attempt.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = AnthropicProvider(f"http://127.0.0.1:{port}", FAKE_API_KEY, attempts=2, backoff_initial_s=0.01)
    with pytest.raises(UpstreamOverloaded):
        await provider.create(REQUEST)
    await provider.aclose()


async def test_a_stream_broken_midway_raises_after_yielding_the_first_events(provider, fake):
    fake.break_stream_after(5)  # message_start, block start, ping, two words
    received = []
    with pytest.raises(UpstreamStreamBroken) as raised:
        async for event in provider.stream(REQUEST):
            received.append(event)
    assert [e["type"] for e in received] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]
    assert raised.value.events_received == 4
    assert raised.value.status == 502
    assert len(fake.requests) == 1  # never retried once an event was yielded


async def test_a_stream_stalling_midway_is_broken_not_retried(fake):
    provider = AnthropicProvider(
        fake.base_url, FAKE_API_KEY, timeout_s=0.2, attempts=3, backoff_initial_s=0.01
    )
    fake.slow_stream(1.0)
    received = []
    try:
        with pytest.raises(UpstreamStreamBroken):
            async for event in provider.stream(REQUEST):
                received.append(event)
    finally:
        await provider.aclose()
    assert [e["type"] for e in received] == ["message_start"]
    assert len(fake.requests) == 1


async def test_malformed_first_sse_event_is_an_upstream_error(provider, fake):
    fake.malformed_sse(after_events=0)
    with pytest.raises(UpstreamError) as raised:
        await collect(provider)
    assert not isinstance(raised.value, UpstreamStreamBroken)
    assert raised.value.status == 502


async def test_malformed_sse_after_some_events_breaks_the_stream(provider, fake):
    fake.malformed_sse(after_events=3)
    with pytest.raises(UpstreamStreamBroken) as raised:
        await collect(provider)
    assert raised.value.events_received == 2  # the ping is not handed on


async def test_an_unparseable_200_is_an_upstream_error(provider, fake):
    fake.malformed_json()
    with pytest.raises(UpstreamError) as raised:
        await provider.create(REQUEST)
    assert raised.value.status == 502
    assert len(fake.requests) == 1


async def test_an_sse_error_event_midway_breaks_the_stream(provider, fake):
    fake.error_event_after(4)
    received = []
    with pytest.raises(UpstreamStreamBroken) as raised:
        async for event in provider.stream(REQUEST):
            received.append(event)
    assert len(received) == 3 == raised.value.events_received  # ping not counted
    assert "overloaded_error" in raised.value.message
    assert len(fake.requests) == 1


async def test_an_sse_error_event_before_any_content_is_an_upstream_error(provider, fake):
    fake.error_event_after(0)
    with pytest.raises(UpstreamError) as raised:
        await collect(provider)
    assert not isinstance(raised.value, UpstreamStreamBroken)


async def test_a_consumer_that_stops_early_leaves_the_provider_usable(provider, fake):
    async with contextlib.aclosing(provider.stream(REQUEST)) as events:
        async for event in events:
            if event["type"] == "content_block_delta":
                break
    message = await provider.create(REQUEST)
    assert message["stop_reason"] == "end_turn"


async def test_an_injected_http_client_is_used_and_not_closed(fake):
    async with httpx.AsyncClient() as shared:
        provider = AnthropicProvider(fake.base_url, FAKE_API_KEY, client=shared)
        await provider.create(REQUEST)
        await provider.aclose()
        assert not shared.is_closed
        assert provider._http() is shared


async def test_concurrent_streams_share_one_provider(provider, fake):
    requests = [{**REQUEST, "messages": [{"role": "user", "content": f"question {n}"}]} for n in range(6)]
    messages = await asyncio.gather(*(collect(provider, request) for request in requests))
    texts = [accumulate(events)["content"][0]["text"] for events in messages]
    assert texts == [f"Fake reply to: question {n}" for n in range(6)]
