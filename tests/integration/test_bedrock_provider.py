"""Amazon Bedrock through real boto3 over HTTP, against a fake Bedrock runtime that speaks the
event-stream framing botocore decodes (tests/fakes/fake_bedrock.py): create, stream (text and
tool use), errors, usage; then a thread whose turns alternate Claude on Anthropic, GPT on OpenAI
and Claude on Bedrock, with tools, staying valid for each upstream."""

from __future__ import annotations

import json
from fractions import Fraction
from math import ceil
from typing import Any

import pytest

from threadgate.domain.errors import InvalidRequest, PermissionDenied, RateLimited, UpstreamOverloaded
from threadgate.providers import UpstreamStreamBroken
from threadgate.providers.anthropic.stream_accumulator import MessageAccumulator
from threadgate.providers.bedrock.client import BedrockProvider
from tests.fakes.fake_anthropic import FakeReply as AnthropicReply
from tests.fakes.fake_anthropic import FakeToolUse
from tests.fakes.fake_bedrock import BedrockReply, frame, running_fake_bedrock
from tests.fakes.fake_openai import FakeReply as OpenAIReply
from tests.fakes.fake_openai import FakeToolCall, running_fake_openai
from tests.fakes.webhook_receivers import running_webhook_receiver

SONNET = "us.anthropic.claude-sonnet-4-6"
TOOL = {"name": "lookup", "description": "look an account up", "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}}}


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch):
    """The function's IAM role, as boto3's default chain finds it (here: environment)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-fake-secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def fake():
    with running_fake_bedrock() as running:
        yield running


@pytest.fixture
def provider(fake):
    fake.reset()
    return BedrockProvider("us-east-1", endpoint_url=fake.endpoint_url, timeout_s=10, connect_timeout_s=5, attempts=1)


def _request(**extra: Any) -> dict[str, Any]:
    return {"model": SONNET, "max_tokens": 300, "system": "be brief",
            "messages": [{"role": "user", "content": "what is the balance of acct 7?"}], **extra}


async def _stream(provider, request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    acc, events = MessageAccumulator(), []
    async for event in provider.stream(request):
        acc.feed(event)
        events.append(event)
    return events, acc.message()


def test_the_fake_speaks_the_real_framing():
    """botocore's own decoder parses our frames, CRCs checked."""
    from botocore.eventstream import EventStreamBuffer

    buf = EventStreamBuffer()
    buf.add_data(frame({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}'))
    (message,) = list(buf)
    assert message.headers[":event-type"] == "messageStart" and json.loads(message.payload) == {"role": "assistant"}
    broken = bytearray(frame({":event-type": "x"}, b"{}"))
    broken[-1] ^= 1
    buf = EventStreamBuffer()
    buf.add_data(bytes(broken))
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        list(buf)


@pytest.mark.anyio
async def test_create_text_and_usage(provider, fake):
    fake.enqueue(BedrockReply(text="Balance is 42.", input_tokens=120, output_tokens=5, cache_read=30, cache_write=7))
    message = await provider.create(_request(temperature=0.2, top_k=5, stop_sequences=["END"], metadata={"user_id": "u1"}))
    assert message["content"] == [{"type": "text", "text": "Balance is 42."}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 120, "output_tokens": 5, "cache_read_input_tokens": 30,
                                "cache_creation_input_tokens": 7}
    model_id, sent = fake.requests[-1]
    assert model_id == SONNET
    assert sent["system"] == [{"text": "be brief"}]
    assert sent["inferenceConfig"] == {"maxTokens": 300, "temperature": 0.2, "stopSequences": ["END"]}
    assert sent["additionalModelRequestFields"] == {"top_k": 5}
    assert sent["requestMetadata"] == {"user_id": "u1"}


@pytest.mark.anyio
async def test_create_tool_use_and_its_result_round_trip(provider, fake):
    fake.enqueue(BedrockReply(tool_uses=[("lookup", {"id": "7"})]), BedrockReply(text="It is 42."))
    first = await provider.create(_request(tools=[TOOL], tool_choice={"type": "any"}))
    (use,) = first["content"]
    assert (use["type"], use["name"], use["input"], first["stop_reason"]) == ("tool_use", "lookup", {"id": "7"}, "tool_use")
    assert fake.requests[-1][1]["toolConfig"] == {"tools": [{"toolSpec": {"name": "lookup", "description": TOOL["description"],
                                                                          "inputSchema": {"json": TOOL["input_schema"]}}}],
                                                  "toolChoice": {"any": {}}}
    history = _request(tools=[TOOL])["messages"] + [
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "balance 42"}]}]
    second = await provider.create(_request(tools=[TOOL], messages=history))
    assert second["content"] == [{"type": "text", "text": "It is 42."}]
    assert fake.requests[-1][1]["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": use["id"], "content": [{"text": "balance 42"}]}}]


@pytest.mark.anyio
async def test_stream_text_gives_the_same_message_as_create(provider, fake):
    fake.enqueue(BedrockReply(text="one two three", input_tokens=50, output_tokens=3))
    events, message = await _stream(provider, _request())
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and kinds.count("content_block_delta") == 3
    assert message["content"] == [{"type": "text", "text": "one two three "}]
    # usage from the `metadata` event, reported in the final message_delta
    assert events[-2]["usage"]["input_tokens"] == 50 and events[-2]["usage"]["output_tokens"] == 3


