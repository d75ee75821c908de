"""The hot inference routes (api/hot_routes.py) answer exactly as FastAPI's stack does: the same
requests — good ones, streams, and every kind of error — go over real HTTP to two apps on one
runtime, one with the fast path and one with it off, and status, headers, body, the request
counted and the log lines must match."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import pytest

from threadgate.api import hot_routes

LOCAL, GPT = "threadgate-local", "gpt-5.4-nano"
CHAT = {"model": LOCAL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": LOCAL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": GPT, "max_output_tokens": 32, "input": "hi"}
VARYING = {"id", "item_id", "created", "created_at", "request_id"}  # differ between any two answers
REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")


def _case(name: str, path: str, body: Any = None, *, key: str = "ok", method: str = "POST",
          headers: dict[str, str] | None = None, raw: bytes | None = None) -> Any:
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return pytest.param(method, path, key, headers or {}, content, id=name)


CASES = [
    _case("chat", "/v1/chat/completions", CHAT),
    _case("chat-stream", "/v1/chat/completions", {**CHAT, "stream": True}),
    _case("chat-stream-usage", "/v1/chat/completions",
          {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
    _case("messages", "/v1/messages", MESSAGES),
    _case("messages-stream", "/v1/messages", {**MESSAGES, "stream": True}),
    _case("responses", "/v1/responses", RESPONSES),
    _case("responses-stream", "/v1/responses", {**RESPONSES, "stream": True}),
    _case("responses-non-openai-model", "/v1/responses", {**RESPONSES, "model": LOCAL}),
    _case("no-key", "/v1/chat/completions", CHAT, key="none"),
    _case("wrong-key", "/v1/messages", MESSAGES, key="wrong"),
    _case("bearer", "/v1/chat/completions", CHAT, key="bearer"),
    _case("cap-402", "/v1/chat/completions", CHAT, key="capped"),
    _case("cap-402-messages", "/v1/messages", MESSAGES, key="capped"),
    _case("malformed-json", "/v1/chat/completions", raw=b'{"model": '),
    _case("empty-body", "/v1/messages", raw=b""),
    _case("not-an-object", "/v1/responses", [1, 2]),
    _case("missing-messages", "/v1/chat/completions", {"model": LOCAL}),
    _case("wrong-type", "/v1/messages", {**MESSAGES, "max_tokens": "many"}),
    _case("unknown-model", "/v1/chat/completions", {**CHAT, "model": "no-such-model"}),
    _case("integer-beyond-64-bits", "/v1/chat/completions", {**CHAT, "max_tokens": 10**30}),
    _case("unknown-field", "/v1/messages", {**MESSAGES, "no_such_field": 1}),
    _case("deep-nesting", "/v1/chat/completions", raw=b"[" * 100_000),
    _case("idempotency-key-bad", "/v1/chat/completions", CHAT, headers={"idempotency-key": "x" * 300}),
    _case("over-the-body-limit", "/v1/chat/completions", raw=b" " * (8 * 2**20 + 1)),
    _case("wrong-method", "/v1/chat/completions", method="GET"),
    _case("head", "/v1/messages", method="HEAD"),
    _case("trailing-slash", "/v1/messages/", MESSAGES),
]


@dataclass
class Pair:
    """Two apps on one runtime and one event loop (a runtime's upstream sessions belong to the
    loop that opened them), behind one server: `via: fastapi` picks the one without the fast path."""

    url: str
    runtime: Any
    openai_fake: Any
    keys: dict[str, str]
    to_fastapi: list[tuple[str, str]]  # what the fast app handed to FastAPI


FASTAPI_ONLY = {"via": "fastapi"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, fake_anthropic, fake_openai) -> Iterator[Pair]:
    from threadgate.api.app import create_app
    from threadgate.api.connection_limits import uvicorn_options
    from threadgate.bootstrap import ensure_first_admin
    from threadgate.runtime import build

    from tests.conftest import gateway_app, make_settings
    from tests.fakes.servers import serve_asgi

    settings = make_settings(tmp_path_factory.mktemp("hot_routes"), anthropic_api_key=fake_anthropic.api_key,
                             anthropic_base_url=fake_anthropic.base_url, openai_api_key=fake_openai.api_key,
                             openai_base_url=fake_openai.v1_url)
    rt = build(settings)
    rt.indexer = None  # search has its own tests
    admin = ensure_first_admin(rt.stores, rt.clock, settings)
    fast, slow = gateway_app(rt), create_app(rt)  # the fast one's lifespan runs (and closes rt)
    slow.hot.paths = {}
    to_fastapi: list[tuple[str, str]] = []
    fastapi = fast.hot.fastapi

    async def noted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            to_fastapi.append((scope["method"], scope["path"]))
        await fastapi(scope, receive, send)

    fast.hot.fastapi = noted

    async def either(scope: Any, receive: Any, send: Any) -> None:
        wants_slow = scope["type"] == "http" and (b"via", b"fastapi") in scope["headers"]
        await (slow if wants_slow else fast)(scope, receive, send)

    with serve_asgi(either, **uvicorn_options()) as url:
        def mint(**body: Any) -> str:
            r = httpx.post(url + "/v1/keys", headers={"x-api-key": admin}, json={"name": "k", **body})
            assert r.status_code == 201, r.text
            return r.json()["secret"]

        keys = {"ok": mint(), "capped": mint(max_spend_usd=0), "wrong": "qlk_live_" + "0" * 64}
        yield Pair(url, rt, fake_openai, keys, to_fastapi)


class Counted:
    """The account's request counts as stored (requests, errors, cap refusals). Read from the
    store, not noted at `add()`: a request's count may ride in its first reservation's write
    (domain/request_tally.py)."""

    def __init__(self, runtime: Any):
        self.store, self.account_id = runtime.stores.request_counts, runtime.stores.keys.first_account().id

    def totals(self) -> tuple[int, ...]:
        days = self.store.daily(self.account_id, "1970-01-01", "9999-12-31")
        return tuple(sum(getattr(d, name) for d in days) for name in ("requests", "errors", "cap_refusals"))


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "*" if k in VARYING else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _body(r: httpx.Response) -> Any:
    """JSON or SSE frames (each frame's JSON), with what differs between any two answers masked."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        frames = []
        for frame in r.text.split("\n\n"):
            lines = [ln.split(": ", 1) for ln in frame.splitlines() if ln]
            frames.append([(k, _masked(json.loads(v)) if k == "data" and v != "[DONE]" else v) for k, v in lines])
        return frames
    try:
        return _masked(r.json())
    except ValueError:
        return r.text


def _ask(pair: Pair, via: dict[str, str], method: str, path: str, key: str, headers: dict[str, str],
         content: bytes) -> tuple[Any, ...]:
    keys = pair.keys
    sent = {**headers, **via}
    if key == "bearer":
        sent["authorization"] = "Bearer " + keys["ok"]
    elif key != "none":
        sent["x-api-key"] = keys[key]
    with httpx.Client(base_url=pair.url, timeout=30) as c:
        r = c.request(method, path, headers=sent, content=content or None)
    assert REQUEST_ID.fullmatch(r.headers["request-id"]) and r.headers["x-request-id"] == r.headers["request-id"]
    kept = sorted((k, v) for k, v in r.headers.items() if k not in ("date", "request-id", "x-request-id"))
    return r.status_code, kept, _body(r)


def _logs(caplog: Any) -> list[tuple[str, str, str]]:
    return [(r.name, r.levelname, REQUEST_ID.sub("req_*", r.getMessage())) for r in caplog.records
            if r.name.startswith("threadgate")]


def _settled(counted: Counted, before: tuple[int, ...]) -> tuple[int, ...]:
    """What a request added to the counts (the rest is written after the answer: wait until they
    stop moving)."""
    seen, deadline = None, time.monotonic() + 2
    while time.monotonic() < deadline and seen != (now := counted.totals()):
        seen = now
        time.sleep(0.05)
    return tuple(n - b for n, b in zip(counted.totals(), before))


@pytest.mark.parametrize("method,path,key,headers,content", CASES)
def test_fast_path_answers_as_fastapi(pair, caplog, method, path, key, headers, content):
    pair.openai_fake.reset()
    counted = Counted(pair.runtime)
    answers = []
    for via in ({}, FASTAPI_ONLY):
        caplog.clear()
        before = counted.totals()
        with caplog.at_level(logging.INFO, logger="threadgate"):
            answer = _ask(pair, via, method, path, key, headers, content)
            added = _settled(counted, before)
        answers.append((answer, added, _logs(caplog)))
    assert answers[0] == answers[1]
    status = answers[0][0][0]
    assert status < 500, answers[0]
    if method == "POST" and path in hot_routes.HOT:
        assert (method, path) not in pair.to_fastapi, "served past FastAPI"
        if status not in (401, 413):
            assert answers[0][1][0] == 1, "an inference request is counted, once"


def test_an_unexpected_error_is_the_same_500_and_log_lines(pair, caplog, monkeypatch):
    from threadgate.api import passthrough

    def broken(*args: Any, **kw: Any) -> Any:
        raise ZeroDivisionError("secret detail")

    monkeypatch.setattr(passthrough, "chat", broken)
    answers = []
    for via in ({}, FASTAPI_ONLY):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="threadgate"):
            answer = _ask(pair, via, "POST", "/v1/chat/completions", "ok", {}, json.dumps(CHAT).encode())
            time.sleep(0.2)  # RequestContext logs once the answer is out
        answers.append((answer, _logs(caplog)))
    assert answers[0] == answers[1]
    (status, _, body), logs = answers[0]
    assert status == 500 and body["error"]["type"] == "api_error"
    assert "secret detail" not in str(logs) and any("ZeroDivisionError" in m for *_, m in logs)


def test_a_chunked_body_over_the_limit_is_the_same_413(pair):
    """No content-length: the limit is found while reading the body, inside the route."""
    limit = pair.runtime.settings.max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 2**16 + 2):
            yield b" " * 2**16

    answers = []
    for via in ({}, FASTAPI_ONLY):
        with httpx.Client(base_url=pair.url, timeout=30) as c:
            r = c.post("/v1/messages", headers={"x-api-key": pair.keys["ok"], **via}, content=chunks())
        answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1] and answers[0][0] == 413


def test_every_hot_route_fits_the_fast_path():
    """Each HOT endpoint needs only the request, get_principal and get_runtime (else handler_of
    refuses it)."""
    from threadgate.api.app import create_app

    from threadgate.api.app import ROUTE_MODULES

    for path, module in hot_routes.HOT.items():
        assert callable(hot_routes.handler_of(path))
        assert path.startswith(ROUTE_MODULES[module])  # the module the app loads for this path
    assert create_app().hot.paths is hot_routes.HOT
