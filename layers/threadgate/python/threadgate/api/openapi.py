"""The published contract (`GET /openapi.json`), in ONE place: for every route, its success
answer's schema and every error status it can answer (all in the API's error envelope), plus the
security scheme. FastAPI contributes the paths, parameters and request bodies it derives from the
route signatures; this module replaces what it gets wrong (a 422 we never send, no error
statuses, no response schemas, no security) and adds what it cannot see (the bodies of
/v1/chat/completions, /v1/messages and /v1/responses, which the routes parse themselves).

Adding a route? Add its `Contract` to ROUTES below; tests/integration/test_openapi.py fails, naming
the route, until you do. docs/api.md stays the prose reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.openapi.utils import get_openapi

from threadgate.api.errors import OPENAI_SHAPED_PATHS

Schema = dict[str, Any]

STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
ANY_OBJECT: Schema = {"type": "object"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(**fields: Schema) -> Schema:
    """An object with these fields, all present (extra fields allowed: answers may grow)."""
    return {"type": "object", "properties": fields, "required": list(fields)}


def list_of(item: Schema, **extra: Schema) -> Schema:
    return obj(object={"const": "list"}, data={"type": "array", "items": item}, **extra)


KEY = obj(id=STR, object={"const": "key"}, name=STR, prefix=STR, scope={"enum": ["standard", "admin"]},
          max_spend_usd=nullable(NUM), end_user_id=nullable(STR), metadata=nullable(ANY_OBJECT),
          spent_micros=INT, created_at=INT, last_used_at=nullable(INT), revoked=BOOL)
NEW_KEY = obj(id=STR, object={"const": "key"}, name=STR, prefix=STR, scope=STR, max_spend_usd=nullable(NUM),
              end_user_id=nullable(STR), metadata=nullable(ANY_OBJECT), created_at=INT, secret=STR)
SELF_KEY = obj(id=STR, name=STR, prefix=STR, scope=STR, end_user_id=nullable(STR), cap_micros=nullable(INT),
               spent_micros=INT, reserved_micros=INT, remaining_micros=nullable(INT))
ACCOUNT = obj(id=STR, object={"const": "account"}, name=STR, max_spend_usd=nullable(NUM), spent_micros=INT,
              reserved_micros=INT, created_at=INT)
USAGE = obj(object={"const": "usage"}, from_ms=INT, to_ms=INT, total_cost_micros=INT, request_count=INT)
KEY_USAGE = obj(key_id=STR, from_ms=INT, to_ms=INT, cost_micros=INT, spent_micros=INT, request_count=INT,
                events={"type": "array", "items": ANY_OBJECT})
MODEL = obj(id=STR, object={"const": "model"}, provider=STR, context_window=INT, max_output_tokens=INT,
            price_tiers=ANY_OBJECT, price_source=STR)
THREAD = obj(id=STR, object={"const": "thread"}, end_user_id=nullable(STR), metadata=nullable(ANY_OBJECT),
             title=nullable(STR), created_at=INT, last_active_at=INT, message_count=INT)
DELETED_THREAD = obj(id=STR, object={"const": "thread"}, deleted={"const": True})
STORED_MESSAGE = obj(seq=INT, role=STR, content={"anyOf": [STR, {"type": "array"}]}, created_at=INT)
CONTENT_BLOCKS = {"type": "array", "items": obj(type=STR)}
# An Anthropic Messages answer (thread turns add hit_max_iterations).
MESSAGE = obj(id=STR, type={"const": "message"}, role={"const": "assistant"}, content=CONTENT_BLOCKS, model=STR,
              stop_reason=nullable(STR), usage=obj(input_tokens=INT, output_tokens=INT))
CHAT_COMPLETION = obj(id=STR, object={"const": "chat.completion"}, created=INT, model=STR,
                      choices={"type": "array", "items": obj(index=INT, message=obj(role=STR),
                                                             finish_reason=nullable(STR))},
                      usage=obj(prompt_tokens=INT, completion_tokens=INT, total_tokens=INT))
# An OpenAI Responses API `response`, as the upstream answered it (under the catalog model id).
RESPONSE = obj(id=STR, object={"const": "response"}, created_at=INT, model=STR, status=STR,
               output={"type": "array", "items": obj(type=STR)},
               usage=nullable(obj(input_tokens=INT, output_tokens=INT, total_tokens=INT)))
TOOL = obj(id=STR, object={"const": "tool"}, name=STR, description=STR, input_schema=ANY_OBJECT, webhook_url=STR,
           timeout_ms=INT, created_at=INT)
NEW_TOOL = {**TOOL, "required": [*TOOL["required"], "secret"],
            "properties": {**TOOL["properties"], "secret": STR}}
JOB = obj(id=STR, object={"const": "job"}, status={"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
          endpoint=STR, model=nullable(STR), created_at=INT, started_at=nullable(INT), completed_at=nullable(INT),
          response=nullable(ANY_OBJECT), error=nullable(ANY_OBJECT), cost_micros=INT)
NEW_JOB = obj(id=STR, object={"const": "job"}, status={"const": "queued"}, endpoint=STR, created_at=INT)
RUN = obj(id=STR, object={"const": "run"}, thread_id=STR,
          status={"enum": ["running", "completed", "failed", "cancelled", "limit_reached"]}, model=STR,
          iterations=INT, max_iterations=INT, hit_max_iterations=BOOL, incomplete=BOOL, cancel_requested=BOOL,
          assistant_seq=nullable(INT), cost_micros=INT, usage=ANY_OBJECT, error=nullable(ANY_OBJECT),
          job_id=nullable(STR), attempts=INT, created_at=INT, updated_at=INT)
DELIVERY = obj(object={"const": "delivery"}, tool_id=STR, attempt=INT, outcome=STR, status_code=nullable(INT),
               reason=nullable(STR), latency_ms=nullable(INT), created_at=INT)
DAILY_REQUESTS = obj(object={"const": "list"}, from_ms=INT, to_ms=INT, data={"type": "array", "items": ANY_OBJECT})
SEARCH = obj(object={"const": "list"}, query=STR, data={"type": "array", "items": ANY_OBJECT})
OK = obj(ok={"const": True})
HEALTH = obj(status={"const": "ok"}, version=STR)

# What /v1/chat/completions reads (OpenAI's shape); the route validates the rest and answers 400.
CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": STR,
        "messages": {"type": "array", "minItems": 1, "items": obj(role=STR)},
        "max_tokens": INT,
        "max_completion_tokens": INT,
        "stream": BOOL,
        "stream_options": ANY_OBJECT,
        "temperature": NUM,
        "top_p": NUM,
        "stop": {"anyOf": [STR, {"type": "array", "items": STR}]},
        "tools": {"type": "array", "items": ANY_OBJECT},
        "tool_choice": {"anyOf": [STR, ANY_OBJECT]},
    },
}

# What /v1/responses reads (OpenAI's Responses API, OpenAI models only); the rest of the body is
# forwarded as it came, and refused with 400 naming the field where it cannot be metered.
RESPONSES_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": STR,
        "input": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": ANY_OBJECT}]},
        "instructions": STR,
        "max_output_tokens": INT,
        "stream": BOOL,
        "tools": {"type": "array", "items": ANY_OBJECT},
        "tool_choice": {"anyOf": [STR, ANY_OBJECT]},
        "service_tier": STR,
    },
}

# What /v1/messages reads (Anthropic's shape); the rest of the body is forwarded as it came or
# translated field by field (providers/field_map.py), and refused with 400 where it cannot be.
MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": STR,
        "max_tokens": INT,
        "messages": {"type": "array", "minItems": 1,
                     "items": obj(role={"enum": ["user", "assistant"]},
                                  content={"anyOf": [STR, {"type": "array", "items": ANY_OBJECT}]})},
        "system": {"anyOf": [STR, {"type": "array", "items": ANY_OBJECT}]},
        "stream": BOOL,
        "tools": {"type": "array", "items": ANY_OBJECT},
        "tool_choice": ANY_OBJECT,
    },
}

ERROR_TEXT = {
    400: "Invalid request: the message names the offending field",
    401: "Missing, malformed, unknown or revoked API key",
    402: "The key's cap or the account's budget cannot cover the call",
    403: "The route needs an admin key",
    404: "Not found (also: not visible to this key)",
    405: "Method not allowed on this path (see the Allow header)",
    408: "The request head did not arrive in time",
    409: "Conflict (busy thread: see Retry-After; reused Idempotency-Key, revoked key, last admin key, run ended...)",
    413: "Request body too large",
    414: "Request line too long",
    429: "Rate limit reached (see Retry-After)",
    431: "Request headers too large or too many",
    501: "Not available on this deployment",
    502: "The upstream provider failed",
    503: "The upstream provider is overloaded",
    504: "The upstream provider timed out",
}

# Statuses any route can answer: the connection limits and routing (api/connection_limits.py).
EVERYWHERE = (405, 408, 414, 431)
PUBLIC = ()
KEYED = (400, 401, 429)  # any route behind a key: bad parameters, bad key, rate limit
ADMIN = (*KEYED, 403)
BODY = (413,)
TURN = (*BODY, 402, 404, 409, 502, 503, 504)  # a model call: budget, model, busy thread, upstream


@dataclass(frozen=True)
class Contract:
    status: int
    schema: Schema
    errors: tuple[int, ...]
    streams: bool = False  # `"stream": true` answers text/event-stream instead
    public: bool = False  # no API key
    request: Schema | None = None  # a body FastAPI cannot see
    accepted: Schema | None = None  # 202 with this body: still running past the route's time
    sse_only: bool = False  # always text/event-stream


ROUTES: dict[tuple[str, str], Contract] = {
    ("GET", "/health"): Contract(200, HEALTH, PUBLIC, public=True),
    ("GET", "/v1/key"): Contract(200, SELF_KEY, KEYED),
    ("GET", "/v1/keys"): Contract(200, obj(keys={"type": "array", "items": KEY}), ADMIN),
    ("POST", "/v1/keys"): Contract(201, NEW_KEY, (*ADMIN, *BODY, 409)),
    ("GET", "/v1/keys/{key_id}"): Contract(200, KEY, (*ADMIN, 404)),
    ("PATCH", "/v1/keys/{key_id}"): Contract(200, KEY, (*ADMIN, *BODY, 404, 409)),
    ("DELETE", "/v1/keys/{key_id}"): Contract(200, OK, (*ADMIN, 404, 409)),
    ("GET", "/v1/keys/{key_id}/usage"): Contract(200, KEY_USAGE, (*ADMIN, 404)),
    ("GET", "/v1/account"): Contract(200, ACCOUNT, (*ADMIN, 404)),
    ("PATCH", "/v1/account"): Contract(200, ACCOUNT, (*ADMIN, *BODY)),
    ("GET", "/v1/usage"): Contract(200, USAGE, ADMIN),
    ("GET", "/v1/usage/requests"): Contract(200, DAILY_REQUESTS, ADMIN),
    ("GET", "/v1/models"): Contract(200, list_of(MODEL), KEYED),
    ("POST", "/v1/threads"): Contract(201, THREAD, (*KEYED, *BODY, 404)),
    ("GET", "/v1/threads"): Contract(200, list_of(THREAD, has_more=BOOL, next_cursor=nullable(STR)), (*KEYED, 404)),
    ("GET", "/v1/threads/{thread_id}"): Contract(200, THREAD, (*KEYED, 404)),
    ("PATCH", "/v1/threads/{thread_id}"): Contract(200, THREAD, (*KEYED, *BODY, 404, 409)),
    ("DELETE", "/v1/threads/{thread_id}"): Contract(200, DELETED_THREAD, (*KEYED, 404, 409)),
    ("GET", "/v1/threads/{thread_id}/messages"): Contract(
        200, list_of(STORED_MESSAGE, has_more=BOOL, first_seq=nullable(INT), last_seq=nullable(INT)), (*KEYED, 404)),
    ("POST", "/v1/threads/{thread_id}/messages"): Contract(200, MESSAGE, (*KEYED, *TURN), streams=True, accepted=RUN),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}"): Contract(200, RUN, (*KEYED, 404)),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}/events"): Contract(200, STR, (*KEYED, 404), sse_only=True),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}/cancel"): Contract(200, RUN, (*KEYED, 404, 409)),
    ("POST", "/v1/messages"): Contract(200, MESSAGE, (*KEYED, *TURN), streams=True, request=MESSAGES_REQUEST),
    ("POST", "/v1/chat/completions"): Contract(200, CHAT_COMPLETION, (*KEYED, *TURN), streams=True,
                                               request=CHAT_REQUEST),
    ("POST", "/v1/responses"): Contract(200, RESPONSE, (*KEYED, *TURN), streams=True, request=RESPONSES_REQUEST),
    ("GET", "/v1/tools"): Contract(200, list_of(TOOL), ADMIN),
    ("POST", "/v1/tools"): Contract(201, NEW_TOOL, (*ADMIN, *BODY, 409)),
    ("GET", "/v1/tools/{tool_id}"): Contract(200, TOOL, (*ADMIN, 404)),
    ("DELETE", "/v1/tools/{tool_id}"): Contract(200, OK, (*ADMIN, 404)),
    ("GET", "/v1/tools/{tool_id}/deliveries"): Contract(200, list_of(DELIVERY), (*ADMIN, 404)),
    ("GET", "/v1/search"): Contract(200, SEARCH, (*KEYED, 404)),
    ("GET", "/v1/threads/{thread_id}/search"): Contract(200, SEARCH, (*KEYED, 404)),
    ("POST", "/v1/jobs"): Contract(202, NEW_JOB, (*KEYED, *BODY, 402, 404, 409, 501)),
    ("GET", "/v1/jobs"): Contract(200, list_of(JOB, has_more=BOOL), (*KEYED, 501)),
    ("GET", "/v1/jobs/{job_id}"): Contract(200, JOB, (*KEYED, 404, 501)),
    ("DELETE", "/v1/jobs/{job_id}"): Contract(200, JOB, (*KEYED, 404, 409, 501)),
}

ANTHROPIC_ERROR = obj(type={"const": "error"}, error=obj(type=STR, message=STR))
OPENAI_ERROR = obj(error=obj(message=STR, type=STR, param=nullable(STR), code=nullable(STR)))
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "the same key as Authorization: Bearer"},
}


def build(app: Any) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="Threadgate: per-user keys with hard caps, threads, tools, usage. See docs/api.md.")
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, never sent
        schemas.pop(name, None)
    schemas["Error"], schemas["OpenAIError"] = ANTHROPIC_ERROR, OPENAI_ERROR
    components["securitySchemes"] = SECURITY_SCHEMES
    paths = doc.setdefault("paths", {})
    for (method, path), contract in ROUTES.items():
        operation = paths.setdefault(path, {}).setdefault(method.lower(), {"summary": f"{method} {path}"})
        _describe(operation, path, contract)
    return doc


def _describe(operation: dict[str, Any], path: str, contract: Contract) -> None:
    error_ref = {"$ref": "#/components/schemas/" + ("OpenAIError" if path in OPENAI_SHAPED_PATHS else "Error")}
    content: dict[str, Any] = {} if contract.sse_only else {"application/json": {"schema": contract.schema}}
    if contract.streams or contract.sse_only:
        content["text/event-stream"] = {"schema": STR}
    responses: dict[str, Any] = {str(contract.status): {"description": "Success", "content": content}}
    if contract.accepted is not None:
        responses["202"] = {"description": "Still running after the route's time: the run (poll or stream it)",
                            "content": {"application/json": {"schema": contract.accepted}}}
    for status in sorted({*contract.errors, *EVERYWHERE}):
        responses[str(status)] = {"description": ERROR_TEXT[status],
                                  "content": {"application/json": {"schema": error_ref}}}
    operation["responses"] = responses
    operation["security"] = [] if contract.public else [{"ApiKey": []}, {"Bearer": []}]
    if contract.request is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": contract.request}}}


def install(app: Any) -> None:
    """Serve `build(app)` at /openapi.json, built once on first request (not at import: cold start)."""
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "doc" not in cache:
            cache["doc"] = build(app)
        return cache["doc"]

    app.openapi = openapi
