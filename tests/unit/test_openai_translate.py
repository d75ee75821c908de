"""Anthropic Messages ⇄ OpenAI Chat Completions translation (pure functions), checked by round
trips, by the invariants of well-formed streams, and by the official SDKs parsing what the
stream translators produce (served through an in-memory HTTP transport)."""

from __future__ import annotations

import json

import anthropic
import httpx2
import openai
import pytest
from threadgate.domain.errors import InvalidRequest, UpstreamError
from threadgate.providers.field_map import chat_to_messages, messages_to_chat
from threadgate.providers.openai.streams import AnthropicToOpenAIStream, OpenAIStreamTranslator
from threadgate.providers.openai.translate import (
    anthropic_response_to_openai,
    openai_response_to_anthropic,
    wants_usage_chunk,
)
from threadgate.providers.openai.wire import RAW_ARGUMENTS_KEY, TOOL_ERROR_PREFIX

from tests.fakes.fake_anthropic import stream_events as anthropic_stream_events
from tests.fakes.fake_openai import FakeReply, FakeToolCall, build_completion, request_problem, stream_chunks

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = "iVBORw0KGgo="

# A conversation with everything the tool loop produces: a system prompt, an image, thinking,
# parallel tool calls, tool results (one failed) followed by more user text.
CONVERSATION = {
    "model": "claude-x",
    "max_tokens": 300,
    "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Use tools."}],
    "temperature": 0.2,
    "stop_sequences": ["END"],
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "auto"},
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Oslo? See the map."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "two cities", "signature": "sig"},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "timeout", "is_error": True},
                {"type": "text", "text": "Retry Oslo please."},
            ],
        },
    ],
}


# --- Anthropic request -> OpenAI request ----------------------------------------------------


def test_conversation_becomes_a_valid_chat_completions_request():
    body = messages_to_chat({**CONVERSATION, "model": "gpt-up"})
    assert request_problem(body) is None  # the ordering rules the real API enforces
    assert body["model"] == "gpt-up"
    assert body["max_completion_tokens"] == 300
    assert body["stop"] == ["END"]
    assert body["temperature"] == 0.2
    assert body["tool_choice"] == "auto"
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]
    system, user, assistant, result_1, result_2, retry = body["messages"]
    assert system == {"role": "system", "content": "You are terse.\n\nUse tools."}
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert assistant["content"] == "Checking both."  # thinking dropped
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert result_1 == {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C, sunny"}
    assert result_2 == {"role": "tool", "tool_call_id": "toolu_2", "content": TOOL_ERROR_PREFIX + "timeout"}
    assert retry == {"role": "user", "content": "Retry Oslo please."}
    assert "stream" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        ({"type": "tool", "name": "get_weather"}, {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
    ],
)
def test_tool_choice_maps_to_openai(choice, expected):
    body = messages_to_chat({**{**CONVERSATION, "tool_choice": choice}, "model": "gpt-up"})
    assert {k: body[k] for k in expected} == expected


def test_tool_result_images_and_url_images_reach_the_model():
    request = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "snap", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "here"},
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                        ],
                    }
                ],
            },
        ],
    }
    assistant, tool, user = messages_to_chat({**request, "model": "gpt-up"})["messages"]
    assert assistant["content"] is None and assistant["tool_calls"][0]["function"]["arguments"] == "{}"
    assert tool == {"role": "tool", "tool_call_id": "t1", "content": "here"}
    assert user == {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]}, "messages[0].content[0].type"),
        ({"messages": "hi"}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ],
)
def test_bad_anthropic_request_names_the_field(change, field):
    with pytest.raises(InvalidRequest) as caught:
        messages_to_chat({**{**CONVERSATION, **change}, "model": "gpt-up"})
    assert caught.value.message.startswith(f"{field}: ")
    assert caught.value.param == field


# --- OpenAI request -> Anthropic request ----------------------------------------------------


def test_round_trip_keeps_tools_calls_results_and_errors():
    """Anthropic -> OpenAI -> Anthropic gives back the conversation (minus thinking)."""
    back = chat_to_messages(messages_to_chat({**CONVERSATION, "model": "gpt-up"}))
    expected = json.loads(json.dumps(CONVERSATION))
    expected["model"] = "gpt-up"
    expected["system"] = "You are terse.\n\nUse tools."
    expected["messages"][1]["content"].pop(0)  # thinking
    assert back == expected


