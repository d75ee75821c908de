"""The client libraries apps actually use, pointed at the gateway with only a base URL changed
(issue #9): LangChain (ChatOpenAI, ChatAnthropic), the OpenAI Agents SDK and the Vercel AI SDK,
each against a GPT and a Claude model, plain, streamed, with tools and with structured output.
Each library's default is used unmodified: for a current GPT that is the Responses API
(`/v1/responses`) for LangChain's ChatOpenAI, the Agents SDK and the AI SDK's `openai(model)`.

The fake upstreams here call a tool when one is offered (`tool_calling_responder`) and answer
structured-output requests with JSON that fits the schema, as a model would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fractions import Fraction
from math import ceil
from pydantic import BaseModel

from tests.fakes import fake_anthropic, fake_openai

AISDK_DIR = Path(__file__).resolve().parents[1] / "clients" / "aisdk"


class Weather(BaseModel):
    city: str
    temperature_c: float
    conditions: list[str]


@pytest.fixture
def gw(gateway_with_openai):
    gateway_with_openai.fake.responder = fake_anthropic.tool_calling_responder
    gateway_with_openai.openai_fake.responder = fake_openai.tool_calling_responder
    return gateway_with_openai


def _models(gw) -> dict[str, Any]:
    # Models that refuse no parameter (tests/integration/test_model_rules.py has those rules); the
    # current GPT, which LangChain's ChatOpenAI sends to /v1/responses by itself.
    return {"openai": gw.runtime.catalog.get("gpt-6.1-sol"), "anthropic": gw.runtime.catalog.get("claude-sonnet-4-6")}


def _billed(gw, key: dict[str, Any]) -> int:
    with gw.admin() as admin:
        return admin.get(f"/v1/keys/{key['id']}/usage").json()["request_count"]


SOL_BASE_USD = (Fraction(2), Fraction(10), Fraction("0.1"))  # gpt-6.1-sol: input, output, cached input per MTok
MARKUP = Fraction("1.07")


def _assert_gpt_billed_once_each(gw, key: dict[str, Any]) -> None:
    """Every call the library made left exactly one usage event, priced at gpt-6.1-sol's default
    tier, base input size (README, Billing: tokens × price, rounded up, × markup, rounded up)."""
    with gw.admin() as admin:
        events = admin.get(f"/v1/keys/{key['id']}/usage").json()["events"]
    assert len(events) == len(gw.openai_fake.requests)
    usd_in, usd_out, usd_cached = SOL_BASE_USD
    for event in events:
        assert (event["model"], event["service_tier"], event["price_tier"]) == ("gpt-6.1-sol", "default", "base")
        upstream = ceil(usd_in * event["input_tokens"] + usd_out * event["output_tokens"]
                        + usd_cached * event["cache_read_input_tokens"])
        assert event["input_tokens"] > 0 and event["cost_micros"] == ceil(upstream * MARKUP)


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"4 degrees in {city}"


# --- LangChain ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_langchain_chat_openai(gw, provider):
    from langchain_openai import ChatOpenAI

    model, key = _models(gw)[provider], gw.mint()
    llm = ChatOpenAI(model=model.id, base_url=gw.url + "/v1", api_key=key["secret"], max_retries=0)
    assert llm.invoke("hello there").content == "Fake reply to: hello there"
    assert "".join(chunk.content for chunk in llm.stream("stream this")) == "Fake reply to: stream this"
    weather = llm.with_structured_output(Weather).invoke("Weather in Oslo?")  # json_schema, strict
    assert isinstance(weather, Weather)
    called = llm.bind_tools([get_weather], strict=True).invoke("What is the weather in Oslo?")
    assert called.tool_calls[0]["name"] == "get_weather" and called.tool_calls[0]["args"] == {"city": "example"}
    upstream = gw.openai_fake if provider == "openai" else gw.fake
    tool = upstream.requests[-1].body["tools"][0]
    assert (tool.get("function") or tool)["strict"] is True  # strict reaches either family
    assert _billed(gw, key) == 4
    if provider == "openai":  # unmodified ChatOpenAI: gpt-6.x goes to the Responses API
        # LangChain's own routing for gpt-6.x: Responses once tools are bound (or reasoning and other
        # Responses-only settings are), Chat Completions otherwise
        paths = [r.path for r in upstream.requests]
        assert paths == ["/v1/chat/completions"] * 3 + ["/v1/responses"]
        from langchain_core.messages import HumanMessage, ToolMessage

        tools = llm.bind_tools([get_weather])
        history = [HumanMessage("What is the weather in Oslo?"), called,
                   ToolMessage("4 degrees in Oslo", tool_call_id=called.tool_calls[0]["id"])]
        assert tools.invoke(history).content[0]["text"] == "Fake reply to: What is the weather in Oslo?"
        assert upstream.requests[-1].body["input"][-1]["type"] == "function_call_output"
        reasoning = ChatOpenAI(model=model.id, base_url=gw.url + "/v1", api_key=key["secret"], max_retries=0,
                               reasoning={"effort": "low"})
        streamed = "".join(b.get("text", "") for c in reasoning.stream("stream this") for b in c.content)
        assert streamed == "Fake reply to: stream this" and upstream.requests[-1].body["stream"] is True
        assert [r.path for r in upstream.requests][-2:] == ["/v1/responses"] * 2
        _assert_gpt_billed_once_each(gw, key)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_langchain_chat_anthropic(gw, provider):
    from langchain_anthropic import ChatAnthropic

    model, key = _models(gw)[provider], gw.mint()
    llm = ChatAnthropic(model=model.id, base_url=gw.url, api_key=key["secret"], max_retries=0, max_tokens=1000)
    assert llm.invoke("hello there").content == "Fake reply to: hello there"
    assert "".join(chunk.content for chunk in llm.stream("stream this") if isinstance(chunk.content, str)) == (
        "Fake reply to: stream this")
    weather = llm.with_structured_output(Weather).invoke("Weather in Oslo?")
    assert isinstance(weather, Weather)
    called = llm.bind_tools([get_weather]).invoke("What is the weather in Oslo?")
    assert called.tool_calls[0]["name"] == "get_weather"
    assert _billed(gw, key) == 4


# --- OpenAI Agents SDK ----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_openai_agents_sdk_with_strict_tools_and_structured_output(gw, provider):
    """GPT through the SDK's default model (OpenAIResponsesModel, the Responses API); Claude through
    OpenAIChatCompletionsModel (the Responses API is served for OpenAI models only)."""
    from agents import (Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, RunConfig, Runner,
                        function_tool, set_tracing_disabled)
    from agents.models.openai_provider import OpenAIProvider
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace export to OpenAI from a test
    model, key = _models(gw)[provider], gw.mint()
    client = AsyncOpenAI(base_url=gw.url + "/v1", api_key=key["secret"], max_retries=0)
    if provider == "openai":  # the SDK's default provider, given only the gateway's client
        config = RunConfig(model_provider=OpenAIProvider(openai_client=client))
        chosen: Any = model.id
        assert isinstance(config.model_provider.get_model(model.id), OpenAIResponsesModel)
    else:
        config, chosen = RunConfig(), OpenAIChatCompletionsModel(model=model.id, openai_client=client)
    agent = Agent(name="weather", instructions="Be brief.", tools=[function_tool(get_weather)], model=chosen)
    result = Runner.run_sync(agent, "What is the weather in Oslo?", run_config=config)
    assert result.final_output == "Fake reply to: What is the weather in Oslo?"
    upstream = gw.openai_fake if provider == "openai" else gw.fake
    first, second = (r.body for r in upstream.requests)
    tool = first["tools"][0]
    if provider == "openai":  # the Agents SDK marks every tool strict; it must reach the model
        assert tool["strict"] is True and tool["parameters"]["additionalProperties"] is False
        call = next(i for i in second["input"] if i.get("type") == "function_call")
        assert second["input"][-1] == {"type": "function_call_output", "call_id": call["call_id"],
                                       "output": "4 degrees in example"}
    else:
        assert tool["strict"] is True and tool["input_schema"]["additionalProperties"] is False
        assert second["messages"][-1]["content"][0]["content"] == "4 degrees in example"

    typed = Agent(name="typed", instructions="Answer as JSON.", output_type=Weather, model=chosen)
    assert isinstance(Runner.run_sync(typed, "Weather in Oslo?", run_config=config).final_output, Weather)
    if provider == "openai":
        assert {r.path for r in gw.openai_fake.requests} == {"/v1/responses"}  # the SDK's default
        _assert_gpt_billed_once_each(gw, key)


# --- Vercel AI SDK (Node) ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def aisdk() -> Path:
    """The AI SDK installed from its lock file (npm ci), once per lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js is not installed: the Vercel AI SDK test needs node and npm")
    marker = AISDK_DIR / "node_modules" / ".installed-from-lock"
    lock = (AISDK_DIR / "package-lock.json").read_bytes()
    if not marker.exists() or marker.read_bytes() != lock:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AISDK_DIR, check=True,
                       timeout=600)
        marker.write_bytes(lock)
    return AISDK_DIR


