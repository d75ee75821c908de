"""Nothing a client sends is silently lost (issue #9), field by field, through the real gateway.

The fields are enumerated from the installed official SDKs' request types, so a field a new SDK
adds fails `test_every_sdk_request_field_is_handled` until it has a rule in
`providers/field_map.py` and a case here. For every case:
- same family (Chat Completions → GPT, Messages → Claude): the field reaches the fake upstream
  exactly as sent (or is refused by name where the gateway cannot meter it);
- cross family: the fake upstream receives the expected translation, or the gateway answers 400
  naming the field and calls nothing.
The expected translations are written out here by hand, independently of the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from anthropic.types.message_create_params import MessageCreateParamsStreaming
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from threadgate.providers import field_map

SDK_CHAT_FIELDS = CompletionCreateParamsStreaming.__required_keys__ | CompletionCreateParamsStreaming.__optional_keys__
SDK_MESSAGES_FIELDS = MessageCreateParamsStreaming.__required_keys__ | MessageCreateParamsStreaming.__optional_keys__
# Sampling fields the current Anthropic SDK no longer sends; older Claude models still take them
# (and thread turns accept them, API.md §6.1), so the table keeps rules for them.
LEGACY_MESSAGES_FIELDS = {"temperature", "top_p", "top_k"}

REFUSED = "refused"  # 400 naming the field, nothing sent upstream
UNCHANGED = "unchanged"  # the field reaches the upstream as sent
ABSENT = object()  # in an expected translation: this key is not sent


@dataclass(frozen=True)
class Case:
    field: str
    extra: dict[str, Any]  # added to the base body: the field and what it needs beside it
    cross: Any  # REFUSED, or the keys the translated body must have (ABSENT: must not have)
    same: Any = UNCHANGED  # UNCHANGED, REFUSED, or the keys the forwarded body must have
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.field}:{sorted(self.extra.items())!s:.60}"


STRICT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
OPENAI_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": STRICT_SCHEMA, "strict": True}}
CLAUDE_TOOL = {"name": "get_weather", "description": "Weather", "input_schema": STRICT_SCHEMA, "strict": True}
FUNCTION = {"name": "get_weather", "parameters": STRICT_SCHEMA}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather", "schema": STRICT_SCHEMA, "strict": True}}

CHAT_CASES = [
    Case("model", {}, {"model": "<claude upstream id>"}, {"model": "<gpt upstream id>"}),
    Case("messages", {"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hello"}]},
         {"system": "be brief", "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}),
    Case("max_completion_tokens", {"max_completion_tokens": 77}, {"max_tokens": 77}),
    Case("max_tokens", {"max_tokens": 66}, {"max_tokens": 66}),
    Case("stream", {"stream": True}, {"stream": True}),
    Case("stream_options", {"stream": True, "stream_options": {"include_usage": True}},
         {"stream": True, "stream_options": ABSENT}),
    Case("stream_options", {"stream": True, "stream_options": {"include_obfuscation": False}},
         {"stream": True, "stream_options": ABSENT},
         {"stream_options": {"include_obfuscation": False, "include_usage": True}}),
    Case("temperature", {"temperature": 0.5}, {"temperature": 0.5}),
    Case("temperature", {"temperature": 1.5}, REFUSED),
    Case("top_p", {"top_p": 0.9}, {"top_p": 0.9}),
    Case("stop", {"stop": ["END"]}, {"stop_sequences": ["END"]}),
    Case("stop", {"stop": "END"}, {"stop_sequences": ["END"]}),
    Case("n", {"n": 2}, REFUSED),
    Case("n", {"n": 1}, {"n": ABSENT}),
    Case("tools", {"tools": [OPENAI_TOOL]}, {"tools": [CLAUDE_TOOL]}),
    Case("tools", {"tools": [{"type": "custom", "custom": {"name": "grammar_tool"}}]}, REFUSED),
    Case("functions", {"functions": [FUNCTION]},
         {"tools": [{"name": "get_weather", "input_schema": STRICT_SCHEMA}]}),
    Case("tool_choice", {"tools": [OPENAI_TOOL], "tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
    Case("tool_choice", {"tools": [OPENAI_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
         {"tool_choice": {"type": "tool", "name": "get_weather"}}),
    Case("function_call", {"functions": [FUNCTION], "function_call": {"name": "get_weather"}},
         {"tool_choice": {"type": "tool", "name": "get_weather"}}),
    Case("parallel_tool_calls", {"tools": [OPENAI_TOOL], "parallel_tool_calls": False},
         {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    Case("response_format", {"response_format": JSON_SCHEMA},
         {"output_config": {"format": {"type": "json_schema", "schema": STRICT_SCHEMA}}}),
    Case("response_format", {"response_format": {"type": "json_object"}}, REFUSED),
    Case("response_format", {"response_format": {"type": "text"}}, {"output_config": ABSENT}),
    Case("reasoning_effort", {"reasoning_effort": "high"},
         {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}),
    Case("reasoning_effort", {"reasoning_effort": "none"}, {"thinking": {"type": "disabled"}}),
    Case("user", {"user": "end-user-1"}, {"metadata": {"user_id": "end-user-1"}}),
    Case("safety_identifier", {"safety_identifier": "sid-1", "user": "u"}, {"metadata": {"user_id": "sid-1"}}),
    Case("prompt_cache_key", {"prompt_cache_key": "tenant-1"}, {"cache_control": {"type": "ephemeral"}}),
    Case("prompt_cache_retention", {"prompt_cache_retention": "24h"}, {"cache_control": {"type": "ephemeral", "ttl": "1h"}}),
    Case("prompt_cache_options", {"prompt_cache_options": {"mode": "implicit", "ttl": "30m"}},
         {"cache_control": {"type": "ephemeral", "ttl": "1h"}}),
    Case("prompt_cache_options", {"prompt_cache_options": {"mode": "explicit"}}, REFUSED),
    Case("seed", {"seed": 7}, REFUSED),
    Case("frequency_penalty", {"frequency_penalty": 0.5}, REFUSED),
    Case("frequency_penalty", {"frequency_penalty": 0}, {"frequency_penalty": ABSENT}),
    Case("presence_penalty", {"presence_penalty": 0.5}, REFUSED),
    Case("logit_bias", {"logit_bias": {"50256": -100}}, REFUSED),
    Case("logprobs", {"logprobs": True}, REFUSED),
    Case("top_logprobs", {"top_logprobs": 3}, REFUSED),
    Case("metadata", {"metadata": {"order": "A-1"}}, REFUSED),
    Case("store", {"store": True}, REFUSED),
    Case("store", {"store": False}, {"store": ABSENT}),
    Case("verbosity", {"verbosity": "low"}, REFUSED),
    Case("verbosity", {"verbosity": "medium"}, {"verbosity": ABSENT}),
    Case("moderation", {"moderation": {"model": "omni-moderation-latest"}}, REFUSED),
    Case("prediction", {"prediction": {"type": "content", "content": "hello there"}}, REFUSED),
    Case("service_tier", {"service_tier": "default"}, {"service_tier": ABSENT}),
    Case("service_tier", {"service_tier": "priority"}, REFUSED),  # priced for the GPT model (test_responses_route.py)
    Case("service_tier", {"service_tier": "scale"}, REFUSED, REFUSED),
    Case("modalities", {"modalities": ["text"]}, {"modalities": ABSENT}),
    Case("modalities", {"modalities": ["text", "audio"]}, REFUSED, REFUSED),
    Case("audio", {"audio": {"voice": "alloy", "format": "wav"}}, REFUSED, REFUSED),
    Case("web_search_options", {"web_search_options": {}}, REFUSED, REFUSED),
]

OUTPUT_FORMAT = {"type": "json_schema", "schema": STRICT_SCHEMA}
MESSAGES_CASES = [
    Case("model", {}, {"model": "<gpt upstream id>"}, {"model": "<claude upstream id>"}),
    Case("messages", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]},
         {"messages": [{"role": "user", "content": "hello"}]}),
    Case("system", {"system": "be brief"},
         {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}),
    Case("max_tokens", {"max_tokens": 50}, {"max_completion_tokens": 50}),
    Case("stream", {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
    Case("temperature", {"temperature": 0.5}, {"temperature": 0.5}),
    Case("top_p", {"top_p": 0.9}, {"top_p": 0.9}),
    Case("top_k", {"top_k": 5}, REFUSED),
    Case("stop_sequences", {"stop_sequences": ["END"]}, {"stop": ["END"]}),
    Case("tools", {"tools": [CLAUDE_TOOL]}, {"tools": [OPENAI_TOOL]}),
    Case("tools", {"tools": [{"type": "bash_20250124", "name": "bash"}]}, REFUSED),
    Case("tools", {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, REFUSED, REFUSED),
    Case("tool_choice", {"tools": [CLAUDE_TOOL], "tool_choice": {"type": "any"}}, {"tool_choice": "required"}),
    Case("tool_choice", {"tools": [CLAUDE_TOOL], "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
         {"tool_choice": "auto", "parallel_tool_calls": False}),
    Case("thinking", {"max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048}}, {"reasoning_effort": "low"}),
    Case("thinking", {"thinking": {"type": "adaptive"}}, {"reasoning_effort": ABSENT}),
    Case("thinking", {"thinking": {"type": "disabled"}}, {"reasoning_effort": "none"}),
    Case("output_config", {"output_config": {"format": OUTPUT_FORMAT}},
         {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": STRICT_SCHEMA, "strict": True}}}),
    Case("output_config", {"output_config": {"effort": "low"}}, {"reasoning_effort": "low"}),
    Case("metadata", {"metadata": {"user_id": "end-user-3"}}, {"safety_identifier": "end-user-3"}),
    Case("cache_control", {"cache_control": {"type": "ephemeral", "ttl": "1h"}}, {"prompt_cache_retention": "24h"}),
    Case("cache_control", {"cache_control": {"type": "ephemeral"}}, {"prompt_cache_retention": ABSENT}),
    Case("service_tier", {"service_tier": "standard_only"}, {"service_tier": "default"}),
    Case("service_tier", {"service_tier": "auto"}, {"service_tier": ABSENT}),
    Case("speed", {"speed": "standard"}, {"speed": ABSENT}),
    Case("speed", {"speed": "fast"}, REFUSED, REFUSED),
    Case("inference_geo", {"inference_geo": "global"}, {"inference_geo": ABSENT}),
    Case("inference_geo", {"inference_geo": "us"}, REFUSED, REFUSED),
    Case("diagnostics", {"diagnostics": {"previous_message_id": "msg_1"}}, REFUSED),
    Case("container", {"container": "container_1"}, REFUSED, REFUSED),
    Case("workspace_id", {}, REFUSED, REFUSED, headers={"anthropic-workspace-id": "wrkspc_1"}),
    Case("user_profile_id", {}, REFUSED, REFUSED, headers={"anthropic-user-profile-id": "prof_1"}),
    Case("betas", {}, REFUSED, REFUSED, headers={"anthropic-beta": "files-api-2025-04-14"}),
    Case("betas", {"tools": [CLAUDE_TOOL]}, {"tools": [OPENAI_TOOL]}, {"tools": [CLAUDE_TOOL]},
         headers={"anthropic-beta": "structured-outputs-2025-11-13,fine-grained-tool-streaming-2025-05-14"}),
]


def test_every_sdk_request_field_is_handled():
    """A field the installed SDKs can send and the table does not know fails here first."""
    assert not SDK_CHAT_FIELDS - set(field_map.CHAT.rules), "add a rule to field_map.CHAT"
    assert not SDK_MESSAGES_FIELDS - set(field_map.MESSAGES.rules), "add a rule to field_map.MESSAGES"
    for table, cases, sdk in ((field_map.CHAT, CHAT_CASES, SDK_CHAT_FIELDS), (field_map.MESSAGES, MESSAGES_CASES, SDK_MESSAGES_FIELDS)):
        extra_rules = {name for name, rule in table.rules.items() if name not in sdk and not rule.header}
        assert not extra_rules - LEGACY_MESSAGES_FIELDS, f"rules for fields the SDK does not send: {extra_rules}"
        assert set(table.rules) == {c.field for c in cases}, "every rule needs a case here"


@pytest.fixture(scope="module")
def gw(module_gateway_with_openai):
    return module_gateway_with_openai


@pytest.fixture(scope="module")
def secret(gw) -> str:
    return gw.mint()["secret"]  # no cap: every output limit is affordable, so none is lowered


@pytest.fixture(autouse=True)
def fresh_fakes(gw):
    for fake in (gw.fake, gw.openai_fake):
        fake.reset()
        fake.default_reply = None


def _models(gw) -> dict[str, Any]:
    """One model per provider that refuses no parameter (model rules have tests of their own:
    tests/integration/test_model_rules.py)."""
    from threadgate.domain.models import ModelRules

    by_provider = {}
    for model in gw.runtime.catalog:
        if model.rules == ModelRules():
            by_provider.setdefault(model.provider, model)
    return by_provider


def _send(gw, secret: str, path: str, body: dict[str, Any], headers: dict[str, str]):
    with gw.client(secret) as c:
        return c.post(path, json=body, headers=headers)


def _expect(case: Case, expected: Any, response, fake, models: dict[str, Any]) -> None:
    if expected == REFUSED:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        named = error.get("param") or error["message"]
        assert named.startswith(case.field) or named.startswith(f"body.{case.field}") or case.headers, error
        if case.headers:
            assert error["message"].startswith(case.field), error
        assert fake.requests == []
        return
    assert response.status_code == 200, response.text
    (request,) = fake.requests
    sent = request.body
    assert not set(case.headers) & set(request.headers), "a caller's header reached the upstream"
    if expected == UNCHANGED:
        assert sent[case.field] == case.extra[case.field]
        return
    for key, value in expected.items():
        if value is ABSENT:
            assert key not in sent, (key, sent.get(key))
        elif isinstance(value, str) and value.startswith("<") and value.endswith("upstream id>"):
            provider = "openai" if "gpt" in value else "anthropic"
            assert sent[key] == models[provider].upstream_id
        else:
            assert sent.get(key) == value, (key, sent.get(key))


@pytest.mark.parametrize("case", CHAT_CASES, ids=lambda c: c.id)
def test_chat_completions_field_same_family_and_cross_family(gw, secret, case: Case):
    models = _models(gw)
    base = {"messages": [{"role": "user", "content": "hello"}]}
    same = _send(gw, secret, "/v1/chat/completions", {**base, "model": models["openai"].id, **case.extra}, case.headers)
    _expect(case, case.same, same, gw.openai_fake, models)
    cross = _send(gw, secret, "/v1/chat/completions", {**base, "model": models["anthropic"].id, **case.extra}, case.headers)
    _expect(case, case.cross, cross, gw.fake, models)


@pytest.mark.parametrize("case", MESSAGES_CASES, ids=lambda c: c.id)
def test_messages_field_same_family_and_cross_family(gw, secret, case: Case):
    models = _models(gw)
    base = {"max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
    same = _send(gw, secret, "/v1/messages", {**base, "model": models["anthropic"].id, **case.extra}, case.headers)
    _expect(case, case.same, same, gw.fake, models)
    cross = _send(gw, secret, "/v1/messages", {**base, "model": models["openai"].id, **case.extra}, case.headers)
    _expect(case, case.cross, cross, gw.openai_fake, models)
