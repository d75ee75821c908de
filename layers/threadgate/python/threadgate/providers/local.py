"""`threadgate-local`: the offline model, deterministic so that local mode, demos and tests work
without any provider key. The same request always gives the same answer, id and usage.

The rule, applied to the LAST `user` message of the request:

1. Tool results — if it holds `tool_result` blocks, the answer is
   "Tool results: " + the text of each result (in order) joined by "; ".
2. Tool calls — else, if the request has `tools` (and `tool_choice` is not `{"type": "none"}`)
   and the message's text mentions tool names as whole words, the answer is one text block
   "Calling <name>[, <name>…]." followed by one `tool_use` block per mentioned tool, in order of
   first mention, with `stop_reason` "tool_use". Each block's `input` is the first JSON object
   found in the text (else `{}`); its id is "toolu_" + 24 hex chars of a hash of the request,
   the tool name and its position.
3. Echo — else the answer is "Echo: " + the message's text blocks joined by spaces.

Text answers (rules 1 and 3) are whitespace-normalized into words. When a non-empty
`stop_sequences` entry occurs in the answer, it is cut before the earliest occurrence
(`stop_reason` "stop_sequence"); when more than `max_tokens` words remain, it is cut to
`max_tokens` words (`stop_reason` "max_tokens"); else `stop_reason` is "end_turn".

Usage: input_tokens = ceil(bytes of the compact JSON of {messages, system, tools} / 4) (never more
than the request's byte length, so it stays under the gateway's reservation bound);
output_tokens = streamed words + tool_use blocks (at least 1). No cache tokens.

`stream()` yields the Anthropic event sequence (message_start, then per block
content_block_start / deltas / content_block_stop, message_delta, message_stop): one
`text_delta` per word (the word and its following space; the last word has none), the tool input
as `input_json_delta` fragments, sleeping `word_delay_ms` between deltas. `create()` returns the
same message that accumulating the stream gives.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

MODEL_ID = "threadgate-local"
_JSON_FRAGMENT_CHARS = 16


@dataclass(frozen=True)
class _Answer:
    id: str
    model: str
    blocks: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int

    def usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        }


class LocalModelProvider:
    name = "local"

    def __init__(self, word_delay_ms: int = 15) -> None:
        self._delay_s = max(0, word_delay_ms) / 1000

    async def create(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = answer_for(request)
        return {
            "id": answer.id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [dict(block) for block in answer.blocks],
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
            "usage": answer.usage(answer.output_tokens),
        }

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        answer = answer_for(request)
        deltas_sent = 0
        for event in stream_events(answer):
            if event["type"] == "content_block_delta":
                if deltas_sent and self._delay_s:
                    await asyncio.sleep(self._delay_s)
                deltas_sent += 1
            yield event

    async def aclose(self) -> None:
        """Nothing to release; present so every provider can be closed alike."""


def answer_for(request: dict[str, Any]) -> _Answer:
    """Apply the module's rule to `request` (pure)."""
    digest = hashlib.sha256(_canonical({k: v for k, v in request.items() if k != "stream"})).hexdigest()
    message = _last_user_message(request.get("messages") or [])
    content = _blocks_of(message)
    text = " ".join(block.get("text", "") for block in content if block.get("type") == "text")
    results = [block for block in content if block.get("type") == "tool_result"]
    mentioned = [] if results else _mentioned_tools(request, text)

    stop_sequence = None
    if mentioned:
        words = f"Calling {', '.join(mentioned)}.".split()
        tool_input = _first_json_object(text)
        tool_blocks = [
            {
                "type": "tool_use",
                "id": "toolu_" + hashlib.sha256(f"{digest}:{position}:{name}".encode()).hexdigest()[:24],
                "name": name,
                "input": tool_input,
            }
            for position, name in enumerate(mentioned)
        ]
        stop_reason = "tool_use"
    else:
        tool_blocks = []
        if results:
            full = "Tool results: " + "; ".join(_result_text(block) for block in results)
        else:
            full = "Echo: " + text
        full, stop_sequence = _cut_at_stop_sequence(full, request.get("stop_sequences") or [])
        words = full.split()
        limit = max(1, int(request.get("max_tokens") or 1))
        if len(words) > limit:
            words, stop_reason, stop_sequence = words[:limit], "max_tokens", None
        else:
            stop_reason = "stop_sequence" if stop_sequence is not None else "end_turn"

    blocks = ([{"type": "text", "text": " ".join(words)}] if words else []) + tool_blocks
    counted = {key: request.get(key) for key in ("messages", "system", "tools")}
    return _Answer(
        id="msg_local_" + digest[:24],
        model=str(request.get("model") or MODEL_ID),
        blocks=blocks,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        input_tokens=max(1, math.ceil(len(_canonical(counted)) / 4)),
        output_tokens=max(1, len(words) + len(tool_blocks)),
    )


def stream_events(answer: _Answer) -> list[dict[str, Any]]:
    """The Anthropic stream events of `answer`, in order (pure)."""
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": answer.id,
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": answer.usage(1),
            },
        }
    ]
    for index, block in enumerate(answer.blocks):
        if block["type"] == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            words = block["text"].split(" ")
            for position, word in enumerate(words):
                piece = word if position == len(words) - 1 else word + " "
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
        else:
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}
            )
            raw = json.dumps(block["input"], ensure_ascii=False, separators=(",", ":"))
            for start in range(0, len(raw), _JSON_FRAGMENT_CHARS):
                fragment = raw[start : start + _JSON_FRAGMENT_CHARS]
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": fragment},
                    }
                )
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
            "usage": {"output_tokens": answer.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return events


def _canonical(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _last_user_message(messages: list[dict[str, Any]]) -> dict[str, Any]:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message
    return {"role": "user", "content": ""}


def _blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content or [] if isinstance(block, dict)]


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return " ".join(
        part.get("text", "")
        for part in content or []
        if isinstance(part, dict) and part.get("type") == "text"
    )


def _mentioned_tools(request: dict[str, Any], text: str) -> list[str]:
    if (request.get("tool_choice") or {}).get("type") == "none":
        return []
    first_mention: dict[str, int] = {}
    for tool in request.get("tools") or []:
        name = tool.get("name")
        if not name or name in first_mention:
            continue
        # Tool names may contain "-" and "_", so a "word" boundary excludes those too.
        match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        if match:
            first_mention[name] = match.start()
    return sorted(first_mention, key=lambda name: first_mention[name])


def _first_json_object(text: str) -> dict[str, Any]:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _cut_at_stop_sequence(text: str, stop_sequences: list[Any]) -> tuple[str, str | None]:
    found: tuple[int, str] | None = None
    for sequence in stop_sequences:
        if isinstance(sequence, str) and sequence:
            position = text.find(sequence)
            if position >= 0 and (found is None or position < found[0]):
                found = (position, sequence)
    if found is None:
        return text, None
    return text[: found[0]], found[1]
