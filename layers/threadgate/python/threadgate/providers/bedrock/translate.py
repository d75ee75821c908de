"""The canonical (Anthropic Messages) shape ⇄ Bedrock Converse. Complete or refuse: a field or
block Converse cannot carry gets a 400 naming it, never a silent drop.

Request: `system` → `system`, sampling and stops → `inferenceConfig`, Anthropic-only fields
(`top_k`, `thinking`) → `additionalModelRequestFields` (Bedrock passes them to Claude), tools →
`toolConfig`, `cache_control` marks → `cachePoint` blocks after the marked block,
`metadata.user_id` → `requestMetadata`. Thinking blocks go back as `reasoningContent` with their
signature; one without a signature (a stream cut before it arrived) cannot be verified by the
model and is left out, so the history stays valid.
"""

from __future__ import annotations

import base64
from typing import Any

from threadgate.domain.errors import InvalidRequest

_STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
    "model_context_window_exceeded": "model_context_window_exceeded",
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_CACHE_POINT = {"cachePoint": {"type": "default"}}


def _decode(data: Any, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        raise InvalidRequest(f"{where}: must be base64", param=where) from None


def _source_bytes(block: dict[str, Any], where: str) -> tuple[str, bytes]:
    source = block.get("source") or {}
    if source.get("type") != "base64":
        raise InvalidRequest(f"{where}.source: Bedrock takes only base64 sources", param=f"{where}.source")
    return str(source.get("media_type") or ""), _decode(source.get("data"), f"{where}.source.data")


def _block(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    kind = block.get("type")
    out: list[dict[str, Any]]
    if kind == "text":
        out = [{"text": block["text"]}] if block.get("text") else []
    elif kind == "image":
        media, data = _source_bytes(block, where)
        if media not in _IMAGE_FORMATS:
            raise InvalidRequest(f"{where}.source.media_type: {media!r} is not supported", param=f"{where}.source.media_type")
        out = [{"image": {"format": _IMAGE_FORMATS[media], "source": {"bytes": data}}}]
    elif kind == "document":
        media, data = _source_bytes(block, where)
        if media != "application/pdf":
            raise InvalidRequest(f"{where}.source.media_type: only PDF documents", param=f"{where}.source.media_type")
        out = [{"document": {"format": "pdf", "name": str(block.get("title") or "document")[:200], "source": {"bytes": data}}}]
    elif kind == "tool_use":
        out = [{"toolUse": {"toolUseId": block["id"], "name": block["name"], "input": block.get("input") or {}}}]
    elif kind == "tool_result":
        content = block.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        inner = [b for i, p in enumerate(parts) for b in _block(p, f"{where}.content[{i}]") if "cachePoint" not in b]
        result: dict[str, Any] = {"toolUseId": block["tool_use_id"], "content": inner or [{"text": ""}]}
        if block.get("is_error"):
            result["status"] = "error"
        out = [{"toolResult": result}]
    elif kind == "thinking":
        if not block.get("signature"):
            return []  # unverifiable without its signature: the model would refuse the history
        out = [{"reasoningContent": {"reasoningText": {"text": block.get("thinking", ""), "signature": block["signature"]}}}]
    elif kind == "redacted_thinking":
        out = [{"reasoningContent": {"redactedContent": _decode(block.get("data"), f"{where}.data")}}]
    else:
        raise InvalidRequest(f"{where}.type: {kind!r} blocks cannot be sent to Bedrock", param=f"{where}.type")
    if block.get("cache_control") and out:
        out.append(dict(_CACHE_POINT))
    return out


def _content(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    return [b for i, block in enumerate(content or []) for b in _block(block, f"{where}[{i}]")]


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in (None, "auto"):
        return {"auto": {}}
    if kind == "any":
        return {"any": {}}
    if kind == "tool":
        return {"tool": {"name": choice["name"]}}
    raise InvalidRequest(f"tool_choice: {kind!r} has no Bedrock Converse equivalent", param="tool_choice")


def to_converse(request: dict[str, Any]) -> dict[str, Any]:
    """Anthropic Messages request → `converse`/`converse_stream` keyword arguments."""
    kwargs: dict[str, Any] = {"modelId": request["model"]}
    messages = []
    for i, m in enumerate(request.get("messages") or []):
        content = _content(m.get("content"), f"messages[{i}].content")
        if content:
            messages.append({"role": m["role"], "content": content})
    kwargs["messages"] = messages
    system = request.get("system")
    if system:
        kwargs["system"] = _content(system, "system")
    config = {"maxTokens": request["max_tokens"]}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("stop_sequences", "stopSequences")):
        if request.get(ours) is not None:
            config[theirs] = request[ours]
    kwargs["inferenceConfig"] = config
    extra = {k: request[k] for k in ("top_k", "thinking") if request.get(k) is not None}
    if extra:
        kwargs["additionalModelRequestFields"] = extra
    tools = request.get("tools")
    if tools:
        specs: list[dict[str, Any]] = []
        for t in tools:
            specs.append({"toolSpec": {"name": t["name"], "description": t.get("description") or t["name"],
                                       "inputSchema": {"json": t.get("input_schema") or {"type": "object"}}}})
            if t.get("cache_control"):
                specs.append(dict(_CACHE_POINT))
        kwargs["toolConfig"] = {"tools": specs, "toolChoice": _tool_choice(request.get("tool_choice"))}
    elif request.get("tool_choice") is not None:
        raise InvalidRequest("tool_choice: requires tools", param="tool_choice")
    user_id = (request.get("metadata") or {}).get("user_id")
    if user_id:
        kwargs["requestMetadata"] = {"user_id": str(user_id)[:256]}
    return kwargs


def usage_from_converse(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    return {
        "input_tokens": int(usage.get("inputTokens") or 0),
        "output_tokens": int(usage.get("outputTokens") or 0),
        "cache_creation_input_tokens": int(usage.get("cacheWriteInputTokens") or 0),
        "cache_read_input_tokens": int(usage.get("cacheReadInputTokens") or 0),
    }


def _block_from_converse(block: dict[str, Any]) -> dict[str, Any] | None:
    if "text" in block:
        return {"type": "text", "text": block["text"]}
    if "toolUse" in block:
        use = block["toolUse"]
        return {"type": "tool_use", "id": use["toolUseId"], "name": use["name"], "input": use.get("input") or {}}
    reasoning = block.get("reasoningContent")
    if reasoning:
        if "redactedContent" in reasoning:
            return {"type": "redacted_thinking", "data": base64.b64encode(reasoning["redactedContent"]).decode()}
        text = reasoning.get("reasoningText") or {}
        return {"type": "thinking", "thinking": text.get("text", ""), "signature": text.get("signature", "")}
    return None  # citations and guard content carry nothing the canonical shape keeps


def message_from_converse(response: dict[str, Any], model: str, message_id: str) -> dict[str, Any]:
    content = (((response.get("output") or {}).get("message") or {}).get("content")) or []
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [b for b in (_block_from_converse(c) for c in content) if b is not None],
        "stop_reason": stop_reason(response.get("stopReason")),
        "stop_sequence": None,
        "usage": usage_from_converse(response.get("usage")),
    }


def stop_reason(reason: Any) -> str:
    return _STOP_REASONS.get(str(reason), "end_turn")


class StreamTranslator:
    """ConverseStream events → Anthropic stream events. Converse opens text and reasoning blocks
    with their first delta (only tool use has a start event), and reports usage in a `metadata`
    event after `messageStop`: the Anthropic `message_delta` (stop reason + usage) is sent then."""

    def __init__(self, model: str, message_id: str):
        self.model = model
        self.message_id = message_id
        self.started = False
        self._open: dict[int, str] = {}  # contentBlockIndex → Anthropic block type
        self._stop: str | None = None
        self.usage: dict[str, int] | None = None

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            out.append({"type": "message_start", "message": {
                "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            use = (start.get("start") or {}).get("toolUse")
            if use:
                out += self._open_block(start["contentBlockIndex"], {"type": "tool_use", "id": use["toolUseId"],
                                                                     "name": use["name"], "input": {}})
        elif "contentBlockDelta" in event:
            out += self._delta(event["contentBlockDelta"])
        elif "contentBlockStop" in event:
            index = event["contentBlockStop"]["contentBlockIndex"]
            if self._open.pop(index, None) is not None:
                out.append({"type": "content_block_stop", "index": index})
        elif "messageStop" in event:
            self._stop = stop_reason(event["messageStop"].get("stopReason"))
        elif "metadata" in event:
            self.usage = usage_from_converse(event["metadata"].get("usage"))
        return out

    def _open_block(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._open[index] = block["type"]
        return [{"type": "content_block_start", "index": index, "content_block": block}]

    def _delta(self, delta_event: dict[str, Any]) -> list[dict[str, Any]]:
        index, delta = delta_event["contentBlockIndex"], delta_event.get("delta") or {}
        out: list[dict[str, Any]] = []
        if "text" in delta:
            if index not in self._open:
                out += self._open_block(index, {"type": "text", "text": ""})
            out.append({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": delta["text"]}})
        elif "toolUse" in delta:
            out.append({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": delta["toolUse"].get("input", "")}})
        elif "reasoningContent" in delta:
            reasoning = delta["reasoningContent"]
            if "redactedContent" in reasoning:
                data = base64.b64encode(reasoning["redactedContent"]).decode()
                out += self._open_block(index, {"type": "redacted_thinking", "data": data})
                return out
            if index not in self._open:
                out += self._open_block(index, {"type": "thinking", "thinking": "", "signature": ""})
            if "text" in reasoning:
                out.append({"type": "content_block_delta", "index": index,
                            "delta": {"type": "thinking_delta", "thinking": reasoning["text"]}})
            if "signature" in reasoning:
                out.append({"type": "content_block_delta", "index": index,
                            "delta": {"type": "signature_delta", "signature": reasoning["signature"]}})
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The closing events, once the Converse stream has ended."""
        out = [] if self.started else self.feed({})
        out += [{"type": "content_block_stop", "index": i} for i in sorted(self._open)]
        self._open.clear()
        out.append({"type": "message_delta", "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                    "usage": self.usage or usage_from_converse(None)})
        out.append({"type": "message_stop"})
        return out
