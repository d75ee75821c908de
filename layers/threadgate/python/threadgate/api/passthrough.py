"""The HTTP side of passthrough (API.md §10): a caller's body → one metered `PassthroughCall`, and
its events → the caller's wire shape. Shared by /v1/chat/completions, /v1/messages, /v1/responses
and async jobs.

Same family (Chat Completions to an OpenAI model; Messages to a model reached in the Messages
shape) the body goes upstream as it came. Otherwise it is translated by
`providers/field_map.py` — completely, or 400 naming the field — before any money moves, and the
answer is translated back. Either way `field_map.guard` first refuses what cannot be metered.
The Responses API is served same-family only (OpenAI models): it is not translated, so another
model is refused by name rather than half-translated.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from threadgate import jsoncodec
from threadgate.api import idempotency, sse
from threadgate.api.deps import request_id
from threadgate.api.turn_http import run_turn
from threadgate.api.errors import validation_error
from threadgate.api.schemas import STORABLE, ChatCreate, MessagesCreate, ResponsesCreate, check_storable
from threadgate.domain.errors import InvalidRequest
from threadgate.domain.models import Principal
from threadgate.domain.passthrough import PassthroughCall, PassthroughSpec
from threadgate.providers import field_map
from threadgate.providers.openai.responses import MIN_OUTPUT_TOKENS
from threadgate.providers.openai.streams import AnthropicToOpenAIStream
from threadgate.providers.openai.translate import anthropic_response_to_openai, wants_usage_chunk
from threadgate.runtime import Runtime

Frames = Callable[[dict[str, Any]], list[bytes]]


@dataclass
class Passthrough:
    call: PassthroughCall
    render: Callable[[PassthroughCall], tuple[dict[str, Any], dict[str, str]]]  # JSON answer, headers
    stream_render: Frames  # one engine event (or sse.END) -> the caller's SSE frames


# Where a body may hold an integer beyond 64 bits (19 digits and more), which orjson reads as a float.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def json_body(raw: bytes) -> Any:
    """The request body as the caller sent it, checked storable: what `standard_body` answers,
    faster. orjson reads it when it can prove that by itself — it refuses NaN, Infinity, numbers
    beyond a double and lone surrogates, and keeps integers of up to 18 digits exact — several
    times faster than the standard parser plus the walk. Anything else (a run of 19 digits
    anywhere, whatever orjson refuses) goes to `standard_body`."""
    if not _LONG_DIGITS.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard parser decides, with the same answers as ever
    return standard_body(raw)


def standard_body(raw: bytes) -> Any:
    """The standard parser (integers exact) and the storability walk (schemas.unstorable: 400
    naming the first value that cannot be stored)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidRequest("malformed JSON body") from None
    except RecursionError:
        raise InvalidRequest("body: JSON nested too deeply") from None
    check_storable(body)
    return body


async def serve(request: Request, rt: Runtime, p: Principal, build: Callable[[Any, str], Passthrough]) -> Any:
    """A passthrough route: the body as sent, `build` (400 before any money moves), then an
    Idempotency-Key replay or the one metered call, answered as JSON or SSE."""
    raw = json_body(await request.body())
    call = build(raw, request_id(request))
    scope, replay = idempotency.claim_key(request, rt, p, raw)
    if replay is not None:
        return replay
    return await run_turn(request, rt, call.call, scope=scope, render=call.render, stream_render=call.stream_render)


def prepare(rt: Runtime, p: Principal, kind: str, raw: Any, rid: str) -> Passthrough:
    """An async job's call: `kind` "chat" (/v1/chat/completions) or "messages" (/v1/messages).
    It streams upstream whatever the body says (see background/jobs_runner.py)."""
    check_storable(raw)
    return (chat if kind == "chat" else messages)(rt, p, raw, rid, stream=True)


