"""The official `anthropic` SDK talks directly to the fake upstream: if the SDK parses the
fake's JSON and SSE exactly like it parses the real API's, the fake is faithful enough for the
gateway's tests to trust it."""

from __future__ import annotations

import anthropic
import pytest

from tests.fakes.fake_anthropic import FAKE_API_KEY, FakeReply, FakeToolUse, running_fake_anthropic
from tests.integration.provider_contract import fake_fixtures

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


served_fake, fake = fake_fixtures(running_fake_anthropic)


@pytest.fixture
def client(fake):
    # auth_token makes the SDK send `Authorization: Bearer …`, the form the brief calls out.
    with anthropic.Anthropic(base_url=fake.base_url, auth_token=FAKE_API_KEY, max_retries=0) as sdk:
        yield sdk


def test_sdk_parses_a_non_streaming_text_answer(client, fake):
    message = client.messages.create(
        model="claude-fake-1", max_tokens=100, messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Fake reply to: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 5
    assert message.usage.input_tokens > 0
    assert fake.requests[0].headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert fake.requests[0].headers["anthropic-version"]  # the SDK pins its own version


def test_sdk_streams_text_and_final_usage(client):
    with client.messages.stream(
        model="claude-fake-1", max_tokens=100, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) == 6  # one delta per word
    assert "".join(pieces) == "Fake reply to: stream me please"
    assert final.content[0].text == "Fake reply to: stream me please"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 6
    assert final.usage.input_tokens > 0


def test_sdk_parses_streamed_tool_use_with_thinking(client, fake):
    fake.enqueue(
        FakeReply(
            thinking="The user wants weather.",
            text="Let me look.",
            tool_uses=[FakeToolUse("get_weather", {"city": "Paris", "units": ["c", "f"]}, id="toolu_fixed")],
            input_tokens=42,
            output_tokens=17,
        )
    )
    with client.messages.stream(
        model="claude-fake-1",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "The user wants weather."
    assert final.content[1].text == "Let me look."
    tool = final.content[2]
    assert (tool.id, tool.name, tool.input) == (
        "toolu_fixed",
        "get_weather",
        {"city": "Paris", "units": ["c", "f"]},
    )
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (42, 17)


def test_sdk_parses_non_streaming_tool_use_then_the_scripted_answer(client, fake):
    fake.enqueue(FakeReply(tool_uses=[FakeToolUse("get_weather", {"city": "Oslo"})]), FakeReply(text="Cold."))
    first = client.messages.create(
        model="claude-fake-1",
        max_tokens=50,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Oslo?"}],
    )
    assert first.stop_reason == "tool_use"
    tool = first.content[0]
    assert tool.type == "tool_use" and tool.input == {"city": "Oslo"} and tool.id.startswith("toolu_")
    second = client.messages.create(
        model="claude-fake-1",
        max_tokens=50,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Oslo?"},
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "-5C"}]},
        ],
    )
    assert second.content[0].text == "Cold."
    assert fake.requests[1].body["messages"][2]["content"][0]["tool_use_id"] == tool.id


def test_default_reply_stops_at_max_tokens(client):
    message = client.messages.create(
        model="claude-fake-1", max_tokens=2, messages=[{"role": "user", "content": "one two three"}]
    )
    assert message.content[0].text == "Fake reply"
    assert message.stop_reason == "max_tokens"


def test_sdk_sees_injected_errors_as_the_real_api_error_types(client, fake):
    fake.fail_next(status=529)
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(
            model="claude-fake-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"

    fake.fail_next(status=429, retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(
            model="claude-fake-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.response.headers["retry-after"] == "3"


def test_wrong_key_is_refused_like_the_real_api(fake):
    with anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-wrong-key", max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError):
            sdk.messages.create(
                model="claude-fake-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    assert fake.requests[0].headers["authorization"] == "Bearer sk-ant-wrong-key"


def test_sdk_reports_a_stream_dropped_midway(client, fake):
    fake.break_stream_after(6)  # message_start, block start, ping, 3 words
    received = []
    # The SDK surfaces the transport's own "incomplete chunked read" error here.
    with pytest.raises(Exception, match="incomplete chunked read|peer closed"):
        with client.messages.stream(
            model="claude-fake-1", max_tokens=50, messages=[{"role": "user", "content": "a b c d e f"}]
        ) as stream:
            received.extend(stream.text_stream)
    assert "".join(received) == "Fake reply to: "


def test_sdk_raises_on_a_mid_stream_error_event(client, fake):
    fake.error_event_after(4, error_type="overloaded_error")
    with pytest.raises(anthropic.APIStatusError) as raised:
        with client.messages.stream(
            model="claude-fake-1", max_tokens=50, messages=[{"role": "user", "content": "a b c"}]
        ) as stream:
            for _ in stream.text_stream:
                pass
    assert raised.value.body["error"]["type"] == "overloaded_error"
