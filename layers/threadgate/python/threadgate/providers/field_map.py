"""Every request field of the two APIs the gateway speaks, and what happens to it (API.md §10).

ONE table per API drives both the behaviour and the field table in README.md and docs/api.md
(`python -m threadgate.providers.field_map` rewrites them; a test checks they are current):

- Same family (`/v1/chat/completions` to an OpenAI model, `/v1/messages` to a Claude model): the
  body goes upstream as it came. The gateway owns only the model id, the output limit (clamped to
  what the key can pay for, see `domain/passthrough.py`) and `stream_options.include_usage`, and
  refuses what it cannot meter or must own itself (`Rule.guard`, applied on every model). A field
  that is not in the table is forwarded too, so a new upstream field works on the day it ships.
- Cross family: each field is translated (`Rule.translate`), accepted without being sent when its
  value asks for nothing (`Rule.default`), or refused with 400 naming it (`param`) and saying why.
  A field that is not in the table is refused: nothing a client sends is silently lost.

The conversation itself (messages, content parts, tools) is translated in
`providers/openai/translate.py`; this module owns the request's top-level fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from threadgate.providers.openai import translate as tr
from threadgate.providers.openai.translate import as_array, as_object, as_string, invalid

Translate = Callable[[Any, Mapping[str, Any], dict[str, Any]], None]  # (value, source request, target request)


def _never(_: Any) -> bool:
    return False


@dataclass(frozen=True)
class Rule:
    same: str  # README: what same-family passthrough does
    cross: str  # README: the translation, or (translate=None) why there is none
    translate: Translate | None = None  # None: refused cross-family unless `default(value)`
    default: Callable[[Any], bool] = _never  # values that ask for nothing: accepted, not sent
    guard: Callable[[str, Any], None] | None = None  # raises for values refused on every model
    header: str | None = None  # the SDKs send it as this HTTP header, not in the body


@dataclass(frozen=True)
class Table:
    api: str  # the caller's API, e.g. "Chat Completions"
    own: str  # models of the same family
    other: str  # models reached by translation
    rules: Mapping[str, Rule]


# --- shared pieces -------------------------------------------------------------------------------


def _values(*values: Any) -> Callable[[Any], bool]:
    return lambda value: value in values


def _refuse_unless(allowed: Callable[[Any], bool], why: str) -> Callable[[str, Any], None]:
    def guard(name: str, value: Any) -> None:
        if value is not None and not allowed(value):
            shown = json.dumps(value)
            raise invalid(name, f"{shown if len(shown) <= 60 else shown[:57] + '...'} is refused: {why}")

    return guard


def _refuse_always(why: str) -> Callable[[str, Any], None]:
    return _refuse_unless(_never, why)


def _copy_to(target: str) -> Translate:
    def put(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
        out[target] = value

    return put


def _accept(_value: Any, _req: Mapping[str, Any], _out: dict[str, Any]) -> None:
    """Honoured by the gateway itself; nothing to send upstream."""


def _object(out: dict[str, Any], key: str) -> dict[str, Any]:
    return out.setdefault(key, {})


NOT_METERED = "not priced in the gateway's catalog, so it cannot be billed"
SERVER_TOOLS_WHY = "server tools carry per-use fees the usage report cannot meter"


# OpenAI service tiers: auto and default are the standard prices; priority and flex are served
# where the catalog prices them for the model (`price_tiers`; checked by `check_service_tier`, the
# reservation prices the tier asked for, settlement the tier OpenAI reports). Others (scale, fast,
# ultrafast) have no price list in the catalog.
PRICED_SERVICE_TIERS = ("priority", "flex")
SERVICE_TIER_SAME = (
    "auto and default forwarded; priority and flex forwarded where the catalog prices that tier for "
    f"the model, else refused; scale, fast and ultrafast refused: they are {NOT_METERED}"
)
_service_tier_guard = _refuse_unless(
    _values("auto", "default", *PRICED_SERVICE_TIERS), f"only auto, default, priority and flex are served; the other tiers are {NOT_METERED}"
)


def check_service_tier(model: Any, body: Mapping[str, Any]) -> None:
    """400 naming `service_tier` when it asks for a tier the catalog has no prices of for `model`
    (a `domain.models.ModelInfo`): the call could not be billed at what it costs."""
    tier = body.get("service_tier")
    if tier in PRICED_SERVICE_TIERS and tier not in model.price_tiers:
        raise invalid("service_tier", f"{json.dumps(tier)} is refused: {model.id} has no {tier} prices in the gateway's catalog, so it cannot be billed")


# --- Chat Completions -> Claude (Messages) ----------------------------------------------------------


def _chat_messages(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    system, out["messages"] = tr.openai_messages_to_anthropic(value)
    if system:
        out["system"] = system


def _chat_limit(name: str) -> Translate:
    def put(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
        out.setdefault("max_tokens", tr.positive_int(value, name))  # max_completion_tokens wins

    return put


def _chat_temperature(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    value = tr.number_between(value, "temperature", 0, 2)
    if value > 1:
        raise invalid("temperature", "Claude models take 0-1; values above 1 have no equivalent")
    out["temperature"] = value


def _chat_top_p(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    if tr.number_between(value, "top_p", 0, 1) != 1:  # 1 is a no-op, and some Claude models refuse it beside temperature
        out["top_p"] = value


def _chat_stop(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    stops = [value] if isinstance(value, str) else as_array(value, "stop")
    out["stop_sequences"] = [as_string(s, f"stop[{i}]") for i, s in enumerate(stops)]


def _chat_tools(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = as_array(value, "tools")
    out.setdefault("tools", []).extend(tr.tool_to_anthropic(t, f"tools[{i}]") for i, t in enumerate(tools))


def _chat_functions(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    functions = as_array(value, "functions")
    out.setdefault("tools", []).extend(tr.tool_to_anthropic(f, f"functions[{i}]") for i, f in enumerate(functions))


def _needs_tools(name: str, req: Mapping[str, Any]) -> None:
    if not (req.get("tools") or req.get("functions")):
        raise invalid(name, "is only allowed when tools are given")


def _chat_tool_choice(value: Any, req: Mapping[str, Any], out: dict[str, Any]) -> None:
    _needs_tools("tool_choice", req)
    out["tool_choice"] = tr.tool_choice_to_anthropic(value)


def _chat_function_call(value: Any, req: Mapping[str, Any], out: dict[str, Any]) -> None:
    _needs_tools("function_call", req)
    if isinstance(value, dict):
        value = {"type": "function", "function": {"name": value.get("name")}}
    out["tool_choice"] = tr.tool_choice_to_anthropic(value)


def _chat_parallel_tool_calls(value: Any, req: Mapping[str, Any], out: dict[str, Any]) -> None:
    _needs_tools("parallel_tool_calls", req)
    choice = out.setdefault("tool_choice", {"type": "auto"})
    if choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True


def _chat_response_format(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    kind = as_object(value, "response_format").get("type")
    if kind == "json_schema":
        spec = as_object(value.get("json_schema"), "response_format.json_schema")
        schema = as_object(spec.get("schema"), "response_format.json_schema.schema")
        _object(out, "output_config")["format"] = {"type": "json_schema", "schema": schema}
    elif kind == "json_object":
        raise invalid("response_format.type", "'json_object' has no Claude equivalent (Claude has no schema-less JSON mode); send a json_schema")
    elif kind != "text":
        raise invalid("response_format.type", "must be text, json_schema or json_object")


_EFFORTS = ("minimal", "low", "medium", "high", "xhigh", "max")


def _chat_reasoning_effort(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    if value == "none":
        out["thinking"] = {"type": "disabled"}
        return
    if value not in _EFFORTS:
        raise invalid("reasoning_effort", f"must be none or one of {', '.join(_EFFORTS)}")
    out["thinking"] = {"type": "adaptive"}
    _object(out, "output_config")["effort"] = "low" if value == "minimal" else value


def _chat_user(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    _object(out, "metadata")["user_id"] = as_string(value, "user")


def _chat_safety_identifier(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    _object(out, "metadata")["user_id"] = as_string(value, "safety_identifier")  # wins over `user`


def _cache(ttl: str | None) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl} if ttl else {"type": "ephemeral"}


def _chat_prompt_cache_key(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    as_string(value, "prompt_cache_key")
    out.setdefault("cache_control", _cache(None))


def _chat_prompt_cache_retention(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    if value not in ("in_memory", "24h"):
        raise invalid("prompt_cache_retention", "must be in_memory or 24h")
    out["cache_control"] = _cache("1h" if value == "24h" else None)


def _chat_prompt_cache_options(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    if as_object(value, "prompt_cache_options").get("mode", "implicit") != "implicit":
        raise invalid("prompt_cache_options.mode", "'explicit' breakpoints are not translated for Claude models; use /v1/messages with cache_control marks")
    out["cache_control"] = _cache("1h")  # a minimum lifetime of 30 minutes: Claude's 1-hour cache


CHAT = Table("Chat Completions", "OpenAI models", "Claude and other models", {
    "model": Rule(
        "sent as the catalog model's upstream id",
        "sent as the catalog model's upstream id",
        _copy_to("model"),
    ),
    "messages": Rule(
        "forwarded as sent",
        "translated: system and developer messages become `system`; user text, `image_url` (data or "
        "http(s) URL) and `file` (base64 PDF) parts become content blocks; assistant `tool_calls` become "
        "`tool_use`; tool messages become `tool_result` (a `[tool error] ` prefix sets `is_error`); "
        "other content parts are refused by name",
        _chat_messages,
    ),
    "max_completion_tokens": Rule(
        "lowered to what the key can still pay for; when absent it stays absent (the reservation "
        "assumes the model's output limit) unless the key cannot pay for that limit",
        "becomes `max_tokens`, lowered the same way; when absent: the model's output limit "
        "(Messages requires a limit)",
        _chat_limit("max_completion_tokens"),
    ),
    "max_tokens": Rule(
        "as `max_completion_tokens` (its older name)",
        "as `max_completion_tokens` (its older name)",
        _chat_limit("max_tokens"),
    ),
    "stream": Rule("forwarded", "forwarded", _copy_to("stream")),
    "stream_options": Rule(
        "`include_usage` is always sent true (usage is billed from the last chunk); the usage chunk "
        "reaches the caller only when asked for; other options forwarded",
        "`include_usage` is honoured (the translated stream ends with a usage chunk); "
        "`include_obfuscation` is accepted, the translated stream has no obfuscation padding",
        _accept,
    ),
    "temperature": Rule("forwarded", "forwarded; values above 1 are refused (Claude's range is 0-1)", _chat_temperature),
    "top_p": Rule("forwarded", "forwarded (1, the default, is not sent)", _chat_top_p),
    "stop": Rule("forwarded", "becomes `stop_sequences` (a string becomes a one-item list)", _chat_stop),
    "n": Rule(
        "forwarded; the reservation covers every requested answer",
        "Claude writes one answer per request (1 is accepted)",
        default=_values(1),
    ),
    "tools": Rule(
        "forwarded",
        "function tools become Claude tools (`parameters` → `input_schema`, `strict` kept); custom "
        "(free-form input) tools are refused",
        _chat_tools,
    ),
    "functions": Rule("forwarded", "become Claude tools, as `tools`", _chat_functions),
    "tool_choice": Rule(
        "forwarded",
        "none/auto/required/a function become none/auto/any/tool; `allowed_tools` and custom choices are refused",
        _chat_tool_choice,
    ),
    "function_call": Rule("forwarded", "becomes `tool_choice`, as `tool_choice`", _chat_function_call),
    "parallel_tool_calls": Rule(
        "forwarded",
        "false becomes `tool_choice.disable_parallel_tool_use` (true is the default)",
        _chat_parallel_tool_calls,
        default=_values(True),
    ),
    "response_format": Rule(
        "forwarded",
        "`json_schema` becomes `output_config.format` (Claude's structured outputs always enforce the "
        "schema, as `strict: true` does); `text` is the default; `json_object` is refused (Claude has no "
        "schema-less JSON mode)",
        _chat_response_format,
    ),
    "reasoning_effort": Rule(
        "forwarded",
        "`none` becomes `thinking: {type: disabled}`; other efforts become adaptive thinking with "
        "`output_config.effort` (`minimal` → `low`)",
        _chat_reasoning_effort,
    ),
    "user": Rule("forwarded", "becomes `metadata.user_id`", _chat_user),
    "safety_identifier": Rule("forwarded", "becomes `metadata.user_id` (over `user`)", _chat_safety_identifier),
    "prompt_cache_key": Rule(
        "forwarded",
        "turns on Claude's automatic prompt caching (`cache_control: {type: ephemeral}`; cache writes are billed as Claude prices them)",
        _chat_prompt_cache_key,
    ),
    "prompt_cache_retention": Rule(
        "forwarded",
        "turns on Claude's prompt caching: `in_memory` → 5-minute cache, `24h` → 1-hour cache (Claude's longest)",
        _chat_prompt_cache_retention,
    ),
    "prompt_cache_options": Rule(
        "forwarded",
        "implicit mode turns on Claude's 1-hour prompt cache (at least the 30 minutes asked for); explicit "
        "breakpoints are refused",
        _chat_prompt_cache_options,
    ),
    "seed": Rule("forwarded", "Claude has no sampling seed"),
    "frequency_penalty": Rule("forwarded", "Claude has no frequency penalty (0 is accepted)", default=_values(0)),
    "presence_penalty": Rule("forwarded", "Claude has no presence penalty (0 is accepted)", default=_values(0)),
    "logit_bias": Rule("forwarded", "Claude has no token biasing (an empty map is accepted)", default=_values({})),
    "logprobs": Rule("forwarded", "Claude returns no log probabilities (false is accepted)", default=_values(False)),
    "top_logprobs": Rule("forwarded", "Claude returns no log probabilities (0 is accepted)", default=_values(0)),
    "metadata": Rule(
        "forwarded",
        "Claude's metadata holds only a user id; send `user` or `safety_identifier` (an empty map is accepted)",
        default=_values({}),
    ),
    "store": Rule("forwarded", "Claude keeps no stored completions (false is accepted)", default=_values(False)),
    "verbosity": Rule("forwarded", "Claude has no verbosity setting (medium, the default, is accepted)", default=_values("medium")),
    "moderation": Rule("forwarded", "Claude has no moderation settings"),
    "prediction": Rule(
        "forwarded; the reservation also covers the predicted text (rejected prediction tokens are billed as output)",
        "Claude has no predicted outputs",
    ),
    "service_tier": Rule(
        SERVICE_TIER_SAME,
        "auto and default are accepted (Claude's standard tier)",
        default=_values("auto", "default"),
        guard=_service_tier_guard,
    ),
    "modalities": Rule(
        f"text forwarded; audio refused: audio output is {NOT_METERED}",
        "text is the default; audio is refused",
        default=_values(["text"]),
        guard=_refuse_unless(lambda v: isinstance(v, list) and "audio" not in v, f"audio output is {NOT_METERED}"),
    ),
    "audio": Rule(f"refused: audio output is {NOT_METERED}", "refused (audio output)", guard=_refuse_always(f"audio output is {NOT_METERED}")),
    "web_search_options": Rule(
        f"refused: {SERVER_TOOLS_WHY}", "refused (web search)", guard=_refuse_always(f"web search is a server tool: {SERVER_TOOLS_WHY}")
    ),
})


# --- Messages -> OpenAI (Chat Completions) ----------------------------------------------------------


def _messages_messages(value: Any, req: Mapping[str, Any], out: dict[str, Any]) -> None:
    out["messages"] = tr.anthropic_messages_to_openai(req.get("system"), value)


def _messages_limit(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    out["max_completion_tokens"] = tr.positive_int(value, "max_tokens")


def _messages_temperature(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    out["temperature"] = tr.number_between(value, "temperature", 0, 1)


def _messages_top_p(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    out["top_p"] = tr.number_between(value, "top_p", 0, 1)


def _messages_stop(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    out["stop"] = [as_string(s, f"stop_sequences[{i}]") for i, s in enumerate(as_array(value, "stop_sequences"))]


def _messages_tools(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    out["tools"] = [tr.tool_to_openai(t, f"tools[{i}]") for i, t in enumerate(as_array(value, "tools"))]


def _messages_tool_choice(value: Any, req: Mapping[str, Any], out: dict[str, Any]) -> None:
    choice = as_object(value, "tool_choice")
    if req.get("tools"):
        tr.tool_choice_to_openai(choice, out)
    elif choice.get("type") not in ("auto", "none"):  # without tools, auto and none ask for nothing
        raise invalid("tool_choice", "is only allowed when tools are given")


def _budget_effort(budget: Any) -> str:
    budget = tr.positive_int(budget, "thinking.budget_tokens")
    return "low" if budget < 4_096 else "medium" if budget < 16_384 else "high"


def _messages_thinking(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    kind = as_object(value, "thinking").get("type")
    if kind == "disabled":
        out["reasoning_effort"] = "none"
    elif kind == "enabled":
        out["reasoning_effort"] = _budget_effort(value.get("budget_tokens"))
    elif kind == "between_tools":
        raise invalid("thinking.type", "'between_tools' has no OpenAI equivalent")
    elif kind != "adaptive":  # adaptive: the model decides, as OpenAI's default effort does
        raise invalid("thinking.type", "must be enabled, adaptive, disabled or between_tools")


def _messages_metadata(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, item in as_object(value, "metadata").items():
        if key != "user_id":
            raise invalid(f"metadata.{key}", "is not a Messages metadata field")
        if item is not None:
            out["safety_identifier"] = as_string(item, "metadata.user_id")


def _messages_output_config(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    for key, item in as_object(value, "output_config").items():
        if item is None:
            continue
        if key == "format":
            fmt = as_object(item, "output_config.format")
            if fmt.get("type") != "json_schema":
                raise invalid("output_config.format.type", "must be json_schema")
            schema = as_object(fmt.get("schema"), "output_config.format.schema")
            out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
        elif key == "effort":
            if item not in ("low", "medium", "high", "xhigh", "max"):
                raise invalid("output_config.effort", "must be low, medium, high, xhigh or max")
            if out.get("reasoning_effort") != "none":  # thinking disabled keeps reasoning off
                out["reasoning_effort"] = item
        else:
            raise invalid(f"output_config.{key}", "has no OpenAI equivalent")


def _messages_cache_control(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    if as_object(value, "cache_control").get("ttl") == "1h":
        out["prompt_cache_retention"] = "24h"  # OpenAI caches prefixes by itself; this keeps them longer


def _messages_service_tier(value: Any, _req: Mapping[str, Any], out: dict[str, Any]) -> None:
    if value != "standard_only":
        raise invalid("service_tier", "must be auto or standard_only")
    out["service_tier"] = "default"


MESSAGES = Table("Messages", "Claude models", "OpenAI models", {
    "model": Rule(
        "sent as the catalog model's upstream id", "sent as the catalog model's upstream id", _copy_to("model")
    ),
    "messages": Rule(
        "forwarded as sent",
        "translated: text, image (base64 or URL), document (text, base64 PDF), tool_use and tool_result "
        "blocks; thinking blocks are left out (Chat Completions takes no reasoning back); `cache_control` "
        "marks are not sent (OpenAI caches prompt prefixes by itself); other blocks are refused by name",
        _messages_messages,
    ),
    "system": Rule("forwarded", "becomes the first, system message", _accept),  # sent by `messages`
    "max_tokens": Rule(
        "lowered to what the key can still pay for",
        "becomes `max_completion_tokens`, lowered the same way",
        _messages_limit,
    ),
    "stream": Rule("forwarded", "forwarded (with `stream_options.include_usage`, which the gateway owns)", _copy_to("stream")),
    "temperature": Rule("forwarded", "forwarded", _messages_temperature),
    "top_p": Rule("forwarded", "forwarded", _messages_top_p),
    "top_k": Rule("forwarded", "Chat Completions has no top-k sampling"),
    "stop_sequences": Rule("forwarded", "becomes `stop`", _messages_stop),
    "tools": Rule(
        f"custom tools and Anthropic-defined client tools (bash, text editor, memory, computer) forwarded; "
        f"server tools (web search, web fetch, code execution, tool search, …) refused: {SERVER_TOOLS_WHY}",
        "custom tools become function tools (`input_schema` → `parameters`, `strict` kept; `cache_control` "
        "and `eager_input_streaming` change no answer and are not sent); Anthropic-defined tools, "
        "`input_examples`, `defer_loading` and callers other than direct are refused",
        _messages_tools,
        guard=lambda name, value: _client_tools_only(value),
    ),
    "tool_choice": Rule(
        "forwarded",
        "auto/any/tool/none become auto/required/a function/none; `disable_parallel_tool_use` becomes "
        "`parallel_tool_calls: false`",
        _messages_tool_choice,
    ),
    "thinking": Rule(
        "forwarded",
        "`disabled` → `reasoning_effort: none`; `enabled` → an effort by budget (< 4,096 low, < 16,384 "
        "medium, else high); `adaptive` → the model's default effort (or `output_config.effort`); "
        "`between_tools` is refused. Chat Completions answers carry no reasoning text",
        _messages_thinking,
    ),
    "output_config": Rule(
        "forwarded",
        "`format` (json_schema) becomes `response_format` json_schema with `strict: true`; `effort` "
        "becomes `reasoning_effort`",
        _messages_output_config,
    ),
    "metadata": Rule("forwarded", "`user_id` becomes `safety_identifier` (OpenAI's successor of `user`)", _messages_metadata),
    "cache_control": Rule(
        "forwarded",
        "OpenAI caches prompt prefixes by itself; a 1-hour `ttl` becomes `prompt_cache_retention: 24h`",
        _messages_cache_control,
    ),
    "service_tier": Rule(
        "forwarded",
        "`standard_only` becomes `service_tier: default`; `auto` is OpenAI's default too",
        _messages_service_tier,
        default=_values("auto"),
    ),
    "speed": Rule(
        f"standard forwarded; fast refused: fast mode is {NOT_METERED}",
        "standard is the default; fast is refused",
        default=_values("standard"),
        guard=_refuse_unless(_values("standard"), f"fast mode is {NOT_METERED}"),
    ),
    "inference_geo": Rule(
        f"global forwarded; a pinned region is refused: regional inference is {NOT_METERED}",
        "global is the default; a pinned region is refused",
        default=_values("global"),
        guard=_refuse_unless(_values("global"), f"regional inference is {NOT_METERED}"),
    ),
    "diagnostics": Rule("forwarded", "OpenAI reports no prompt-cache diagnostics"),
    "container": Rule(
        "refused: code-execution containers are billed by the hour, which the usage report cannot meter",
        "refused (code-execution containers)",
        guard=_refuse_always("code-execution containers are billed by the hour, which the usage report cannot meter"),
    ),
    "workspace_id": Rule(
        "refused: the gateway's own credentials decide the workspace",
        "refused (the gateway's own credentials decide the workspace)",
        guard=_refuse_always("the gateway's own credentials decide the workspace"),
        header="anthropic-workspace-id",
    ),
    "user_profile_id": Rule(
        "refused: the gateway's own credentials decide whom a request is attributed to",
        "refused (attribution is the gateway's)",
        guard=_refuse_always("the gateway's own credentials decide whom a request is attributed to"),
        header="anthropic-user-profile-id",
    ),
    "betas": Rule(
        "betas whose features are generally available now (structured outputs, advanced tool use, "
        "fine-grained tool streaming, interleaved thinking, token-efficient tools, PDFs, prompt caching, "
        "extended cache TTL, 128k output) are accepted and not sent: their body fields work without "
        "them; any other beta is refused, since it can switch on what the gateway cannot meter or "
        "isolate (server tools, the Files API, 1M-token context pricing)",
        "as for Claude models",
        _accept,
        guard=_refuse_unless(
            lambda value: all(b.strip().startswith(GENERALLY_AVAILABLE_BETAS) for b in str(value).split(",")),
            "only betas whose features are generally available are accepted; this one can switch on "
            "what the gateway cannot meter or isolate",
        ),
        header="anthropic-beta",
    ),
})

# `anthropic-beta` names of features that are generally available now: the body fields they once
# unlocked work without the header (clients such as the AI SDK still send it).
GENERALLY_AVAILABLE_BETAS = (
    "structured-outputs-", "advanced-tool-use-", "fine-grained-tool-streaming-", "interleaved-thinking-",
    "token-efficient-tools-", "pdfs-", "prompt-caching-", "extended-cache-ttl-", "output-128k-",
)

# Anthropic-defined tools that run on the caller's side, billed as tokens only.
CLIENT_TOOL_PREFIXES = ("bash_", "text_editor_", "memory_", "computer_")


def _client_tools_only(tools: Any) -> None:
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom") and not (isinstance(kind, str) and kind.startswith(CLIENT_TOOL_PREFIXES)):
            raise invalid(f"tools[{i}].type", f"server tools ({kind!r}) are not supported: {SERVER_TOOLS_WHY}")


# --- Responses (OpenAI models only) ----------------------------------------------------------------
# The Responses API is served same-family only: no rule translates (a Claude model is refused by the
# route, by name). Its table says what passthrough does and guards what cannot be metered.

# Responses tools the caller runs itself (billed as tokens only); the rest run on OpenAI's side
# with per-use fees (web and file search, code interpreter, image generation, MCP, hosted shell...).
RESPONSES_CLIENT_TOOLS = ("function", "custom", "namespace", "local_shell", "apply_patch", "computer", "computer_use_preview")
STORED_STATE_WHY = (
    "it brings in context stored at OpenAI that the gateway never sees, so it cannot bound the call's "
    "cost before it starts (the key's cap), and it would reach state stored by every key of this gateway; "
    "send the earlier items in `input` instead"
)


def _responses_tools(name: str, tools: Any) -> None:
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in RESPONSES_CLIENT_TOOLS:
            raise invalid(f"{name}[{i}].type", f"{json.dumps(kind)} is refused: {SERVER_TOOLS_WHY} (served: "
                          f"{', '.join(RESPONSES_CLIENT_TOOLS)})")


def _responses_input(name: str, items: Any) -> None:
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            raise invalid(f"{name}[{i}].type", f"item_reference is refused: {STORED_STATE_WHY}")


_FORWARDED = Rule("forwarded", "")

RESPONSES = Table("Responses", "OpenAI models", "Claude and other models", {
    "model": Rule("sent as the catalog model's upstream id; a model of another family is refused by name", ""),
    "input": Rule(
        "forwarded as sent; `item_reference` items are refused (they point at stored items the gateway cannot see)",
        "", guard=_responses_input,
    ),
    "instructions": _FORWARDED,
    "max_output_tokens": Rule(
        "lowered to what the key can still pay for; when absent it stays absent (the reservation "
        "assumes the model's output limit) unless the key cannot pay for that limit", "",
    ),
    "stream": _FORWARDED,
    "stream_options": _FORWARDED,
    "tools": Rule(
        f"function, custom, namespace and the tools the caller runs ({', '.join(RESPONSES_CLIENT_TOOLS[3:])}) "
        f"forwarded; server tools refused: {SERVER_TOOLS_WHY}", "", guard=_responses_tools,
    ),
    "tool_choice": _FORWARDED,
    "parallel_tool_calls": _FORWARDED,
    "max_tool_calls": _FORWARDED,
    "text": _FORWARDED,
    "reasoning": _FORWARDED,
    "include": _FORWARDED,
    "temperature": _FORWARDED,
    "top_p": _FORWARDED,
    "top_logprobs": _FORWARDED,
    "truncation": _FORWARDED,
    "metadata": _FORWARDED,
    "user": _FORWARDED,
    "safety_identifier": _FORWARDED,
    "prompt_cache_key": _FORWARDED,
    "prompt_cache_retention": _FORWARDED,
    "prompt_cache_options": _FORWARDED,
    "context_management": _FORWARDED,
    "moderation": _FORWARDED,
    "image": _FORWARDED,
    "access_programs": _FORWARDED,
    "store": Rule(
        "forwarded (OpenAI keeps a stored response in the operator's account; nothing stored is ever read "
        "back through the gateway: see `previous_response_id`)", "",
    ),
    "service_tier": Rule(SERVICE_TIER_SAME, "", guard=_service_tier_guard),
    "previous_response_id": Rule(f"refused: {STORED_STATE_WHY}", "", guard=_refuse_always(STORED_STATE_WHY)),
    "conversation": Rule(f"refused: {STORED_STATE_WHY}", "", guard=_refuse_always(STORED_STATE_WHY)),
    "prompt": Rule(
        "refused: a stored prompt template is text the gateway never sees (its cost cannot be bounded)", "",
        guard=_refuse_always("a stored prompt template is text the gateway never sees, so the call's cost cannot be bounded"),
    ),
    "background": Rule(
        "false accepted; true refused: a background response is answered (and billed) after this call ends, "
        "where the gateway cannot meter it", "",
        guard=_refuse_unless(_values(False), "a background response finishes after this call, where the gateway cannot meter it"),
    ),
    "background_options": Rule(
        "refused: only background responses take it", "",
        guard=_refuse_always("only background responses take it, and the gateway does not serve them"),
    ),
})


# --- applying a table ----------------------------------------------------------------------------


def guard(table: Table, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
    """Refuse, on every model, what the gateway cannot meter or must own (400 naming the field)."""
    for name, rule in table.rules.items():
        if rule.guard is None:
            continue
        value = headers.get(rule.header) if rule.header and headers is not None else body.get(name)
        if value is not None:
            rule.guard(name, value)


def translate(table: Table, req: Mapping[str, Any]) -> dict[str, Any]:
    """`req` (of `table.api`) as a request of the other API: complete, or InvalidRequest naming the
    first field that has no translation."""
    for name in req:
        if name not in table.rules or table.rules[name].header:
            raise invalid(name, f"not a {table.api} field the gateway can translate for {table.other}")
    out: dict[str, Any] = {}
    for name, rule in table.rules.items():  # table order: e.g. tools before tool_choice
        value = req.get(name)
        if value is None or rule.default(value):
            continue
        if rule.translate is None:
            raise invalid(name, f"not supported for {table.other}: {rule.cross}")
        rule.translate(value, req, out)
    return out


def chat_to_messages(req: Mapping[str, Any]) -> dict[str, Any]:
    """A Chat Completions request -> a Messages request (same `model` value)."""
    return translate(CHAT, req)


def messages_to_chat(req: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages request -> a Chat Completions request (same `model` value)."""
    return translate(MESSAGES, req)