def test_openai_round_trip_keeps_the_conversation():
    """OpenAI -> Anthropic -> OpenAI gives back what an OpenAI client sent."""
    request = {
        "model": "gpt-up",
        "max_completion_tokens": 64,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
                    {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "warm"},
            {"role": "tool", "tool_call_id": "c2", "content": TOOL_ERROR_PREFIX + "bad arguments"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]}}],
        "tool_choice": "required",
        "stop": ["END"],
        "temperature": 0.5,
    }
    anthropic_request = chat_to_messages(request)
    assert anthropic_request["messages"][1]["content"][1]["input"] == {RAW_ARGUMENTS_KEY: "not json"}
    assert anthropic_request["messages"][2]["content"][1]["is_error"] is True
    back = messages_to_chat({**anthropic_request, "model": "gpt-up"})
    assert back == request


def test_openai_request_hoists_system_and_merges_tool_messages_into_one_user_turn():
    request = {
        "model": "claude-x",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "rule one"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
                ],
            },
            {"role": "assistant", "content": "calling", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "A"}]},
            {"role": "tool", "tool_call_id": "b", "content": "B"},
            {"role": "user", "content": "thanks"},
            {"role": "system", "content": "rule two"},
        ],
    }
    out = chat_to_messages(request)
    assert out["system"] == "rule one\n\nrule two"
    assert "max_tokens" not in out  # never invented: the gateway reserves against the model's own limit
    user, assistant, results = out["messages"]
    assert user["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}}
    assert [b["type"] for b in assistant["content"]] == ["text", "tool_use", "tool_use"]
    assert [b["input"] for b in assistant["content"][1:]] == [{}, {}]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "A"},
            {"type": "tool_result", "tool_use_id": "b", "content": "B"},
            {"type": "text", "text": "thanks"},
        ],
    }


F_TOOL = {"type": "function", "function": {"name": "f"}}  # no parameters: Anthropic needs an empty schema
EMPTY_SCHEMA = {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_tokens": 50, "max_completion_tokens": 70}, {"max_tokens": 70}),
        ({"temperature": 0.5, "top_p": 1}, {"temperature": 0.5, "top_p": None}),  # no-op top_p not sent
        ({"top_p": 0.9}, {"top_p": 0.9}),
        ({"stop": "###"}, {"stop_sequences": ["###"]}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
        ({"user": "end-user-7"}, {"metadata": {"user_id": "end-user-7"}}),
        ({"tools": [F_TOOL], "parallel_tool_calls": False},
         {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
        (
            {"tools": [F_TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}},
            {"tool_choice": {"type": "tool", "name": "f"}, "tools": [{"name": "f", "input_schema": EMPTY_SCHEMA}]},
        ),
    ],
)
def test_openai_parameters_map_to_anthropic(params, expected):
    out = chat_to_messages({"model": "m", "messages": [{"role": "user", "content": "hi"}], **params})
    assert {k: out.get(k) for k in expected} == expected


def test_usage_chunk_wish_is_read_from_stream_options():
    assert wants_usage_chunk({"stream": True, "stream_options": {"include_usage": True}})
    assert not wants_usage_chunk({"stream": True})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"messages": [{"role": "user", "content": "a"}, {"role": "function", "content": "x"}]},
         "messages[1].role: must be one of system, developer, user, assistant, tool"),
        ({"messages": []}, "messages: must not be empty"),
        (
            {"messages": [{"role": "system", "content": "only system"}]},
            "messages: must contain at least one non-empty user or assistant message",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id: must be a string"),
        ({"n": 2}, "n: not supported for Claude and other models: Claude writes one answer per request (1 is accepted)"),
        ({"temperature": 1.7}, "temperature: Claude models take 0-1; values above 1 have no equivalent"),
        ({"seed": 7}, "seed: not supported for Claude and other models: Claude has no sampling seed"),
        ({"surprise": 1}, "surprise: not a Chat Completions field the gateway can translate for Claude and other models"),
        ({"max_completion_tokens": -1}, "max_completion_tokens: must be an integer >= 1"),
        ({"temperature": 3}, "temperature: must be a number between 0 and 2"),
        ({"response_format": {"type": "json_object"}},
         "response_format.type: 'json_object' has no Claude equivalent (Claude has no schema-less JSON mode); send a json_schema"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
         "messages[0].content[0].type: 'input_audio' is not supported for this model"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
         "messages[0].content[0].image_url.url: must be an http(s) URL or a base64 data URL"),
    ],
)
def test_bad_openai_request_names_the_field(change, message):
    with pytest.raises(InvalidRequest) as caught:
        chat_to_messages({"model": "m", "messages": [{"role": "user", "content": "hi"}], **change})
    assert caught.value.message == message


# --- answers, both ways ----------------------------------------------------------------------


