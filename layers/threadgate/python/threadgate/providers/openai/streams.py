"""Streams of Chat Completions chunks, one event at a time (pure; no I/O): translated both ways,
and accumulated into the whole answer (`ChunkAccumulator`).

OpenAI streams one flat sequence of deltas; Anthropic streams typed content blocks. Blocks here are
emitted strictly one after another, as Anthropic does: a block is stopped before the next starts,
indexes count up from 0, and every start gets its stop.
"""

from __future__ import annotations

import json
from typing import Any

from threadgate.domain.errors import UpstreamError
from threadgate.providers.openai.wire import (
    CHUNK_OBJECT,
    COMPLETION_OBJECT,
    STOP_TO_FINISH,
    completion_id,
    message_id,
    stop_reason_from_finish,
    usage_to_anthropic,
    usage_to_openai,
)


class OpenAIStreamTranslator:
    """Feed `chat.completion.chunk` dicts, get Anthropic stream events.

    `feed()` returns `message_start` with the very first chunk (so time to first event is the
    upstream's). Usage comes in OpenAI's last chunk, after `finish_reason`, so the closing
    `message_delta` (stop reason + the complete usage, input tokens included) and `message_stop`
    are produced by `finish()`, which the caller invokes at `[DONE]`.

    Tool-call arguments are forwarded as `input_json_delta` exactly as the upstream streams them.
    A compatible server that interleaves the deltas of two tool calls cannot be expressed as
    sequential blocks and raises UpstreamError.
    """

    def __init__(self, model_id: str) -> None:
        self._model = model_id
        self._started = False
        self._finished = False
        self._next_index = 0
        self._open: tuple[str, int] | None = None  # ("text", block) or ("tool", openai tool index)
        self._open_block = -1
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls[].index -> our block index
        self._finish_reason: str | None = None
        self._usage: dict[str, int] | None = None

    @property
    def started(self) -> bool:
        return self._started

    @property
    def saw_finish_reason(self) -> bool:
        return self._finish_reason is not None

    @property
    def saw_usage(self) -> bool:
        return self._usage is not None

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(chunk, dict):
            raise UpstreamError("upstream sent a malformed stream chunk")
        if self._finished:
            return []
        events: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            events.append(self._message_start(chunk))
        if isinstance(chunk.get("usage"), dict):
            self._usage = usage_to_anthropic(chunk["usage"], chunk.get("service_tier"))
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # we never ask for n > 1
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    events.extend(self._text(delta[key]))
            tool_calls = delta.get("tool_calls")
            for call in tool_calls if isinstance(tool_calls, list) else []:
                events.extend(self._tool_call(call))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[dict[str, Any]]:
        """Close the open block and the message. Call once, when the upstream stream is done."""
        if not self._started:
            raise UpstreamError("upstream stream ended before its first chunk")
        if self._finished:
            return []
        self._finished = True
        events = self._close_open()
        stop_reason = stop_reason_from_finish(self._finish_reason, called_tools=bool(self._tool_blocks))
        usage = self._usage or usage_to_anthropic(None)
        events.append({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": dict(usage),
        })
        events.append({"type": "message_stop"})
        return events

    def _message_start(self, chunk: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "message_start",
            "message": {
                "id": message_id(chunk.get("id")),
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                # Not known before the last chunk; the closing message_delta carries the totals.
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }

    def _start_block(self, kind: str, key: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close_open()
        self._open, self._open_block = (kind, key), self._next_index
        self._next_index += 1
        events.append({"type": "content_block_start", "index": self._open_block, "content_block": block})
        return events

    def _close_open(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._open_block}]

    def _text(self, text: str) -> list[dict[str, Any]]:
        events = []
        if self._open is None or self._open[0] != "text":
            events = self._start_block("text", self._next_index, {"type": "text", "text": ""})
        events.append({
            "type": "content_block_delta",
            "index": self._open_block,
            "delta": {"type": "text_delta", "text": text},
        })
        return events

    def _tool_call(self, call: Any) -> list[dict[str, Any]]:
        if not isinstance(call, dict):
            raise UpstreamError("upstream sent a malformed tool call delta")
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        index = call.get("index")
        if not isinstance(index, int):  # a few compatible servers omit it: one call per id
            index = len(self._tool_blocks) if call.get("id") else max(self._tool_blocks, default=0)
        events: list[dict[str, Any]] = []
        if index not in self._tool_blocks:
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise UpstreamError("upstream started a tool call without a name")
            block = {"type": "tool_use", "id": call.get("id") or f"call_{index}", "name": name, "input": {}}
            events = self._start_block("tool", index, block)
            self._tool_blocks[index] = self._open_block
        elif self._open != ("tool", index):
            raise UpstreamError("upstream interleaved the deltas of several tool calls")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments)
        if isinstance(arguments, str) and arguments:
            events.append({
                "type": "content_block_delta",
                "index": self._open_block,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            })
        return events


