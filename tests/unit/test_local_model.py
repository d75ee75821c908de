"""The offline model `threadgate-local`: deterministic answers, word streaming, limits, and the
tool rule that lets the tool loop run without any provider."""

from __future__ import annotations

import asyncio
import json
import math

from threadgate.providers.anthropic.stream_accumulator import MessageAccumulator, accumulate
from threadgate.providers.local import LocalModelProvider

WEATHER = {"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}
CLOCK = {"name": "get-time", "description": "time", "input_schema": {"type": "object"}}


def request(content, **extra):
    return {
        "model": "threadgate-local",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def run(coroutine):
    return asyncio.run(coroutine)


async def _events(provider, req):
    return [event async for event in provider.stream(req)]


def create(req):
    return run(LocalModelProvider(word_delay_ms=0).create(req))


def stream(req):
    return run(_events(LocalModelProvider(word_delay_ms=0), req))


def text_of(message):
    return "".join(block["text"] for block in message["content"] if block["type"] == "text")


def test_echoes_the_last_user_text():
    req = {
        "model": "threadgate-local",
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "Echo: first question"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "question  here"}],
            },
        ],
    }
    message = create(req)
    assert message["content"] == [{"type": "text", "text": "Echo: second question here"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["id"].startswith("msg_local_") and message["role"] == "assistant"
    assert message["usage"]["output_tokens"] == 4
    body = json.dumps(
        {"messages": req["messages"], "system": None, "tools": None}, separators=(",", ":"), sort_keys=True
    )
    assert message["usage"]["input_tokens"] == math.ceil(len(body.encode()) / 4)


def test_same_request_same_answer_different_request_different_id():
    assert create(request("hello")) == create(request("hello"))
    assert create(request("hello"))["id"] != create(request("hello!"))["id"]


def test_streams_one_delta_per_word_in_order():
    events = stream(request("one two three"))
    kinds = [event["type"] for event in events]
    assert kinds == ["message_start", "content_block_start"] + ["content_block_delta"] * 4 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"] == [
        "Echo: ",
        "one ",
        "two ",
        "three",
    ]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"]["output_tokens"] == 4


def test_accumulated_stream_equals_create_for_every_rule():
    requests = [
        request("plain text"),
        request("a b c d e f", max_tokens=3),
        request("stop HERE please", stop_sequences=["HERE"]),
        request('what is the get_weather for {"city": "Paris"}?', tools=[WEATHER]),
        request(
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "sunny"}],
                }
            ],
            tools=[WEATHER],
        ),
    ]
    for req in requests:
        assert accumulate(stream(req)) == create(req)


def test_max_tokens_truncates_words():
    message = create(request("a b c d e f", max_tokens=3))
    assert text_of(message) == "Echo: a b"
    assert message["stop_reason"] == "max_tokens"
    assert message["usage"]["output_tokens"] == 3


def test_stop_sequence_cuts_before_its_first_occurrence():
    message = create(request("keep this END drop this STOP", stop_sequences=["STOP", "END"]))
    assert text_of(message) == "Echo: keep this"
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


def test_mentioned_tool_is_called_with_the_first_json_object_of_the_text():
    message = create(
        request('Use get_weather with {"city": "Paris", "days": 2} then {"x": 1}', tools=[WEATHER, CLOCK])
    )
    assert message["stop_reason"] == "tool_use"
    text, call = message["content"]
    assert text == {"type": "text", "text": "Calling get_weather."}
    assert call["type"] == "tool_use" and call["name"] == "get_weather"
    assert call["input"] == {"city": "Paris", "days": 2}
    assert call["id"].startswith("toolu_") and len(call["id"]) == len("toolu_") + 24
    assert message["usage"]["output_tokens"] == 3  # two words and one tool block


def test_several_tools_are_called_in_order_of_mention():
    message = create(request("first get-time, then get_weather", tools=[WEATHER, CLOCK]))
    calls = [block for block in message["content"] if block["type"] == "tool_use"]
    assert [call["name"] for call in calls] == ["get-time", "get_weather"]
    assert all(call["input"] == {} for call in calls)
    assert calls[0]["id"] != calls[1]["id"]
    assert text_of(message) == "Calling get-time, get_weather."


def test_a_tool_name_inside_another_word_is_not_a_mention():
    message = create(request("get_weathers and forget-time", tools=[WEATHER, {**CLOCK, "name": "forget"}]))
    assert message["stop_reason"] == "end_turn"
    assert all(block["type"] == "text" for block in message["content"])


def test_tool_choice_none_disables_tool_calls():
    message = create(request("get_weather now", tools=[WEATHER], tool_choice={"type": "none"}))
    assert message["stop_reason"] == "end_turn"


def test_tool_results_are_reported_and_not_called_again():
    req = request(
        [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny, 21C"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_b",
                "content": [{"type": "text", "text": "12:00"}],
                "is_error": False,
            },
            {"type": "text", "text": "get_weather again?"},
        ],
        tools=[WEATHER],
    )
    message = create(req)
    assert text_of(message) == "Tool results: sunny, 21C; 12:00"
    assert message["stop_reason"] == "end_turn"


def test_tool_input_streams_as_json_fragments():
    events = stream(request('get_weather {"city": "Reykjavik", "units": "metric"}', tools=[WEATHER]))
    fragments = [
        e["delta"]["partial_json"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"city": "Reykjavik", "units": "metric"}


def test_word_delay_paces_the_stream():
    # The delay is observable as the event loop getting control between words, not by timing.
    ticks = []

    async def ticker():
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    async def consume(delay_ms):
        ticks.clear()
        task = asyncio.create_task(ticker())
        await _events(LocalModelProvider(word_delay_ms=delay_ms), request("a b c"))
        task.cancel()
        return len(ticks)

    assert run(consume(5)) > run(consume(0))


def test_accumulator_returns_a_partial_message_from_a_broken_stream():
    events = stream(request('get_weather {"city": "Paris"}', tools=[WEATHER]))
    cut = next(
        i
        for i, e in enumerate(events)
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    accumulator = MessageAccumulator()
    for event in events[:4]:  # start, text start, two words
        accumulator.feed(event)
    partial = accumulator.message()
    assert partial["content"] == [{"type": "text", "text": "Calling get_weather."}]
    assert partial["stop_reason"] is None and not accumulator.finished
    assert accumulator.usage["input_tokens"] == events[0]["message"]["usage"]["input_tokens"]
    for event in events[4 : cut + 1]:
        accumulator.feed(event)
    assert accumulator.message()["content"][1]["name"] == "get_weather"


def test_provider_name_and_default_model():
    provider = LocalModelProvider(word_delay_ms=0)
    assert provider.name == "local"
    assert (
        run(provider.create({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))["model"]
        == "threadgate-local"
    )
