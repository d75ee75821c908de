"""Passthrough routes with the official SDKs as clients: /v1/chat/completions (OpenAI shape, any
catalog model, Claude translated) and /v1/messages (Anthropic shape); both metered and capped."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fakes.fake_anthropic import FakeReply, FakeToolUse


def _oai(gateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)


def test_openai_sdk_chat_completion_on_a_claude_model_is_translated_and_billed(gateway):
    key = gateway.mint(max_spend_usd=1)
    client = _oai(gateway, key["secret"])
    done = client.chat.completions.create(
        model="claude-haiku-4-5", max_tokens=40,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello openai"}])
    assert done.choices[0].message.content.startswith("Fake reply to: hello openai")
    assert done.choices[0].finish_reason == "stop" and done.model == "claude-haiku-4-5"
    sent = gateway.fake.requests[-1].body
    assert sent["system"] == "be brief" and sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello openai"}]}]
    with gateway.admin() as admin:
        usage = admin.get(f"/v1/keys/{key['id']}/usage").json()
    assert usage["request_count"] == 1
    assert usage["events"][0]["input_tokens"] == done.usage.prompt_tokens
    assert usage["events"][0]["output_tokens"] == done.usage.completion_tokens


def test_openai_sdk_stream_with_usage_chunk(gateway):
    key = gateway.mint()
    client = _oai(gateway, key["secret"])
    chunks = list(client.chat.completions.create(
        model="threadgate-local", max_tokens=40, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream to openai"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream to openai"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_openai_sdk_tool_calls_are_returned_not_dispatched(gateway):
    gateway.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("get_weather", {"city": "Paris"})]))
    key = gateway.mint()
    client = _oai(gateway, key["secret"])
    done = client.chat.completions.create(
        model="claude-haiku-4-5", max_tokens=40, messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
    call = done.choices[0].message.tool_calls[0]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_cap_and_bad_input_answer_in_the_openai_error_shape(gateway):
    key = gateway.mint(max_spend_usd=0)
    client = _oai(gateway, key["secret"])
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="threadgate-local", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 402
    assert caught.value.body == {"message": caught.value.body["message"], "type": "key_cap_exceeded",
                                 "param": None, "code": "key_cap_exceeded"}
    with gateway.client(key["secret"]) as c:
        r = c.post("/v1/chat/completions", json={"model": "threadgate-local", "messages": "nope"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "messages" in r.json()["error"]["message"]


def test_anthropic_passthrough_returns_tool_use_and_persists_nothing(gateway):
    import anthropic

    gateway.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("get_weather", {"city": "Oslo"})]))
    key = gateway.mint()
    client = anthropic.Anthropic(api_key=key["secret"], base_url=gateway.url, max_retries=0)
    msg = client.messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}])
    assert msg.stop_reason == "tool_use" and msg.content[-1].input == {"city": "Oslo"}
    assert len(gateway.fake.requests) == 1  # returned to the caller, not dispatched
    with gateway.client(key["secret"]) as c:
        assert c.get("/v1/threads").json()["data"] == []


def test_server_tools_are_refused_not_served_unbilled(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        r = c.post("/v1/messages", json={
            "model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "news?"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]})
    assert r.status_code == 400 and "server tools" in r.json()["error"]["message"]
    assert "tools[0].type" in r.json()["error"]["message"]
    assert gateway.fake.requests == []


def test_integers_beyond_64_bits_are_refused_naming_where(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        r = c.post("/v1/threads", content=b'{"metadata": {"order": 123456789012345678901234567890}}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("metadata.order: integers must fit")
