"""MessageAccumulator: Anthropic stream events → the final message, also for partial streams
(what a broken stream is billed and persisted from)."""

from __future__ import annotations

from tests.fakes.fake_anthropic import stream_events
from threadgate.providers.anthropic.stream_accumulator import MessageAccumulator, accumulate

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-fake-1",
    "content": [
        {"type": "thinking", "thinking": "Need the weather tool.", "signature": "sig_abc"},
        {"type": "text", "text": "Let me check that."},
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"city": "Paris", "days": [1, 2]},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 8,
        "output_tokens": 25,
    },
}


def test_accumulating_a_full_stream_rebuilds_the_message():
    assert accumulate(stream_events(MESSAGE)) == MESSAGE


def test_message_delta_usage_overrides_message_start_usage():
    events = stream_events(MESSAGE)
    events[-2]["usage"] = {"input_tokens": 41, "output_tokens": 30, "cache_read_input_tokens": None}
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.feed(event)
    assert accumulator.usage == {
        "input_tokens": 41,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 8,
        "output_tokens": 30,
    }
    assert accumulator.finished and accumulator.stop_reason == "tool_use"


def test_a_partial_stream_keeps_what_was_received():
    events = stream_events(MESSAGE)
    text_stop = next(i for i, e in enumerate(events) if e == {"type": "content_block_stop", "index": 1})
    first_json = next(i for i, e in enumerate(events) if e.get("delta", {}).get("partial_json"))
    accumulator = MessageAccumulator()
    for event in events[: first_json + 1]:  # the tool input is still an unfinished JSON fragment
        accumulator.feed(event)
    partial = accumulator.message()
    assert [block["type"] for block in partial["content"]] == ["thinking", "text", "tool_use"]
    assert partial["content"][1]["text"] == "Let me check that."
    assert partial["content"][2]["input"] == {}  # unparseable so far
    assert partial["stop_reason"] is None and not accumulator.finished
    assert partial["usage"]["input_tokens"] == 40  # message_start's count is billable as-is
    assert text_stop < first_json


def test_nothing_received_gives_an_empty_message():
    accumulator = MessageAccumulator()
    assert accumulator.message()["content"] == []
    assert accumulator.usage == {"input_tokens": 0, "output_tokens": 0}
    assert not accumulator.started


def test_pings_errors_and_unknown_events_are_ignored():
    events = stream_events(MESSAGE)
    noisy = (
        events[:2]
        + [
            {"type": "ping"},
            {"type": "future_event", "x": 1},
            {"type": "error", "error": {"type": "overloaded_error"}},
        ]
        + events[2:]
    )
    assert accumulate(noisy) == MESSAGE
