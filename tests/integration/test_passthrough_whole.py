"""Same-family passthrough is whole and metered; the families meet only through the field table;
thread turns with GPT translate their parameters (issue #9). Official SDKs as clients."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.fake_openai import FakeReply as GPTReply
from tests.fakes.fake_openai import FakeToolCall
from tests.integration.test_jobs import accepted, wait_for, without


def _model(gw, provider: str) -> Any:
    return next(m for m in gw.runtime.catalog if m.provider == provider)


def _oai(gw, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=gw.url + "/v1", max_retries=0)


def _usage(gw, key: dict[str, Any]) -> dict[str, Any]:
    with gw.admin() as admin:
        return admin.get(f"/v1/keys/{key['id']}/usage").json()


def test_a_gpt_completion_comes_back_as_the_upstream_sent_it_and_is_billed_from_its_usage(gateway_with_openai):
    gw, gpt = gateway_with_openai, _model(gateway_with_openai, "openai")
    gw.openai_fake.enqueue(GPTReply(text="Bonjour.", prompt_tokens=1200, cached_tokens=1024, completion_tokens=9))
    key = gw.mint()
    done = _oai(gw, key["secret"]).chat.completions.create(
        model=gpt.id, messages=[{"role": "user", "content": "hello"}], seed=7, logprobs=True, user="u-7",
        reasoning_effort="low", verbosity="low", prompt_cache_key="tenant-7", store=False)
    sent = gw.openai_fake.requests[-1].body
    assert sent == {"model": gpt.upstream_id, "messages": [{"role": "user", "content": "hello"}], "seed": 7,
                    "logprobs": True, "user": "u-7", "reasoning_effort": "low", "verbosity": "low",
                    "prompt_cache_key": "tenant-7", "store": False}  # no limit invented, nothing dropped
    assert done.model == gpt.id and done.choices[0].message.content == "Bonjour."
    assert done.system_fingerprint == "fp_fake0001" and done.service_tier == "default"  # as the upstream sent them
    assert done.usage.completion_tokens_details.reasoning_tokens == 0
    event = _usage(gw, key)["events"][0]
    assert (event["input_tokens"], event["cache_read_input_tokens"], event["output_tokens"]) == (176, 1024, 9)


def test_a_gpt_stream_hides_the_usage_chunk_it_was_not_asked_for_but_bills_it(gateway_with_openai):
    gw, gpt = gateway_with_openai, _model(gateway_with_openai, "openai")
    key = gw.mint()
    client = _oai(gw, key["secret"])
    chunks = list(client.chat.completions.create(
        model=gpt.id, stream=True, messages=[{"role": "user", "content": "stream it"}]))
    assert gw.openai_fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert all(c.model == gpt.id for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Fake reply to: stream it"
    billed = _usage(gw, key)["events"][0]
    assert billed["output_tokens"] == 5 and billed["input_tokens"] > 0
    asked = list(client.chat.completions.create(
        model=gpt.id, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream it"}]))
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens == 5


def test_no_output_limit_is_invented_unless_the_key_cannot_pay_for_the_models_own(gateway_with_openai):
    gw, gpt = gateway_with_openai, _model(gateway_with_openai, "openai")
    rich, poor = gw.mint(), gw.mint(max_spend_usd=0.05)
    body = {"model": gpt.id, "messages": [{"role": "user", "content": "hi"}]}
    with gw.client(rich["secret"]) as c:
        assert c.post("/v1/chat/completions", json=body).status_code == 200
    assert "max_completion_tokens" not in gw.openai_fake.requests[-1].body
    with gw.client(poor["secret"]) as c:
        assert c.post("/v1/chat/completions", json=body).status_code == 200
    limit = gw.openai_fake.requests[-1].body["max_completion_tokens"]
    assert 1 <= limit < gpt.max_output_tokens  # what $0.05 can pay for at the catalog's output price
    assert limit * gpt.base.output <= 0.05 * 1e6 * 1e6


def test_n_answers_are_all_returned_and_the_reservation_covers_them(gateway_with_openai):
    gw, gpt = gateway_with_openai, _model(gateway_with_openai, "openai")
    key = gw.mint(max_spend_usd=0.05)
    with gw.client(key["secret"]) as c:
        r = c.post("/v1/chat/completions", json={"model": gpt.id, "n": 3, "max_completion_tokens": 100_000,
                                                 "messages": [{"role": "user", "content": "three ways"}]})
    assert r.status_code == 200, r.text
    assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2]
    limit = gw.openai_fake.requests[-1].body["max_completion_tokens"]
    assert 3 * limit * gpt.base.output <= 0.05 * 1e6 * 1e6  # three answers of the lowered limit are affordable
    assert _usage(gw, key)["events"][0]["output_tokens"] == r.json()["usage"]["completion_tokens"]


def test_a_streamed_gpt_job_answers_the_whole_completion(gateway_with_openai):
    gw, gpt = gateway_with_openai, _model(gateway_with_openai, "openai")
    gw.openai_fake.enqueue(GPTReply(text="Checking.", tool_calls=[FakeToolCall("get_weather", {"city": "Oslo"}, id="call_9")]))
    key = gw.mint()
    with gw.client(key["secret"]) as c:
        job = wait_for(c, accepted(c, "/v1/chat/completions", {
            "model": gpt.id, "logprobs": True, "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]})["id"])
    assert job["status"] == "succeeded", job
    choice = job["response"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert [t["token"] for t in choice["logprobs"]["content"]] == ["Checking."]
    assert job["response"]["model"] == gpt.id and job["response"]["usage"]["completion_tokens"] == 2
    assert job["cost_micros"] > 0


def test_claude_callers_reach_gpt_through_the_messages_shape_streamed_and_whole(gateway_with_openai):
    gw, gpt = gateway_with_openai, _model(gateway_with_openai, "openai")
    key = gw.mint()
    client = anthropic.Anthropic(api_key=key["secret"], base_url=gw.url, max_retries=0)
    gw.openai_fake.enqueue(GPTReply(text="Calling.", tool_calls=[FakeToolCall("get_weather", {"city": "Rome"}, id="call_1")]))
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    with client.messages.stream(model=gpt.id, max_tokens=200, tools=tools, metadata={"user_id": "u-1"},
                                messages=[{"role": "user", "content": "weather in Rome?"}]) as stream:
        final = stream.get_final_message()
    assert final.model == gpt.id and final.stop_reason == "tool_use"
    assert final.content[-1].input == {"city": "Rome"} and final.content[0].text == "Calling."
    sent = gw.openai_fake.requests[-1].body
    assert sent["safety_identifier"] == "u-1" and sent["max_completion_tokens"] == 200
    whole = client.messages.create(model=gpt.id, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert whole.content[0].text == "Fake reply to: hi" and whole.usage.output_tokens == 4


def test_a_thread_turn_with_gpt_translates_its_parameters_or_refuses_them_by_name(gateway_with_openai):
    gw, gpt = gateway_with_openai, _model(gateway_with_openai, "openai")
    key = gw.mint()
    with gw.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()["id"]
        ok = c.post(f"/v1/threads/{thread}/messages", json={
            "model": gpt.id, "max_tokens": 300, "content": "hello", "system": "be brief",
            "thinking": {"type": "enabled", "budget_tokens": 20_000}, "metadata": {"user_id": "end-user-9"},
            "stop_sequences": ["END"], "temperature": 0.3})
        assert ok.status_code == 200, ok.text
        sent = gw.openai_fake.requests[-1].body
        assert (sent["reasoning_effort"], sent["safety_identifier"], sent["stop"], sent["temperature"]) == (
            "high", "end-user-9", ["END"], 0.3)
        refused = c.post(f"/v1/threads/{thread}/messages", json={
            "model": gpt.id, "max_tokens": 50, "content": "again", "top_k": 5})
        assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("top_k: ")
        assert len(gw.openai_fake.requests) == 1  # refused before any call
        assert c.get(f"/v1/threads/{thread}").json()["message_count"] == 2  # the refused turn left nothing


def test_the_offline_model_answers_both_endpoints(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        chat = c.post("/v1/chat/completions", json={"model": "threadgate-local", "messages": [{"role": "user", "content": "ping"}]})
        msg = c.post("/v1/messages", json={"model": "threadgate-local", "max_tokens": 20,
                                           "messages": [{"role": "user", "content": "pong"}]})
        streamed = c.post("/v1/messages", json={"model": "threadgate-local", "max_tokens": 20, "stream": True,
                                                "messages": [{"role": "user", "content": "pang"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "Echo: ping"
    assert msg.status_code == 200 and msg.json()["content"][0]["text"] == "Echo: pong"
    assert msg.json()["model"] == "threadgate-local"
    data = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert "".join(e["delta"].get("text", "") for e in data if e["type"] == "content_block_delta") == "Echo: pang"
    assert gateway.fake.requests == []


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_idempotency_tells_bodies_apart_by_every_field_including_those_only_forwarded(gateway, path):
    key = gateway.mint()
    body = {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    extra = {"output_config": {"effort": "low"}} if path == "/v1/messages" else {"user": "u-2"}
    with gateway.client(key["secret"]) as c:
        first = c.post(path, json=body, headers={"Idempotency-Key": "k-1"})
        other = c.post(path, json={**body, **extra}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    assert other.status_code == 409  # a different body under the same key is not the first answer replayed


def test_a_thread_alternating_claude_and_gpt_with_tools_stays_valid_for_each(gateway_factory, fake_openai):
    """Each upstream gets the whole thread, tool calls of the other family included, in a shape it
    accepts (the fakes refuse what the real APIs refuse: orphan tool results, unanswered calls)."""
    from tests.fakes.fake_anthropic import FakeReply as ClaudeReply
    from tests.fakes.fake_anthropic import FakeToolUse
    from tests.fakes.fake_openai import request_problem
    from tests.fakes.webhook_receivers import running_webhook_receiver
    from tests.integration.test_tool_loop import assert_valid_anthropic_history, register

    fake_openai.reset()
    gw = gateway_factory(allow_private_webhooks=True, webhook_backoff_base_s=0.01,
                         openai_api_key=fake_openai.api_key, openai_base_url=fake_openai.v1_url)
    claude, gpt = _model(gw, "anthropic"), _model(gw, "openai")
    with running_webhook_receiver() as receiver:
        tool = register(gw, receiver, "lookup_account", "/echo")
        key = gw.mint()
        gw.fake.enqueue(ClaudeReply(tool_uses=[FakeToolUse("lookup_account", {"account_id": "a1"})]),
                        ClaudeReply(text="Plan pro."),
                        ClaudeReply(tool_uses=[FakeToolUse("lookup_account", {"account_id": "a3"})]),
                        ClaudeReply(text="Done."))
        fake_openai.enqueue(GPTReply(tool_calls=[FakeToolCall("lookup_account", {"account_id": "a2"}),
                                                 FakeToolCall("lookup_account", {"account_id": "a2b"})]),
                            GPTReply(text="Plan team."))
        with gw.client(key["secret"]) as c:
            thread = c.post("/v1/threads", json={}).json()["id"]
            for model in (claude, gpt, claude):
                r = c.post(f"/v1/threads/{thread}/messages", json={
                    "model": model.id, "max_tokens": 300, "content": f"look it up on {model.id}", "tools": [tool["id"]]})
                assert r.status_code == 200, r.text
    for request in fake_openai.requests:
        assert request_problem(request.body) is None
    last_claude = gw.fake.requests[-1].body["messages"]
    assert_valid_anthropic_history(last_claude)
    gpt_calls = [b for m in last_claude if m["role"] == "assistant" for b in m["content"]
                 if isinstance(b, dict) and b.get("type") == "tool_use" and b["input"]["account_id"].startswith("a2")]
    assert len(gpt_calls) == 2  # GPT's parallel calls reached Claude as tool_use blocks, answered
