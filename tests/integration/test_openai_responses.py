"""The Responses API (`POST /v1/responses`): the fake OpenAI checked with the official `openai`
SDK (`client.responses.create`, `client.responses.stream`), whole and streamed, so what the
gateway's Responses passthrough is tested against is what OpenAI sends."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fakes.fake_openai import FakeReply, FakeToolCall, running_fake_openai
from tests.integration.provider_contract import fake_fixtures

served_fake, fake = fake_fixtures(running_fake_openai)

TOOL = {"type": "function", "name": "get_weather", "description": "Current weather", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}}


def sdk(fake):
    return openai.OpenAI(base_url=fake.v1_url, api_key=fake.api_key, max_retries=0)


def test_sdk_reads_the_fakes_response_with_its_usage_details(fake):
    fake.enqueue(FakeReply(text="Hi there.", prompt_tokens=300, cached_tokens=256, reasoning_tokens=7))
    response = sdk(fake).responses.create(model="gpt-fake-1", input="hello", service_tier="priority")
    assert response.output_text == "Hi there." and response.status == "completed"
    assert response.usage.input_tokens == 300 and response.usage.input_tokens_details.cached_tokens == 256
    assert response.usage.output_tokens == 2 + 7 and response.usage.output_tokens_details.reasoning_tokens == 7
    assert response.service_tier == "priority"


def test_sdk_streams_the_fakes_events_into_the_same_response(fake):
    fake.enqueue(FakeReply(text="one two three", reasoning_tokens=3))
    with sdk(fake).responses.stream(model="gpt-fake-1", input=[{"role": "user", "content": "count"}]) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "one two three" == final.output_text
    assert final.usage.output_tokens == 3 + 3 and final.usage.output_tokens_details.reasoning_tokens == 3
    kinds = [r.body.get("stream") for r in fake.requests]
    assert kinds == [True]


def test_sdk_reads_the_fakes_function_calls_whole_and_streamed(fake):
    call = FakeToolCall("get_weather", {"city": "Paris"}, id="call_1")
    fake.enqueue(FakeReply(tool_calls=[call]), FakeReply(tool_calls=[call]))
    whole = sdk(fake).responses.create(model="gpt-fake-1", input="weather?", tools=[TOOL])
    with sdk(fake).responses.stream(model="gpt-fake-1", input="weather?", tools=[TOOL]) as stream:
        streamed = stream.get_final_response()
    for response in (whole, streamed):
        (item,) = response.output
        assert item.type == "function_call" and item.call_id == "call_1"
        assert json.loads(item.arguments) == {"city": "Paris"}


def test_the_fake_answers_structured_output_and_cuts_at_max_output_tokens(fake):
    fmt = {"type": "json_schema", "name": "w", "strict": True, "schema": TOOL["parameters"]}
    answer = sdk(fake).responses.create(model="gpt-fake-1", input="x", text={"format": fmt})
    assert json.loads(answer.output_text) == {"city": "example"}
    fake.default_reply = " ".join(["word"] * 40)
    cut = sdk(fake).responses.create(model="gpt-fake-1", input="x", max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize("body, message", [
    ({"input": "x", "bogus": 1}, "Unknown parameter: 'bogus'"),
    ({"input": "x", "max_output_tokens": 15}, "max_output_tokens"),
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "4"}]}, "No tool call found"),
])
def test_the_fake_refuses_what_the_real_api_refuses(fake, body, message):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(fake).responses.create(model="gpt-fake-1", extra_body=body.pop("bogus", None) and {"bogus": 1}, **body)
    assert message in str(err.value)
