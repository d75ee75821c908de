"""A scriptable fake of the Amazon Bedrock runtime Converse API, served over real HTTP, so the
gateway's real boto3 client talks to it (moto has no Bedrock runtime).

    with running_fake_bedrock() as fake:           # fake.endpoint_url for boto3
        fake.enqueue(BedrockReply(tool_uses=[("get_weather", {"city": "Paris"})]), BedrockReply(text="Sunny."))
        fake.fail_next("ThrottlingException")      # an error answer (status as Bedrock sends it)
        fake.stream_exception_after(2, "modelStreamErrorException")
        fake.requests[-1]                          # (model id, Converse request JSON)

`POST /model/{id}/converse` answers JSON; `POST /model/{id}/converse-stream` answers the
`application/vnd.amazon.eventstream` binary framing (prelude, headers, payload, CRC32s), which
botocore's own event-stream parser decodes — tests/integration/test_bedrock_provider.py checks
that through boto3. It enforces the Converse rules a translator can break (roles alternate
starting with user, a toolResult answers the toolUse just before it, toolConfig is present when
tools were used, reasoning sent back carries its signature, non-empty text) with a 400
ValidationException like the real service. Models whose id contains "sonnet-5-5" put the text
they say between tool calls into signed reasoning blocks, as Claude Sonnet 5.5 does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import zlib
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.servers import serve_asgi

_STATUS = {"ThrottlingException": 429, "ValidationException": 400, "AccessDeniedException": 403,
           "ResourceNotFoundException": 404, "ServiceUnavailableException": 503, "InternalServerException": 500}


@dataclass(frozen=True)
class BedrockReply:
    text: str | None = None
    tool_uses: tuple[tuple[str, dict[str, Any]], ...] | list = ()
    reasoning: str | None = None  # a signed reasoning block first
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int = 0
    cache_write: int = 0


@dataclass
class FakeBedrock:
    endpoint_url: str = ""
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _replies: deque = field(default_factory=deque)
    _failures: deque = field(default_factory=deque)
    _stream_faults: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(self, *replies: BedrockReply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def fail_next(self, code: str, message: str = "fake failure", times: int = 1) -> None:
        with self._lock:
            self._failures.extend([(code, message)] * times)

    def stream_exception_after(self, events: int, exception: str = "modelStreamErrorException") -> None:
        with self._lock:
            self._stream_faults.append((events, exception))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._replies.clear()
            self._failures.clear()
            self._stream_faults.clear()

    # --- the service ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
            return _error("UnrecognizedClientException", "missing SigV4 signature", 403)
        body = json.loads(await request.body())
        with self._lock:
            self.requests.append((model_id, body))
            failure = self._failures.popleft() if self._failures else None
            reply = self._replies.popleft() if self._replies else None
            fault = self._stream_faults.popleft() if self._stream_faults else None
        if failure is not None:
            return _error(failure[0], failure[1], _STATUS.get(failure[0], 400))
        problem = validation_problem(body)
        if problem:
            return _error("ValidationException", problem, 400)
        answer = build_answer(model_id, body, reply)
        if request.url.path.endswith("/converse-stream"):
            frames = stream_frames(answer, fault)
            return Response(b"".join(frames), media_type="application/vnd.amazon.eventstream")
        return JSONResponse(answer, headers={"x-amzn-requestid": answer.pop("_request_id")})

    def app(self) -> Starlette:
        routes = [Route("/model/{model_id:path}/converse", self._handle, methods=["POST"]),
                  Route("/model/{model_id:path}/converse-stream", self._handle, methods=["POST"])]
        return Starlette(routes=routes)


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-errortype": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"})


def validation_problem(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    if not messages or messages[0].get("role") != "user":
        return "A conversation must start with a user message."
    pending: set[str] = set()
    used_tools = False
    for i, m in enumerate(messages):
        if i and m["role"] == messages[i - 1]["role"]:
            return "A conversation must alternate between user and assistant roles."
        answered = {b["toolResult"]["toolUseId"] for b in m["content"] if "toolResult" in b}
        if answered != pending and m["role"] == "user" and (pending or answered):
            return f"messages.{i}: toolResult blocks do not match the toolUse blocks of the previous turn."
        pending = {b["toolUse"]["toolUseId"] for b in m["content"] if "toolUse" in b}
        used_tools = used_tools or bool(pending)
        for b in m["content"]:
            if "text" in b and not b["text"].strip():
                return f"messages.{i}: text content blocks must be non-empty."
            reasoning = (b.get("reasoningContent") or {}).get("reasoningText")
            if reasoning is not None and not reasoning.get("signature"):
                return f"messages.{i}: reasoning content must carry its signature."
    if used_tools and not body.get("toolConfig"):
        return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    return None


def _tokens(value: Any) -> int:
    return max(1, -(-len(json.dumps(value, sort_keys=True)) // 4))


def build_answer(model_id: str, body: dict[str, Any], reply: BedrockReply | None) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps([model_id, body], sort_keys=True).encode()).hexdigest()
    if reply is None:
        last = body["messages"][-1]["content"]
        words = " ".join(b["text"] for b in last if "text" in b) or "tool results received"
        reply = BedrockReply(text=f"Fake Bedrock reply to: {words}")
    content: list[dict[str, Any]] = []
    between_tools = "sonnet-5-5" in model_id and reply.tool_uses and reply.text
    if reply.reasoning or between_tools:
        content.append({"reasoningContent": {"reasoningText": {"text": reply.reasoning or reply.text,
                                                               "signature": f"sig_{digest[:32]}"}}})
    if reply.text and not between_tools:
        content.append({"text": reply.text})
    for n, (name, tool_input) in enumerate(reply.tool_uses):
        content.append({"toolUse": {"toolUseId": f"tooluse_{digest[n * 2:n * 2 + 22]}", "name": name, "input": tool_input}})
    words = sum(len(c.get("text", "").split()) for c in content) + len(reply.tool_uses)
    usage = {"inputTokens": reply.input_tokens if reply.input_tokens is not None else _tokens(body.get("messages")),
             "outputTokens": reply.output_tokens if reply.output_tokens is not None else max(1, words),
             "cacheReadInputTokens": reply.cache_read, "cacheWriteInputTokens": reply.cache_write}
    usage["totalTokens"] = sum(usage.values())
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": "tool_use" if reply.tool_uses else "end_turn",
            "usage": usage, "metrics": {"latencyMs": 7}, "_request_id": f"req-{digest[:16]}"}


# --- application/vnd.amazon.eventstream ------------------------------------------------------
# Written here because no maintained Python library exposes an event-stream ENCODER (botocore
# ships only the decoder, which is what checks these frames on the client side).


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return head + struct.pack(">I", zlib.crc32(head))


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps(payload).encode())


def stream_events(answer: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for index, block in enumerate(answer["output"]["message"]["content"]):
        if "toolUse" in block:
            use = block["toolUse"]
            events.append(("contentBlockStart", {"contentBlockIndex": index,
                                                 "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
            raw = json.dumps(use["input"])
            for part in (raw[: len(raw) // 2], raw[len(raw) // 2:]):
                events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": part}}}))
        elif "reasoningContent" in block:
            text = block["reasoningContent"]["reasoningText"]
            events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": {"reasoningContent": {"text": text["text"]}}}))
            events.append(("contentBlockDelta", {"contentBlockIndex": index,
                                                 "delta": {"reasoningContent": {"signature": text["signature"]}}}))
        else:
            for word in block["text"].split(" "):
                events.append(("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": word + " "}}))
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": answer["stopReason"]}))
    events.append(("metadata", {"usage": answer["usage"], "metrics": answer["metrics"]}))
    return events


def stream_frames(answer: dict[str, Any], fault: tuple[int, str] | None) -> list[bytes]:
    frames = [_event(kind, payload) for kind, payload in stream_events(answer)]
    if fault is not None:
        after, exception = fault
        frames = frames[:after] + [frame({":exception-type": exception, ":content-type": "application/json",
                                          ":message-type": "exception"}, json.dumps({"message": "fake stream fault"}).encode())]
    return frames


@contextmanager
def running_fake_bedrock() -> Iterator[FakeBedrock]:
    fake = FakeBedrock()
    with serve_asgi(fake.app()) as url:
        fake.endpoint_url = url
        yield fake


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
