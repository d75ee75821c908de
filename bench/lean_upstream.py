"""A lean fake LLM upstream for side-by-side benchmarks: a raw ASGI app (no framework), so the
upstream's own cost per request (~0.07 ms) is small next to what the gateways add.

It speaks just enough of both wire formats for any gateway and the official SDKs to accept it:
OpenAI `POST /v1/chat/completions` (JSON, or SSE chunks ending with a usage chunk when
`stream_options.include_usage` is set, then `[DONE]`) and Anthropic `POST /v1/messages` (JSON or
the event stream). Every answer is the same 16 words, so gateways can be checked to answer alike.

    python bench/lean_upstream.py PORT
"""

from __future__ import annotations

import sys
import time

import orjson

WORDS = ["word%d" % i for i in range(16)]
TEXT = " ".join(WORDS)


def _usage_in(body: dict) -> int:
    return max(1, len(orjson.dumps(body.get("messages") or [])) // 4)


async def _read(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_json(send, status: int, payload: dict) -> None:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_sse(send, frames: list[bytes]) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _openai(body: dict) -> tuple[dict | None, list[bytes] | None]:
    prompt, completion = _usage_in(body), len(WORDS)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    base = {"id": "chatcmpl-lean", "created": int(time.time()), "model": body.get("model", "lean")}
    if not body.get("stream"):
        return {**base, "object": "chat.completion", "usage": usage, "choices": [{
            "index": 0, "finish_reason": "stop", "logprobs": None,
            "message": {"role": "assistant", "content": TEXT, "refusal": None}}]}, None
    chunk = {**base, "object": "chat.completion.chunk"}
    frames = [orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    for i, word in enumerate(WORDS):
        piece = word if i == 0 else " " + word
        frames.append(orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
    frames.append(orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        frames.append(orjson.dumps({**chunk, "choices": [], "usage": usage}))
    return None, [b"data: " + f + b"\n\n" for f in frames] + [b"data: [DONE]\n\n"]


def _anthropic(body: dict) -> tuple[dict | None, list[bytes] | None]:
    prompt, completion = _usage_in(body), len(WORDS)
    message = {"id": "msg_lean", "type": "message", "role": "assistant", "model": body.get("model", "lean"),
               "stop_reason": "end_turn", "stop_sequence": None}
    if not body.get("stream"):
        return {**message, "content": [{"type": "text", "text": TEXT}],
                "usage": {"input_tokens": prompt, "output_tokens": completion}}, None
    events = [("message_start", {"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})]
    for i, word in enumerate(WORDS):
        piece = word if i == 0 else " " + word
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}}))
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": completion}}),
               ("message_stop", {"type": "message_stop"})]
    return None, [b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events]


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if scope["method"] == "GET":
        await _send_json(send, 200, {"status": "ok"})
        return
    body = orjson.loads(await _read(receive) or b"{}")
    if path.endswith("/chat/completions"):
        payload, frames = _openai(body)
    elif path.endswith("/messages"):
        payload, frames = _anthropic(body)
    else:
        await _send_json(send, 404, {"error": {"type": "not_found", "message": path}})
        return
    if frames is None:
        await _send_json(send, 200, payload)
    else:
        await _send_sse(send, frames)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
