"""POST /v1/chat/completions: OpenAI shape in and out, any catalog model (API.md §10)."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from threadgate.api import idempotency
from threadgate.api.deps import get_principal, get_runtime, request_id
from threadgate.api.errors import validation_error
from threadgate.api.routes.messages import passthrough_turn
from threadgate.api.schemas import MessagesCreate, check_storable
from threadgate.api.turn_http import run_turn
from threadgate.domain.errors import InvalidRequest
from threadgate.domain.models import Principal
from threadgate.domain.turns import Turn
from threadgate.providers.openai.streams import AnthropicToOpenAIStream
from threadgate.providers.openai.translate import (
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    wants_usage_chunk,
)
from threadgate.runtime import Runtime

router = APIRouter()


def _data(chunk: Any) -> bytes:
    return f"data: {json.dumps(chunk, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


def chat_body(raw: Any) -> MessagesCreate:
    """An OpenAI chat request, translated and checked as the Anthropic body it becomes (400s
    name the OpenAI field). Shared with async jobs."""
    check_storable(raw)  # before translation, so a 400 names the field the caller sent
    anthropic_request = openai_request_to_anthropic(raw)
    try:
        return MessagesCreate.model_validate(anthropic_request)
    except ValidationError as exc:
        raise validation_error(exc) from None


def chat_answer(turn: Turn, created: int) -> tuple[dict[str, Any], dict[str, str]]:
    return anthropic_response_to_openai(turn.final_message(), turn.spec.model.id, created), {
        "x-qlaud-cost-micros": str(turn.result.cost_micros)
    }


@router.post("/v1/chat/completions")
async def chat_completions(
    request: Request, p: Principal = Depends(get_principal), rt: Runtime = Depends(get_runtime)
) -> Any:
    try:
        raw = json.loads(await request.body())
    except ValueError:
        raise InvalidRequest("malformed JSON body") from None
    body = chat_body(raw)
    turn = passthrough_turn(rt, p, body, request_id(request), stream=body.stream)
    scope, replay = idempotency.claim_key(request, rt, p, body)
    if replay is not None:
        return replay
    model = turn.spec.model
    created = int(time.time())
    translator = AnthropicToOpenAIStream(model.id, created, include_usage=wants_usage_chunk(raw))

    def wire(event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type", "")
        if kind == "_end":
            return [b"data: [DONE]\n\n"]
        if kind == "ping":
            return [b": ping\n\n"]
        if kind == "qlaud.error":
            err = event["error"]
            return [_data({"error": {"message": err["message"], "type": err["type"], "param": None, "code": err["type"]}})]
        if kind.startswith("qlaud."):
            return []
        return [_data(chunk) for chunk in translator.feed(event)]

    return await run_turn(
        request, rt, turn, scope=scope, render=lambda t: chat_answer(t, created), stream_render=wire
    )
