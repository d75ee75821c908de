"""Anthropic Messages ⇄ OpenAI Chat Completions conversations and answers, as pure functions.

The request FIELDS (sampling, tools, formats, limits) are translated field by field in
`threadgate.providers.field_map`, the one table that also documents them; this module holds
what those translators need for conversations (messages, content parts, tools, tool choice)
and translates answers back. The streaming counterparts live in `streams.py`.

Lossy spots, decided once:
- thinking blocks in a conversation sent to OpenAI are left out (Chat Completions has no place
  for them or their signatures), and Chat Completions answers carry no reasoning text;
- consecutive assistant text blocks are concatenated (Anthropic splits text at citations, so
  they are one continuous text);
- `is_error` on a tool result travels as the TOOL_ERROR_PREFIX on the tool message's text;
- tool-call arguments that are not a JSON object are kept under RAW_ARGUMENTS_KEY (see wire.py);
- `cache_control` marks are not sent to OpenAI, which caches prompt prefixes by itself.
Content without a counterpart is refused by name. Bad client input raises InvalidRequest naming
the field; an unusable upstream answer raises UpstreamError.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from threadgate.domain.errors import InvalidRequest, UpstreamError
from threadgate.providers.openai.wire import (
    ANTHROPIC_MESSAGE_ROLES,
    COMPLETION_OBJECT,
    OPENAI_MESSAGE_ROLES,
    STOP_TO_FINISH,
    TOOL_ERROR_PREFIX,
    arguments_to_json,
    completion_id,
    message_id,
    parse_arguments,
    stop_reason_from_finish,
    usage_to_anthropic,
    usage_to_openai,
)

_DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_THINKING_TYPES = ("thinking", "redacted_thinking")


# ---------------------------------------------------------------------------------------------
# small shared pieces


def invalid(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {problem}", param=path)


def as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(path, "must be an object")
    return value


def as_array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(path, "must be an array")
    return value


def as_string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise invalid(path, "must be a string")
    return value


def positive_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(path, "must be an integer >= 1")
    return value


def number_between(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise invalid(path, f"must be a number between {low:g} and {high:g}")
    return value


# ---------------------------------------------------------------------------------------------
# Anthropic conversation -> OpenAI messages (the request fields themselves: providers/field_map.py)


def anthropic_messages_to_openai(system: Any, raw_messages: Any) -> list[dict[str, Any]]:
    """An Anthropic `system` and `messages` -> Chat Completions `messages`."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": _anthropic_system_text(system)})
    for i, message in enumerate(as_array(raw_messages, "messages")):
        path = f"messages[{i}]"
        message = as_object(message, path)
        role = message.get("role")
        if role not in ANTHROPIC_MESSAGE_ROLES:
            raise invalid(f"{path}.role", f"must be one of {', '.join(ANTHROPIC_MESSAGE_ROLES)}")
        blocks = _anthropic_blocks(message.get("content"), f"{path}.content")
        if role == "user":
            messages.extend(_user_to_openai(blocks, f"{path}.content"))
        else:
            messages.append(_assistant_to_openai(blocks, f"{path}.content"))
    return messages


def _anthropic_system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    texts = []
    for i, block in enumerate(as_array(system, "system")):
        block = as_object(block, f"system[{i}]")
        if block.get("type") != "text":
            raise invalid(f"system[{i}].type", "must be text")
        texts.append(as_string(block.get("text"), f"system[{i}].text"))
    return "\n\n".join(texts)