def test_openai_answer_becomes_an_anthropic_message_with_split_cache_usage():
    reply = FakeReply(
        text="Checking.",
        tool_calls=[
            FakeToolCall("get_weather", {"city": "Paris"}, id="call_1"),
            FakeToolCall("get_weather", "{oops", id="call_2"),
        ],
        prompt_tokens=1000,
        cached_tokens=800,
        completion_tokens=40,
    )
    completion = build_completion({"model": "gpt-up", "messages": []}, reply, None, 1)
    message = openai_response_to_anthropic(completion, "our-model")
    assert message["type"] == "message" and message["role"] == "assistant" and message["model"] == "our-model"
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {RAW_ARGUMENTS_KEY: "{oops"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 200,
        "output_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 800,
        "service_tier": "default",  # OpenAI's reported tier, where Anthropic reports its own
    }
    # ... and the unparsable arguments go back to the model exactly as it wrote them.
    back = messages_to_chat({**{"messages": [{"role": "assistant", "content": message["content"]}]}, "model": "gpt-up"})
    assert back["messages"][0]["tool_calls"][1]["function"]["arguments"] == "{oops"


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), ("tool_calls", "tool_use")],
)
def test_finish_reason_maps_to_stop_reason(finish_reason, stop_reason):
    completion = build_completion({"messages": []}, FakeReply(text="x", finish_reason=finish_reason), None, 1)
    assert openai_response_to_anthropic(completion, "m")["stop_reason"] == stop_reason


@pytest.mark.parametrize("answer", [{}, {"choices": []}, {"choices": [{"finish_reason": "stop"}]}, []])
def test_unusable_openai_answer_is_an_upstream_error(answer):
    with pytest.raises(UpstreamError):
        openai_response_to_anthropic(answer, "m")


def test_anthropic_answer_becomes_a_chat_completion():
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": "s"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 7},
    }
    completion = anthropic_response_to_openai(message, "claude-x", 1_700_000_000)
    parsed = openai.types.chat.ChatCompletion.model_validate(completion)  # strict pydantic check
    assert parsed.object == "chat.completion" and parsed.created == 1_700_000_000
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls[0].id == "toolu_1"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    assert parsed.usage.prompt_tokens == 115 and parsed.usage.completion_tokens == 7 and parsed.usage.total_tokens == 122
    assert parsed.usage.prompt_tokens_details.cached_tokens == 100


# --- streams ----------------------------------------------------------------------------------


def assert_well_formed_anthropic_stream(events):
    """message_start first; blocks strictly sequential with consecutive indexes, each started
    block stopped, deltas only into the open block; message_delta then message_stop last."""
    assert events[0]["type"] == "message_start"
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    open_index, next_index = None, 0
    for event in events[1:-2]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_index is None and event["index"] == next_index
            open_index, next_index = event["index"], next_index + 1
        elif kind == "content_block_delta":
            assert event["index"] == open_index
        elif kind == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
        else:
            raise AssertionError(f"unexpected event inside the message: {kind}")
    assert open_index is None


def translate_openai_stream(chunks, model="our-model"):
    translator = OpenAIStreamTranslator(model)
    events = [event for chunk in chunks for event in translator.feed(chunk)]
    return events + translator.finish()


def sse_client(body: bytes, sdk):
    """An SDK client whose every request is answered with `body` as an event stream (the SDKs
    are built on `httpx2`, so their in-memory transport comes from there)."""
    def answer(request):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http_client = httpx2.Client(transport=httpx2.MockTransport(answer))
    if sdk is anthropic:
        return anthropic.Anthropic(api_key="k", base_url="http://upstream.test", http_client=http_client, max_retries=0)
    return openai.OpenAI(api_key="k", base_url="http://upstream.test/v1", http_client=http_client, max_retries=0)


TOOL_REPLY = FakeReply(
    text="Let me look that up.",
    tool_calls=[
        FakeToolCall("get_weather", {"city": "Paris"}, id="call_a"),
        FakeToolCall("get_weather", {"city": "Oslo"}, id="call_b"),
    ],
    prompt_tokens=120,
    cached_tokens=20,
    completion_tokens=30,
)


def test_openai_stream_translates_to_a_well_formed_anthropic_stream():
    chunks = stream_chunks(build_completion({"messages": []}, TOOL_REPLY, None, 1), include_usage=True)
    translator = OpenAIStreamTranslator("our-model")
    first = translator.feed(chunks[0])  # role-only chunk
    assert [e["type"] for e in first] == ["message_start"]
    events = first + [e for c in chunks[1:] for e in translator.feed(c)] + translator.finish()
    assert_well_formed_anthropic_stream(events)
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [(b["type"], b.get("id")) for b in starts] == [("text", None), ("tool_use", "call_a"), ("tool_use", "call_b")]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    usage = {"input_tokens": 100, "output_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20,
             "service_tier": "default"}
    assert events[-2]["usage"] == usage


