"""AnthropicProvider against the fake Anthropic upstream over real HTTP: the wire requests it
sends, what is Anthropic's own (pings, 529, SSE `error` events), and — through
`TestUpstreamContract` — the retry policy and failure mapping every HTTP provider shares."""

from __future__ import annotations

import pytest

from tests.fakes.fake_anthropic import FAKE_API_KEY, FakeReply, FakeToolUse, running_fake_anthropic
from tests.integration.provider_contract import UpstreamProviderContract, collect, fake_fixtures, provider_fixture
from threadgate.domain.errors import InvalidRequest, UpstreamError, UpstreamOverloaded
from threadgate.providers import UpstreamStreamBroken
from threadgate.providers.anthropic.client import AnthropicProvider
from threadgate.providers.anthropic.stream_accumulator import accumulate

pytestmark = pytest.mark.anyio

REQUEST = {
    "model": "claude-fake-1",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hello gateway"}],
}

served_fake, fake = fake_fixtures(running_fake_anthropic)


@pytest.fixture
def anyio_backend():
    return "asyncio"  # not every backend anyio could find (trio…): the providers run on asyncio


class TestUpstreamContract(UpstreamProviderContract):
    provider_class = AnthropicProvider
    request = REQUEST
    endpoint_path = "/v1/messages"
    frames_before_two_words = 5  # message_start, block start, ping, two words


provider = provider_fixture(TestUpstreamContract)


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


async def test_stream_yields_anthropic_events_without_pings(provider, fake):
    events = await collect(provider, REQUEST)
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
    streamed = accumulate(await collect(provider, REQUEST))
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


async def test_overloaded_is_retried_then_succeeds(provider, fake):
    fake.fail_next(status=529, times=2)
    message = await provider.create(REQUEST)
    assert message["content"][0]["text"] == "Fake reply to: hello gateway"
    assert len(fake.requests) == 3


async def test_exhausted_retries_on_529_raise_overloaded(provider, fake):
    fake.fail_next(status=529, times=3)
    with pytest.raises(UpstreamOverloaded):
        await provider.create(REQUEST)
    assert len(fake.requests) == 3


async def test_upstream_request_errors_become_invalid_request_with_the_upstream_message(provider, fake):
    with pytest.raises(InvalidRequest) as raised:
        await provider.create({"model": "claude-fake-1", "messages": REQUEST["messages"]})
    assert raised.value.message == "max_tokens: Field required"
    assert len(fake.requests) == 1


async def test_malformed_sse_after_some_events_breaks_the_stream(provider, fake):
    fake.malformed_sse(after_events=3)
    with pytest.raises(UpstreamStreamBroken) as raised:
        await collect(provider, REQUEST)
    assert raised.value.events_received == 2  # the ping is not handed on


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
        await collect(provider, REQUEST)
    assert not isinstance(raised.value, UpstreamStreamBroken)