# --- the documentation table ---------------------------------------------------------------------

BEGIN, END = "<!-- field-table:begin (generated by python -m threadgate.providers.field_map) -->", "<!-- field-table:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The field tables, as README.md and docs/api.md §10 show them."""
    parts = []
    for table in (CHAT, MESSAGES):
        endpoint = "/v1/chat/completions" if table is CHAT else "/v1/messages"
        parts.append(f"**`{endpoint}`** ({table.api} request fields)\n")
        parts.append(f"| field | to {table.own} (passed through) | to {table.other} (translated) |")
        parts.append("|---|---|---|")
        for name, rule in table.rules.items():
            shown = f"`{name}` (header `{rule.header}`)" if rule.header else f"`{name}`"
            cross = rule.cross if rule.translate is not None or rule.guard is not None else f"**refused**: {rule.cross}"
            parts.append(f"| {shown} | {_cell(rule.same)} | {_cell(cross)} |")
        parts.append(f"| any other field | forwarded | **refused** by name |\n")
    parts.append(f"**`/v1/responses`** ({RESPONSES.api} request fields; {RESPONSES.other}: **refused**, `param: \"model\"`)\n")
    parts.append(f"| field | to {RESPONSES.own} (passed through) |")
    parts.append("|---|---|")
    for name, rule in RESPONSES.rules.items():
        parts.append(f"| `{name}` | {_cell(rule.same)} |")
    parts.append("| any other field | forwarded |\n")
    return "\n".join(parts).rstrip() + "\n"


def with_table(document: str) -> str:
    """`document` with the text between the BEGIN and END markers replaced by `markdown()`."""
    head, _, rest = document.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{markdown()}{END}{tail}"


if __name__ == "__main__":  # rewrite the tables in README.md and docs/api.md
    from pathlib import Path

    root = Path(__file__).resolve().parents[5]
    for doc in (root / "README.md", root / "docs" / "api.md"):
        doc.write_text(with_table(doc.read_text()))
