"""OpenAIProvider against the fake OpenAI upstream over real HTTP, and the fake itself checked
with the official `openai` SDK (so what the provider is tested against is what OpenAI sends)."""

from __future__ import annotations

import json

import openai
import pytest
from threadgate.domain.errors import InvalidRequest, RateLimited, UpstreamError, UpstreamOverloaded
from threadgate.providers import UpstreamStreamBroken
from threadgate.providers.anthropic.stream_accumulator import accumulate
from threadgate.providers.openai.client import OpenAIProvider

from tests.fakes.fake_openai import FAKE_API_KEY, FakeReply, FakeToolCall, running_fake_openai
from tests.integration.provider_contract import UpstreamProviderContract, collect, fake_fixtures, provider_fixture

pytestmark = pytest.mark.anyio

REQUEST = {"model": "gpt-fake-1", "max_tokens": 100, "messages": [{"role": "user", "content": "hello gateway"}]}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TOOL_REPLY = FakeReply(
    text="Checking.",
    tool_calls=[FakeToolCall("get_weather", {"city": "Paris", "days": [1, 2]}, id="call_1")],
    prompt_tokens=300,
    cached_tokens=256,
    completion_tokens=12,
)

served_fake, fake = fake_fixtures(running_fake_openai)


@pytest.fixture
def anyio_backend():
    return "asyncio"  # not every backend anyio could find (trio…): the providers run on asyncio


class TestUpstreamContract(UpstreamProviderContract):
    provider_class = OpenAIProvider
    request = REQUEST
    endpoint_path = "/v1/chat/completions"
    frames_before_two_words = 3  # role chunk, two words

    @staticmethod
    def api_root(server_url: str) -> str:
        return server_url + "/v1"


provider = provider_fixture(TestUpstreamContract)


# --- the fake speaks OpenAI: the official SDK is the judge ----------------------------------


def sdk(fake, **options):
    return openai.OpenAI(base_url=fake.v1_url, api_key=fake.api_key, max_retries=0, **options)


def test_sdk_reads_the_fakes_completion(fake):
    fake.enqueue(TOOL_REPLY)
    completion = sdk(fake).chat.completions.create(model="gpt-fake-1", messages=[{"role": "user", "content": "hi"}])
    message = completion.choices[0].message
    assert message.content == "Checking."
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris", "days": [1, 2]}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.prompt_tokens_details.cached_tokens == 256


def test_sdk_reads_the_fakes_n_choices_and_logprobs_whole_and_streamed(fake):
    ask = {"model": "gpt-fake-1", "n": 2, "logprobs": True, "messages": [{"role": "user", "content": "two words"}]}
    done = sdk(fake).chat.completions.create(**ask)
    assert [c.index for c in done.choices] == [0, 1]
    assert [t.token for t in done.choices[1].logprobs.content] == done.choices[1].message.content.split()
    assert done.usage.completion_tokens == 2 * len(done.choices[0].message.content.split())
    with sdk(fake).chat.completions.stream(**ask) as stream:
        final = stream.get_final_completion()
    assert [c.message.content for c in final.choices] == [c.message.content for c in done.choices]
    assert [t.token for t in final.choices[1].logprobs.content] == done.choices[1].message.content.split()


def test_sdk_accumulates_the_fakes_stream_with_usage(fake):
    fake.enqueue(TOOL_REPLY)
    with sdk(fake).chat.completions.stream(
        model="gpt-fake-1", messages=[{"role": "user", "content": "hi"}], stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking."
    assert (message.tool_calls[0].id, json.loads(message.tool_calls[0].function.arguments)) == (
        "call_1",
        {"city": "Paris", "days": [1, 2]},
    )
    assert final.usage.prompt_tokens == 300 and final.usage.completion_tokens == 12


def test_sdk_sees_the_fakes_errors_as_openai_errors(fake):
    fake.fail_next(status=429, code="insufficient_quota", message="You exceeded your current quota")
    with pytest.raises(openai.RateLimitError) as raised:
        sdk(fake).chat.completions.create(model="gpt-fake-1", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "insufficient_quota"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=fake.v1_url, api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="gpt-fake-1", messages=[{"role": "user", "content": "hi"}]
        )


def test_the_fake_refuses_a_tool_message_that_answers_no_call(fake):
    with pytest.raises(openai.BadRequestError, match="must be a response to a preceeding message"):
        sdk(fake).chat.completions.create(
            model="gpt-fake-1", messages=[{"role": "tool", "tool_call_id": "call_x", "content": "42"}]
        )


# --- create ------------------------------------------------------------------------------------


async def test_create_answers_in_anthropic_shape_and_sends_chat_completions(provider, fake):
    message = await provider.create({**REQUEST, "stream": False})
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "Fake reply to: hello gateway"}]
    assert message["stop_reason"] == "end_turn" and message["model"] == "gpt-fake-1"
    assert message["usage"]["output_tokens"] == 5
    sent = fake.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert sent.body == {
        "model": "gpt-fake-1",
        "messages": [{"role": "user", "content": "hello gateway"}],
        "max_completion_tokens": 100,
    }