def chat(rt: Runtime, p: Principal, raw: Any, rid: str, *, stream: bool | None = None) -> Passthrough:
    """`raw`: a body already checked storable (json_body, prepare), as for `messages` and
    `responses`; `stream` None: as the body asks."""
    checked: ChatCreate = _checked(ChatCreate, raw)
    model = rt.model(checked.model)
    field_map.guard(field_map.CHAT, raw)
    field_map.check_service_tier(model, raw)
    upstream = rt.upstream_for(model, "openai")
    stream = checked.stream if stream is None else stream
    include_usage = wants_usage_chunk(raw)
    if upstream.wire == "openai":  # same family: as it came
        given = tuple(f for f in ("max_completion_tokens", "max_tokens") if raw.get(f) is not None)
        prediction = raw.get("prediction")
        spec = PassthroughSpec(
            p, model, rid, stream, {**raw, "model": model.upstream_id}, raw["messages"],
            max_tokens=checked.max_completion_tokens or checked.max_tokens,
            limit_fields=given or ("max_completion_tokens",),
            limit_required=False,
            choices=checked.n or 1,
            # Rejected predicted tokens are billed as output: at most one per byte of the prediction.
            extra_output_tokens=len(jsoncodec.dumps(prediction)) if prediction is not None else 0,
        )
        return Passthrough(
            PassthroughCall(rt.meter, spec, upstream),
            lambda c: (_renamed(c.result.message, model.id), _cost(c)),
            _chunks_as_they_came(model.id, include_usage),
        )
    body = field_map.chat_to_messages(raw)
    body["model"] = model.upstream_id
    spec = PassthroughSpec(p, model, rid, stream, body, body["messages"], max_tokens=body.get("max_tokens"))
    created = int(time.time())
    return Passthrough(
        PassthroughCall(rt.meter, spec, upstream),
        lambda c: (anthropic_response_to_openai(c.result.message, model.id, created), _cost(c)),
        _events_as_chunks(AnthropicToOpenAIStream(model.id, created, include_usage=include_usage)),
    )


def messages(
    rt: Runtime, p: Principal, raw: Any, rid: str, *, stream: bool | None = None,
    headers: Mapping[str, str] | None = None,
) -> Passthrough:
    """`stream` None: as the body asks; `headers`: the request's (some fields travel as headers)."""
    checked: MessagesCreate = _checked(MessagesCreate, raw)
    model = rt.model(checked.model)
    field_map.guard(field_map.MESSAGES, raw, headers)
    upstream = rt.upstream_for(model, "anthropic")
    stream = checked.stream if stream is None else stream
    if upstream.wire == "openai":
        body = field_map.messages_to_chat(raw)
        body["model"] = model.upstream_id
        spec = PassthroughSpec(
            p, model, rid, stream, body, body["messages"], max_tokens=checked.max_tokens,
            limit_fields=("max_completion_tokens",),
        )
    else:  # same family: as it came
        body = {**raw, "model": model.upstream_id}
        spec = PassthroughSpec(p, model, rid, stream, body, raw["messages"], max_tokens=checked.max_tokens)
    return Passthrough(
        PassthroughCall(rt.meter, spec, upstream),
        lambda c: (_renamed(c.result.message, model.id), _cost(c)),
        _events_as_they_came(model.id),
    )


def responses(rt: Runtime, p: Principal, raw: Any, rid: str) -> Passthrough:
    """A Responses API call to an OpenAI-family model, body and answer as they are."""
    checked: ResponsesCreate = _checked(ResponsesCreate, raw)
    model = rt.model(checked.model)
    upstream = rt.upstream_for(model, "responses")
    if upstream.wire != "responses":
        raise InvalidRequest(
            f"model: {model.id} is not an OpenAI model; /v1/responses serves OpenAI models only (the "
            "Responses API is not translated for other families); use /v1/chat/completions or /v1/messages",
            param="model",
        )
    field_map.guard(field_map.RESPONSES, raw)
    field_map.check_service_tier(model, raw)
    spec = PassthroughSpec(
        p, model, rid, checked.stream, {**raw, "model": model.upstream_id}, [],
        max_tokens=checked.max_output_tokens, limit_fields=("max_output_tokens",), limit_required=False,
        min_limit=MIN_OUTPUT_TOKENS,
    )
    return Passthrough(
        PassthroughCall(rt.meter, spec, upstream),
        lambda c: (_renamed(c.result.message, model.id), _cost(c)),
        _response_events(model.id),
    )