def test_anthropic_sdk_reads_the_translated_stream():
    chunks = stream_chunks(build_completion({"messages": []}, TOOL_REPLY, None, 1), include_usage=True)
    events = translate_openai_stream(chunks)
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    client = sse_client(body, anthropic)
    with client.messages.stream(model="our-model", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Let me look that up."
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("text", None),
        ("tool_use", {"city": "Paris"}),
        ("tool_use", {"city": "Oslo"}),
    ]
    assert final.stop_reason == "tool_use" and final.model == "our-model"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (100, 30, 20)


def test_openai_stream_of_plain_text_ends_with_end_turn_and_length_with_max_tokens():
    for finish_reason, stop_reason in (("stop", "end_turn"), ("length", "max_tokens")):
        completion = build_completion({"messages": []}, FakeReply(text="a b c", finish_reason=finish_reason), None, 1)
        events = translate_openai_stream(stream_chunks(completion, include_usage=True))
        assert_well_formed_anthropic_stream(events)
        text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        assert text == "a b c" and events[-2]["delta"]["stop_reason"] == stop_reason


def test_interleaved_tool_call_deltas_are_refused_rather_than_mangled():
    translator = OpenAIStreamTranslator("m")

    def call(index, **fields):
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}]}

    translator.feed(call(0, id="a", function={"name": "f", "arguments": "{"}))
    translator.feed(call(1, id="b", function={"name": "g", "arguments": "{"}))
    with pytest.raises(UpstreamError):
        translator.feed(call(0, function={"arguments": "}"}))


def test_finishing_a_stream_that_never_started_is_an_upstream_error():
    with pytest.raises(UpstreamError):
        OpenAIStreamTranslator("m").finish()


def anthropic_message(content, stop_reason, usage):
    return {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


ANTHROPIC_TOOL_MESSAGE = anthropic_message(
    [
        {"type": "thinking", "thinking": "need weather", "signature": "sig"},
        {"type": "text", "text": "Looking it up now."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris", "units": "metric"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "Oslo"}},
    ],
    "tool_use",
    {"input_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30, "output_tokens": 25},
)


def translate_anthropic_stream(message, include_usage):
    translator = AnthropicToOpenAIStream("claude-x", 1_700_000_000, include_usage=include_usage)
    return [chunk for event in anthropic_stream_events(message) for chunk in translator.feed(event)]


def test_anthropic_stream_translates_to_openai_chunks():
    chunks = translate_anthropic_stream(ANTHROPIC_TOOL_MESSAGE, include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_abc"}
    heads = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", []) if "id" in tc]
    assert [(h["index"], h["id"], h["function"]["name"]) for h in heads] == [
        (0, "toolu_a", "get_weather"),
        (1, "toolu_b", "get_weather"),
    ]
    finish, usage = chunks[-2:]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 80
    assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 30}
    assert all(c["usage"] is None for c in chunks[:-1])


def test_openai_sdk_reads_the_translated_stream():
    chunks = translate_anthropic_stream(ANTHROPIC_TOOL_MESSAGE, include_usage=True)
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"
    client = sse_client(body, openai)
    with client.chat.completions.stream(
        model="claude-x", messages=[{"role": "user", "content": "hi"}], stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Looking it up now."
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("toolu_a", "get_weather", {"city": "Paris", "units": "metric"}),
        ("toolu_b", "get_weather", {"city": "Oslo"}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (80, 25)


def test_without_include_usage_there_is_no_usage_chunk():
    message = anthropic_message([{"type": "text", "text": "hi there"}], "max_tokens", {"input_tokens": 3, "output_tokens": 2})
    chunks = translate_anthropic_stream(message, include_usage=False)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "hi there"


def test_both_stream_translators_compose_back_to_the_same_answer():
    """Anthropic events -> OpenAI chunks -> Anthropic events keeps text, calls and usage."""
    chunks = translate_anthropic_stream(ANTHROPIC_TOOL_MESSAGE, include_usage=True)
    events = translate_openai_stream(chunks, model="claude-x")
    assert_well_formed_anthropic_stream(events)
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    client = sse_client(body, anthropic)
    with client.messages.stream(model="claude-x", max_tokens=9, messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    expected = [b for b in ANTHROPIC_TOOL_MESSAGE["content"] if b["type"] != "thinking"]
    assert [b.model_dump(exclude_none=True, exclude={"citations"}) for b in final.content] == expected
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (50, 30, 25)