def test_vercel_ai_sdk(gw, aisdk):
    models, key = _models(gw), gw.mint()
    env = {**os.environ, "BASE_URL": gw.url, "API_KEY": key["secret"],
           "GPT_MODEL": models["openai"].id, "CLAUDE_MODEL": models["anthropic"].id}
    run = subprocess.run(["node", "check.mjs"], cwd=aisdk, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(results) == {"gpt", "claude_via_chat", "claude", "gpt_via_messages"}
    for name, got in results.items():
        assert got["text"] == f"Fake reply to: hello from {name}", name
        assert got["usage"]["output"] == 6 and got["usage"]["input"] > 0, name
        assert got["streamed"] == f"Fake reply to: stream for {name}", name
        assert set(got["structured"]) == {"city", "temperatureC", "conditions"}, name
        assert got["toolCalls"] == [{"name": "weather", "input": {"city": "example"}}], name
        assert got["finalText"] == "Fake reply to: What is the weather in Oslo? weather", name
    gpt_calls = [r for r in gw.openai_fake.requests if r.path == "/v1/responses"]  # openai(model): Responses
    assert gpt_calls and all("input" in r.body for r in gpt_calls)
    gpt_tool = next(r.body["tools"][0] for r in gpt_calls if r.body.get("tools"))
    assert gpt_tool["strict"] is True  # the Responses provider's strict tool, as sent
    claude_tools = [r.body["tools"][0] for r in gw.fake.requests if r.body.get("tools")]
    assert claude_tools and all(t["strict"] is True for t in claude_tools)  # translated, and as sent
