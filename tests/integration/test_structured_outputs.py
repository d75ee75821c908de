"""Structured output end to end with the official SDKs' parse helpers, via GPT and via Claude,
through both endpoints (issue #9); and the fakes' structured answers checked by the same helpers
pointed straight at them."""

from __future__ import annotations

import anthropic
import openai
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from tests.fakes.fake_anthropic import FakeReply, FakeToolUse


class Weather(BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]


class Forecast(BaseModel):
    days: list[Weather]
    source: str


def _model(gw, provider: str):
    return next(m for m in gw.runtime.catalog if m.provider == provider)


def _oai(gw, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=gw.url + "/v1", max_retries=0)


def _claude_sdk(gw, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0)


ASK = [{"role": "user", "content": "Forecast for Oslo, please."}]


def test_openai_parse_via_gpt(gateway_with_openai):
    gw = gateway_with_openai
    completion = _oai(gw, gw.mint()["secret"]).chat.completions.parse(
        model=_model(gw, "openai").id, messages=ASK, response_format=Forecast)
    assert isinstance(completion.choices[0].message.parsed, Forecast)
    sent = gw.openai_fake.requests[-1].body["response_format"]
    assert sent == {"type": "json_schema",
                    "json_schema": {"name": "Forecast", "schema": to_strict_json_schema(Forecast), "strict": True}}


def test_openai_parse_via_claude(gateway):
    claude = _model(gateway, "anthropic")
    completion = _oai(gateway, gateway.mint()["secret"]).chat.completions.parse(
        model=claude.id, messages=ASK, response_format=Forecast)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Forecast) and isinstance(parsed.days[0], Weather)
    sent = gateway.fake.requests[-1].body
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": to_strict_json_schema(Forecast)}}
    assert sent["max_tokens"] == claude.max_output_tokens  # the caller set none: the model's own limit


def test_openai_parse_of_strict_function_tools_via_claude(gateway):
    gateway.fake.enqueue(FakeReply(tool_uses=[FakeToolUse("Weather", {"city": "Oslo", "temperature_c": 3.5, "conditions": ["snow"]})]))
    completion = _oai(gateway, gateway.mint()["secret"]).chat.completions.parse(
        model=_model(gateway, "anthropic").id, messages=ASK, tools=[openai.pydantic_function_tool(Weather)])
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.parsed_arguments == Weather(city="Oslo", temperature_c=3.5, conditions=["snow"])
    (tool,) = gateway.fake.requests[-1].body["tools"]
    assert tool["strict"] is True and tool["input_schema"] == to_strict_json_schema(Weather)


def test_anthropic_parse_via_claude_and_via_gpt(gateway_with_openai):
    gw = gateway_with_openai
    client = _claude_sdk(gw, gw.mint()["secret"])
    for provider, fake in (("anthropic", gw.fake), ("openai", gw.openai_fake)):
        message = client.messages.parse(model=_model(gw, provider).id, max_tokens=500, messages=ASK,
                                        output_format=Forecast)
        assert isinstance(message.parsed_output, Forecast), provider
    sent = gw.openai_fake.requests[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"] == gw.fake.requests[-1].body["output_config"]["format"]["schema"]


# --- the fakes answer structured output as the real APIs do: the SDK helpers are the judge --------


def test_the_fake_openai_answers_the_parse_helper(fake_openai):
    client = openai.OpenAI(api_key=fake_openai.api_key, base_url=fake_openai.v1_url, max_retries=0)
    completion = client.chat.completions.parse(model="gpt-fake-1", messages=ASK, response_format=Forecast)
    assert isinstance(completion.choices[0].message.parsed, Forecast)
    with client.chat.completions.stream(model="gpt-fake-1", messages=ASK, response_format=Weather) as stream:
        assert isinstance(stream.get_final_completion().choices[0].message.parsed, Weather)


def test_the_fake_openai_refuses_a_strict_schema_the_real_api_refuses(fake_openai):
    client = openai.OpenAI(api_key=fake_openai.api_key, base_url=fake_openai.v1_url, max_retries=0)
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    try:
        client.chat.completions.create(model="gpt-fake-1", messages=ASK, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": loose, "strict": True}})
    except openai.BadRequestError as exc:
        assert "additionalProperties" in exc.message
    else:
        raise AssertionError("a loose schema with strict: true must be refused")


def test_the_fake_anthropic_answers_the_parse_helper(fake_anthropic):
    client = anthropic.Anthropic(api_key=fake_anthropic.api_key, base_url=fake_anthropic.base_url, max_retries=0)
    message = client.messages.parse(model="claude-fake-1", max_tokens=500, messages=ASK, output_format=Forecast)
    assert isinstance(message.parsed_output, Forecast)
    with client.messages.stream(model="claude-fake-1", max_tokens=500, messages=ASK, output_format=Weather) as stream:
        assert isinstance(stream.get_final_message().parsed_output, Weather)