async def test_a_tool_loop_history_is_accepted_upstream_and_usage_splits_the_cache(provider, fake):
    fake.enqueue(TOOL_REPLY, FakeReply(text="Sunny in Paris."))
    request = {**REQUEST, "tools": [WEATHER_TOOL], "tool_choice": {"type": "auto"}}
    first = await provider.create(request)
    assert first["stop_reason"] == "tool_use"
    call = {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}}
    assert first["content"][1] == call
    assert first["usage"]["input_tokens"] == 44 and first["usage"]["cache_read_input_tokens"] == 256
    history = request["messages"] + [
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}]},
    ]
    second = await provider.create({**request, "messages": history})  # the fake checks tool ordering
    assert second["content"] == [{"type": "text", "text": "Sunny in Paris."}]
    sent = fake.requests[1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "18C"}


async def test_a_bad_request_is_refused_before_any_upstream_call(provider, fake):
    with pytest.raises(InvalidRequest, match=r"^messages\[0\]\.role: "):
        await provider.create({**REQUEST, "messages": [{"role": "tool", "content": "x"}]})
    with pytest.raises(InvalidRequest, match=r"^model: "):
        await collect(provider, {**REQUEST, "model": None})
    assert fake.requests == []


# --- stream ------------------------------------------------------------------------------------


async def test_stream_yields_anthropic_events_that_accumulate_to_the_created_message(provider, fake):
    fake.enqueue(TOOL_REPLY, TOOL_REPLY)
    events = await collect(provider, {**REQUEST, "tools": [WEATHER_TOOL]})
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    sent = fake.requests[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    created = await provider.create({**REQUEST, "tools": [WEATHER_TOOL]})
    streamed = accumulate(events)
    assert streamed["content"] == created["content"]
    assert streamed["stop_reason"] == created["stop_reason"] == "tool_use"
    assert streamed["usage"] == created["usage"] == {
        "input_tokens": 44,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 256,
        "service_tier": "default",
    }


async def test_exhausted_quota_is_not_retried_and_not_a_rate_limit(provider, fake):
    fake.fail_next(status=429, code="insufficient_quota", message="You exceeded your current quota")
    with pytest.raises(UpstreamError) as raised:
        await provider.create(REQUEST)
    assert not isinstance(raised.value, RateLimited)
    assert raised.value.message == "upstream account quota exhausted"
    assert len(fake.requests) == 1


async def test_a_stream_dropped_before_any_chunk_is_unavailable_not_broken(provider, fake):
    fake.break_stream_after(0)
    with pytest.raises(UpstreamOverloaded):
        await collect(provider, REQUEST)


async def test_an_error_payload_midway_breaks_the_stream(provider, fake):
    fake.error_in_stream_after(2)
    with pytest.raises(UpstreamStreamBroken) as raised:
        await collect(provider, REQUEST)
    assert raised.value.message == "upstream stream error (server_error)"


async def test_malformed_sse_after_some_chunks_breaks_the_stream(provider, fake):
    fake.malformed_sse(after_chunks=2)
    with pytest.raises(UpstreamStreamBroken):
        await collect(provider, REQUEST)


async def test_a_stream_ending_without_usage_or_done_is_broken(provider, fake):
    """Without the usage chunk the answer could not be billed: not a complete stream."""
    fake.omit_done()
    with pytest.raises(UpstreamStreamBroken):
        await collect(provider, REQUEST)