def _anthropic_blocks(content: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of content blocks")
    blocks = [as_object(b, f"{path}[{j}]") for j, b in enumerate(content)]
    for j, block in enumerate(blocks):
        as_string(block.get("type"), f"{path}[{j}].type")
    return blocks


def _user_to_openai(blocks: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """One Anthropic user turn -> its tool messages (which must directly follow the assistant's
    tool calls, so they go first) and then a user message with the remaining parts."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        bpath, kind = f"{path}[{j}]", block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": as_string(block.get("text"), f"{bpath}.text")})
        elif kind == "image":
            parts.append(_image_to_openai(block, bpath))
        elif kind == "document":
            parts.append(_document_to_openai(block, bpath))
        elif kind == "tool_result":
            text, images = _tool_result_to_openai(block, bpath)
            tool_messages.append({
                "role": "tool",
                "tool_call_id": as_string(block.get("tool_use_id"), f"{bpath}.tool_use_id"),
                "content": TOOL_ERROR_PREFIX + text if block.get("is_error") else text,
            })
            parts.extend(images)  # a tool message holds text only; its images follow as user parts
        elif kind in _THINKING_TYPES:
            continue
        else:
            raise invalid(f"{bpath}.type", f"'{kind}' is not supported for this model")
    if parts or not tool_messages:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        content: Any = parts[0]["text"] if only_text else (parts or "")
        tool_messages.append({"role": "user", "content": content})
    return tool_messages


def _image_to_openai(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = as_object(block.get("source"), f"{path}.source")
    if source.get("type") == "base64":
        media_type = as_string(source.get("media_type"), f"{path}.source.media_type")
        data = as_string(source.get("data"), f"{path}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": as_string(source.get("url"), f"{path}.source.url")}}
    raise invalid(f"{path}.source.type", "must be base64 or url")


def _document_to_openai(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = as_object(block.get("source"), f"{path}.source")
    if source.get("type") == "text":
        return {"type": "text", "text": as_string(source.get("data"), f"{path}.source.data")}
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        data = as_string(source.get("data"), f"{path}.source.data")
        filename = block.get("title") if isinstance(block.get("title"), str) else "document.pdf"
        return {"type": "file", "file": {"filename": filename, "file_data": f"data:application/pdf;base64,{data}"}}
    raise invalid(f"{path}.source", "only text documents and base64 PDFs are supported for this model")


def _tool_result_to_openai(block: dict[str, Any], path: str) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content")
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for k, inner in enumerate(as_array(content, f"{path}.content")):
        ipath = f"{path}.content[{k}]"
        inner = as_object(inner, ipath)
        if inner.get("type") == "text":
            texts.append(as_string(inner.get("text"), f"{ipath}.text"))
        elif inner.get("type") == "image":
            images.append(_image_to_openai(inner, ipath))
        else:
            raise invalid(f"{ipath}.type", f"'{inner.get('type')}' is not supported in a tool result for this model")
    return "\n".join(texts), images


def _assistant_to_openai(blocks: list[dict[str, Any]], path: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        bpath, kind = f"{path}[{j}]", block["type"]
        if kind == "text":
            texts.append(as_string(block.get("text"), f"{bpath}.text"))
        elif kind == "tool_use":
            calls.append({
                "id": as_string(block.get("id"), f"{bpath}.id"),
                "type": "function",
                "function": {
                    "name": as_string(block.get("name"), f"{bpath}.name"),
                    "arguments": arguments_to_json(block.get("input")),
                },
            })
        elif kind in _THINKING_TYPES:
            continue
        else:
            raise invalid(f"{bpath}.type", f"'{kind}' is not supported in an assistant turn for this model")
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def tool_to_openai(tool: Any, path: str) -> dict[str, Any]:
    """A custom Anthropic tool -> an OpenAI function tool. Tool fields without a counterpart are
    refused by name, except those that change no answer: `cache_control` (OpenAI caches prompts
    by itself) and `eager_input_streaming` (how the input streams, not what it is)."""
    tool = as_object(tool, path)
    if tool.get("type") not in (None, "custom"):
        raise invalid(f"{path}.type", f"'{tool.get('type')}' is an Anthropic-defined tool; OpenAI models have no equivalent")
    function: dict[str, Any] = {"name": as_string(tool.get("name"), f"{path}.name")}
    if tool.get("description") is not None:
        function["description"] = as_string(tool["description"], f"{path}.description")
    function["parameters"] = as_object(tool.get("input_schema"), f"{path}.input_schema")
    if tool.get("strict") is not None:
        function["strict"] = bool(tool["strict"])
    for key, value in tool.items():
        if key in _ANTHROPIC_TOOL_FIELDS or value is None or value is False or value == [] or (
            key == "allowed_callers" and value == ["direct"]
        ):
            continue
        why = _ANTHROPIC_TOOL_REFUSALS.get(key, "OpenAI function tools have no such field")
        raise invalid(f"{path}.{key}", f"not supported for OpenAI models ({why})")
    return {"type": "function", "function": function}


_ANTHROPIC_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "strict", "cache_control", "eager_input_streaming"})
_ANTHROPIC_TOOL_REFUSALS = {
    "input_examples": "OpenAI function tools take no input examples",
    "defer_loading": "deferred tools need Anthropic's tool search",
    "allowed_callers": "only direct calls exist in Chat Completions",
}


def tool_choice_to_openai(choice: dict[str, Any], body: dict[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool":
        name = as_string(choice.get("name"), "tool_choice.name")
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise invalid("tool_choice.type", "must be one of auto, any, tool, none")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        body["parallel_tool_calls"] = False


# ---------------------------------------------------------------------------------------------
# OpenAI answer -> Anthropic answer (the OpenAI provider)


def openai_response_to_anthropic(resp: dict[str, Any], model_id: str) -> dict[str, Any]:
    """A `chat.completion` object -> an Anthropic `message` (first choice only)."""
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamError("upstream answer has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamError("upstream answer has no message")

    content: list[dict[str, Any]] = []
    text = _openai_content_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        content.append({"type": "text", "text": message["refusal"]})
    calls = message.get("tool_calls") or []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise UpstreamError("upstream answer has a tool call without a function name")
        content.append({
            "type": "tool_use",
            "id": call.get("id") or f"call_{uuid.uuid4().hex}",
            "name": function["name"],
            "input": parse_arguments(function.get("arguments")),
        })
    called_tools = any(block["type"] == "tool_use" for block in content)
    return {
        "id": message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model_id,
        "content": content,
        "stop_reason": stop_reason_from_finish(choice.get("finish_reason"), called_tools=called_tools),
        "stop_sequence": None,
        "usage": usage_to_anthropic(resp.get("usage"), resp.get("service_tier")),
    }


def _openai_content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some compatible servers answer with parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


# ---------------------------------------------------------------------------------------------
# OpenAI messages -> Anthropic conversation (the request fields themselves: providers/field_map.py)


def openai_messages_to_anthropic(raw_messages: Any) -> tuple[str, list[dict[str, Any]]]:
    """Chat Completions `messages` -> (an Anthropic `system` text, `messages`)."""
    raw_messages = as_array(raw_messages, "messages")
    if not raw_messages:
        raise invalid("messages", "must not be empty")
    system_texts: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(raw_messages):
        path = f"messages[{i}]"
        message = as_object(message, path)
        role = message.get("role")
        if role in ("system", "developer"):
            system_texts.append(_openai_text(message.get("content"), f"{path}.content"))
            continue  # Anthropic has one top-level system prompt; OpenAI's may appear anywhere
        if role == "user":
            _append_merged(messages, "user", _openai_user_blocks(message.get("content"), f"{path}.content"))
        elif role == "assistant":
            _append_merged(messages, "assistant", _openai_assistant_blocks(message, path))
        elif role == "tool":
            _append_merged(messages, "user", [_openai_tool_result(message, path)])
        else:
            raise invalid(f"{path}.role", f"must be one of {', '.join(OPENAI_MESSAGE_ROLES)}")
    if not messages:
        raise invalid("messages", "must contain at least one non-empty user or assistant message")
    for message in messages:  # Anthropic wants tool results at the start of their user turn
        if message["role"] == "user":
            message["content"].sort(key=lambda block: block["type"] != "tool_result")
    return "\n\n".join(t for t in system_texts if t), messages


def wants_usage_chunk(req: dict[str, Any]) -> bool:
    """Did a streaming Chat Completions request ask for the final usage chunk?"""
    options = req.get("stream_options") if isinstance(req, dict) else None
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _append_merged(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic needs non-empty turns; consecutive same-role turns (e.g. several tool messages)
    become one."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": list(blocks)})


def _openai_text(content: Any, path: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for k, part in enumerate(as_array(content, path)):
        part = as_object(part, f"{path}[{k}]")
        if part.get("type") not in ("text", "refusal"):
            raise invalid(f"{path}[{k}].type", "must be text here")
        texts.append(as_string(part.get(part["type"]), f"{path}[{k}].{part['type']}"))
    return "\n".join(texts)


def _openai_user_blocks(content: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for k, part in enumerate(as_array(content, path)):
        ppath = f"{path}[{k}]"
        part = as_object(part, ppath)
        kind = part.get("type")
        if kind == "text":
            text = as_string(part.get("text"), f"{ppath}.text")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image if isinstance(image, str) else as_object(image, f"{ppath}.image_url").get("url")
            blocks.append(_image_from_url(as_string(url, f"{ppath}.image_url.url"), f"{ppath}.image_url.url"))
        elif kind == "file":
            blocks.append(_document_from_file(as_object(part.get("file"), f"{ppath}.file"), f"{ppath}.file"))
        else:
            raise invalid(f"{ppath}.type", f"'{kind}' is not supported for this model")
    return blocks


def _image_from_url(url: str, path: str) -> dict[str, Any]:
    match = _DATA_URL.match(url)
    if match:
        source = {"type": "base64", "media_type": match["media_type"], "data": match["data"]}
        return {"type": "image", "source": source}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid(path, "must be an http(s) URL or a base64 data URL")


def _document_from_file(file: dict[str, Any], path: str) -> dict[str, Any]:
    match = _DATA_URL.match(file.get("file_data") or "") if isinstance(file.get("file_data"), str) else None
    if not match or match["media_type"] != "application/pdf":
        raise invalid(f"{path}.file_data", "only a base64 PDF data URL is supported for this model")
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": match["data"]},
    }
    if isinstance(file.get("filename"), str) and file["filename"]:
        block["title"] = file["filename"]
    return block


def _openai_assistant_blocks(message: dict[str, Any], path: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _openai_text(message.get("content"), f"{path}.content")
    if text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for k, call in enumerate(as_array(calls, f"{path}.tool_calls") if calls is not None else []):
        cpath = f"{path}.tool_calls[{k}]"
        call = as_object(call, cpath)
        if call.get("type", "function") != "function":
            raise invalid(f"{cpath}.type", "only function tool calls are supported")
        function = as_object(call.get("function"), f"{cpath}.function")
        blocks.append({
            "type": "tool_use",
            "id": as_string(call.get("id"), f"{cpath}.id"),
            "name": as_string(function.get("name"), f"{cpath}.function.name"),
            "input": parse_arguments(function.get("arguments")),
        })
    return blocks


def _openai_tool_result(message: dict[str, Any], path: str) -> dict[str, Any]:
    text = _openai_text(message.get("content"), f"{path}.content")
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": as_string(message.get("tool_call_id"), f"{path}.tool_call_id"),
    }
    if text.startswith(TOOL_ERROR_PREFIX):
        text = text[len(TOOL_ERROR_PREFIX):]
        block["is_error"] = True
    block["content"] = text
    return block


def tool_to_anthropic(tool: Any, path: str) -> dict[str, Any]:
    """An OpenAI function tool (or a deprecated `functions` entry, `path` naming it) -> a
    Claude tool; `strict` is kept."""
    tool = as_object(tool, path)
    if "function" not in tool and "name" in tool and "type" not in tool:  # a `functions` entry
        tool, fpath = {"type": "function", "function": tool}, path
    else:
        fpath = f"{path}.function"
    if tool.get("type", "function") != "function":
        raise invalid(f"{path}.type", f"'{tool.get('type')}' tools (free-form input) have no Claude equivalent")
    function = as_object(tool.get("function"), fpath)
    out: dict[str, Any] = {"name": as_string(function.get("name"), f"{fpath}.name")}
    if function.get("description") is not None:
        out["description"] = as_string(function["description"], f"{fpath}.description")
    parameters = function.get("parameters")
    out["input_schema"] = (
        as_object(parameters, f"{fpath}.parameters") if parameters is not None
        else {"type": "object", "properties": {}}
    )
    if function.get("strict") is not None:
        out["strict"] = bool(function["strict"])
    for key in function.keys() - {"name", "description", "parameters", "strict"}:
        raise invalid(f"{fpath}.{key}", "not supported for Claude models (Claude tools have no such field)")
    return out


def tool_choice_to_anthropic(choice: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = as_object(choice.get("function"), "tool_choice.function").get("name")
        return {"type": "tool", "name": as_string(name, "tool_choice.function.name")}
    if isinstance(choice, dict) and choice.get("type") in ("allowed_tools", "custom"):
        raise invalid("tool_choice.type", f"'{choice['type']}' has no Claude equivalent; use auto, required, none or a function")
    raise invalid("tool_choice", "must be auto, required, none or a function choice")


# ---------------------------------------------------------------------------------------------
# Anthropic answer -> OpenAI answer (the /v1/chat/completions route)


def anthropic_response_to_openai(msg: dict[str, Any], model: str, created_s: int) -> dict[str, Any]:
    """An Anthropic `message` -> a `chat.completion` object (thinking blocks dropped)."""
    blocks = [b for b in msg.get("content") or [] if isinstance(b, dict)]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": arguments_to_json(b.get("input"))},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id(msg.get("id")),
        "object": COMPLETION_OBJECT,
        "created": created_s,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": STOP_TO_FINISH.get(msg.get("stop_reason") or "end_turn", "stop"),
            "logprobs": None,
        }],
        "usage": usage_to_openai(msg.get("usage")),
        "system_fingerprint": None,
    }