class AnthropicToOpenAIStream:
    """Feed Anthropic stream events, get `chat.completion.chunk` dicts (for /v1/chat/completions).

    Produces: a first chunk with the assistant role, content and tool_calls deltas (tool index,
    id, name, then argument fragments), a chunk with `finish_reason`, and, when `include_usage`,
    a last chunk with empty `choices` and the usage (every other chunk then has `usage: null`,
    as OpenAI does). Thinking is dropped. One Anthropic message (`message_start` … `message_stop`)
    makes one completion.
    """

    def __init__(
        self, model: str, created_s: int, *, include_usage: bool = False, completion_id: str | None = None
    ) -> None:
        self._model = model
        self._created = created_s
        self._include_usage = include_usage
        self._id = completion_id
        self._tool_indexes: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._tool_count = 0
        self._stop_reason: str | None = None
        self._usage: dict[str, int] = {}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "message_start":
            message = event.get("message") if isinstance(event.get("message"), dict) else {}
            if self._id is None:
                self._id = completion_id(message.get("id"))
            self._merge_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            self._merge_usage(event.get("usage"))
            return []
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            error = event.get("error") if isinstance(event.get("error"), dict) else {}
            raise UpstreamError(str(error.get("message") or "upstream stream failed"))
        return []  # ping, content_block_stop and unknown events carry nothing for OpenAI

    def _block_start(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") if isinstance(event.get("content_block"), dict) else {}
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []
        tool_index = self._tool_count
        self._tool_count += 1
        self._tool_indexes[event.get("index", -1)] = tool_index
        initial = block.get("input")
        call = {
            "index": tool_index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": json.dumps(initial) if initial else ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            tool_index = self._tool_indexes.get(event.get("index", -1))
            if tool_index is not None:
                call = {"index": tool_index, "function": {"arguments": delta["partial_json"]}}
                return [self._chunk({"tool_calls": [call]})]
        return []

    def _message_stop(self) -> list[dict[str, Any]]:
        finish = STOP_TO_FINISH.get(self._stop_reason or "end_turn", "stop")
        chunks = [self._chunk({}, finish_reason=finish)]
        if self._include_usage:
            chunks.append({**self._envelope(), "choices": [], "usage": usage_to_openai(self._usage)})
        return chunks

    def _merge_usage(self, usage: Any) -> None:
        """Anthropic usage counts are cumulative: a later value replaces an earlier one."""
        if isinstance(usage, dict):
            for key, value in usage.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    self._usage[key] = value

    def _envelope(self) -> dict[str, Any]:
        if self._id is None:
            self._id = completion_id(None)
        return {
            "id": self._id,
            "object": CHUNK_OBJECT,
            "created": self._created,
            "model": self._model,
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk = {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk


class ChunkAccumulator:
    """Feed `chat.completion.chunk` dicts, read the `chat.completion` they stream (every choice,
    with usage once its chunk arrived). Works on a partial stream too: what was received so far.

    Bills a passthrough stream (`usage`) and answers a streamed call as one JSON (async jobs)."""

    def __init__(self) -> None:
        self.started = False
        self.deltas = 0  # content and argument deltas (a broken stream is billed at least one token each)
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None

    def feed(self, chunk: dict[str, Any]) -> None:
        if not self.started:
            self.started = True
            self._head = {k: chunk[k] for k in ("id", "created", "model", "service_tier", "system_fingerprint") if k in chunk}
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict):
                self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index") if isinstance(choice.get("index"), int) else 0
        whole = self._choices.setdefault(index, {
            "index": index,
            "message": {"role": "assistant", "content": None, "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        })
        message = whole["message"]
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str) and delta[key]:
                message[key] = (message[key] or "") + delta[key]
                self.deltas += 1
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                self._tool_call(message.setdefault("tool_calls", []), call)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = whole["logprobs"] = whole["logprobs"] or {}
            for key, items in logprobs.items():
                if isinstance(items, list):
                    merged.setdefault(key, []).extend(items)
        if choice.get("finish_reason"):
            whole["finish_reason"] = choice["finish_reason"]

    def _tool_call(self, calls: list[dict[str, Any]], call: dict[str, Any]) -> None:
        index = call.get("index") if isinstance(call.get("index"), int) else len(calls)
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        whole = calls[index]
        if call.get("id"):
            whole["id"] = call["id"]
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if isinstance(function.get("name"), str):
            whole["function"]["name"] += function["name"]
        if isinstance(function.get("arguments"), str) and function["arguments"]:
            whole["function"]["arguments"] += function["arguments"]
            self.deltas += 1

    def message(self) -> dict[str, Any]:
        return {
            **self._head,
            "object": COMPLETION_OBJECT,
            "choices": [self._choices[i] for i in sorted(self._choices)],
            "usage": self._usage,
        }