@pytest.mark.anyio
async def test_stream_tool_use_and_signed_reasoning(provider, fake):
    fake.enqueue(BedrockReply(reasoning="check the ledger", tool_uses=[("lookup", {"id": "7", "deep": [1, 2]})]))
    _, message = await _stream(provider, _request(tools=[TOOL]))
    thinking, use = message["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "check the ledger" and thinking["signature"]
    assert use["type"] == "tool_use" and use["input"] == {"id": "7", "deep": [1, 2]}
    assert message["stop_reason"] == "tool_use"


@pytest.mark.anyio
@pytest.mark.parametrize("code,error,status", [
    ("ThrottlingException", RateLimited, 429),
    ("ValidationException", InvalidRequest, 400),
    ("AccessDeniedException", PermissionDenied, 403),
    ("ServiceUnavailableException", UpstreamOverloaded, 503),
])
async def test_errors_are_mapped(provider, fake, code, error, status):
    fake.fail_next(code, "no sk-ant-secret0123456789 here")
    with pytest.raises(error) as raised:
        await provider.create(_request())
    assert raised.value.status == status
    assert "sk-ant-secret" not in raised.value.message
    if code == "AccessDeniedException":
        assert "model access" in raised.value.message and SONNET in raised.value.message
    fake.fail_next(code)
    with pytest.raises(error):
        await _stream(provider, _request())


@pytest.mark.anyio
async def test_an_exception_event_mid_stream_is_a_broken_stream(provider, fake):
    fake.enqueue(BedrockReply(text="a b c d e f"))
    fake.stream_exception_after(3, "modelStreamErrorException")
    with pytest.raises(UpstreamStreamBroken):
        await _stream(provider, _request())


@pytest.mark.anyio
async def test_blocks_bedrock_cannot_carry_are_refused_by_name(provider, fake):
    url_image = {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}
    with pytest.raises(InvalidRequest) as raised:
        await provider.create(_request(messages=[url_image]))
    assert raised.value.param == "messages[0].content[0].source"
    assert fake.requests == []


# --- through the gateway ------------------------------------------------------------------------


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_alternating_claude_gpt_and_claude_on_bedrock_with_tools_stays_valid(gateway_factory, fake):
    fake.reset()
    with running_fake_openai() as openai_fake, running_webhook_receiver() as receiver:
        gw = gateway_factory(openai_api_key=openai_fake.api_key, openai_base_url=openai_fake.v1_url,
                             bedrock_region="us-east-1", bedrock_endpoint_url=fake.endpoint_url,
                             allow_private_webhooks=True, webhook_backoff_base_s=0.01)
        with gw.admin() as admin:
            tool = admin.post("/v1/tools", json={**{k: TOOL[k] for k in ("name", "description", "input_schema")},
                                                  "webhook_url": receiver.url("/echo")}).json()
        receiver.secrets[tool["id"]] = tool["secret"]
        key = gw.mint()
        turns = [
            ("claude-sonnet-4-6", lambda: gw.fake.enqueue(AnthropicReply(text="Looking.", tool_uses=[FakeToolUse("lookup", {"id": "1"})]),
                                                          AnthropicReply(text="Account 1 is fine."))),
            ("gpt-6.1-sol", lambda: openai_fake.enqueue(OpenAIReply(tool_calls=[FakeToolCall("lookup", {"id": "2"})]),
                                                        OpenAIReply(text="Account 2 is fine."))),
            ("bedrock/anthropic.claude-sonnet-5-5", lambda: fake.enqueue(BedrockReply(text="Checking 3.", tool_uses=[("lookup", {"id": "3"})]),
                                                                         BedrockReply(text="Account 3 is fine."))),
            ("claude-sonnet-4-6", lambda: gw.fake.enqueue(AnthropicReply(text="All good."))),
            ("bedrock/anthropic.claude-sonnet-4-6", lambda: fake.enqueue(BedrockReply(text="Done."))),
        ]
        with gw.client(key["secret"]) as c:
            thread = c.post("/v1/threads", json={}).json()["id"]
            for n, (model, script) in enumerate(turns):
                script()
                r = c.post(f"/v1/threads/{thread}/messages",
                           json={"model": model, "max_tokens": 200, "content": f"check account {n + 1}", "tools": [tool["id"]]})
                assert r.status_code == 200, (model, r.text)
        with gw.admin() as admin:
            events = admin.get(f"/v1/keys/{key['id']}/usage").json()["events"]
    # every upstream accepted every request (each fake refuses an invalid history with a 400)
    assert {e["provider"] for e in events} == {"anthropic", "openai", "bedrock"}
    assert all(e["status"] == "ok" for e in events)
    # Sonnet 5.5 on Bedrock said its between-tools text as signed reasoning: it went back signed
    bedrock_followup = [body for model_id, body in fake.requests if model_id == "us.anthropic.claude-sonnet-5-5"][-1]
    reasoning = [b for m in bedrock_followup["messages"] for b in m["content"] if "reasoningContent" in b]
    assert reasoning and all(b["reasoningContent"]["reasoningText"]["signature"] for b in reasoning)
    # the Bedrock calls were billed at Bedrock's (regional) price from the catalog
    sonnet_bedrock = [e for e in events if e["model"] == "bedrock/anthropic.claude-sonnet-4-6"][0]
    upstream = ceil(Fraction("3.3") * sonnet_bedrock["input_tokens"] + Fraction("16.5") * sonnet_bedrock["output_tokens"])
    assert sonnet_bedrock["upstream_cost_micros"] == upstream