def _checked(schema: type[BaseModel], raw: Any) -> Any:
    try:
        return schema.model_validate(raw, context=STORABLE)  # checked before: not walked again
    except ValidationError as exc:
        raise validation_error(exc) from None  # type: ignore[arg-type]


def _cost(call: PassthroughCall) -> dict[str, str]:
    return {"x-qlaud-cost-micros": str(call.result.cost_micros)}


def _renamed(answer: dict[str, Any] | None, model_id: str) -> dict[str, Any]:
    """The upstream's answer as it came, under the gateway's model id."""
    return {**(answer or {}), "model": model_id}


# --- SSE frames in the caller's shape ------------------------------------------------------------


def _data(chunk: Any) -> bytes:
    return b"data: " + jsoncodec.dumps(chunk) + b"\n\n"


def _chat_control(event: dict[str, Any]) -> list[bytes]:
    """Chat Completions frames for what is not a chunk: the end, pings, a failure mid-stream."""
    kind = event.get("type")
    if kind == "_end":
        return [b"data: [DONE]\n\n"]
    if kind == "ping":
        return [b": ping\n\n"]
    if kind == "qlaud.error":
        err = event["error"]
        return [_data({"error": {"message": err["message"], "type": err["type"], "param": None, "code": err["type"]}})]
    return []


def _chunks_as_they_came(model_id: str, include_usage: bool) -> Frames:
    """Upstream chunks under the gateway's model id. The usage the gateway always asks for is
    removed again unless the caller asked for it too."""

    def frames(event: dict[str, Any]) -> list[bytes]:
        if "type" in event:
            return _chat_control(event)
        if not include_usage:
            if not event.get("choices") and isinstance(event.get("usage"), dict):
                return []
            event = {k: v for k, v in event.items() if k != "usage"}
        return [_data({**event, "model": model_id})]

    return frames


def _events_as_chunks(translator: AnthropicToOpenAIStream) -> Frames:
    def frames(event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type", "")
        if kind in ("_end", "ping") or kind.startswith("qlaud."):
            return _chat_control(event)
        return [_data(chunk) for chunk in translator.feed(event)]

    return frames


def _response_events(model_id: str) -> Frames:
    """Responses API events as they came, each `response` snapshot under the gateway's model id;
    a failure after the stream began is the API's own `error` event."""
    sequence = 0

    def frames(event: dict[str, Any]) -> list[bytes]:
        nonlocal sequence
        kind = event.get("type", "")
        if kind == "ping":
            return [b": ping\n\n"]
        if kind == "qlaud.error":
            err = event["error"]
            event = {"type": "error", "code": err["type"], "message": err["message"], "param": None,
                     "sequence_number": sequence}
        elif kind == "_end" or kind.startswith("qlaud."):
            return []
        elif isinstance(event.get("response"), dict):
            event = {**event, "response": _renamed(event["response"], model_id)}
        sequence = event.get("sequence_number", sequence) + 1
        return [sse.encode(event)]

    return frames


def _events_as_they_came(model_id: str) -> Frames:
    def frames(event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type", "")
        if kind == "message_start":
            event = {**event, "message": _renamed(event.get("message"), model_id)}
        elif kind == "qlaud.error":
            event = {"type": "error", "error": event["error"]}
        elif kind == "_end" or kind.startswith("qlaud."):
            return []
        return [sse.encode(event)]

    return frames
