"""Bad requests on every core route: the documented status and error envelope, a request id,
never a 500, and nothing changed in the stores or upstream afterwards (API.md §1–6, §12)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway, gateway_app, make_settings

LOCAL = "threadgate-local"
TURN = {"model": LOCAL, "max_tokens": 20, "content": "hello"}
PASSTHROUGH = {"model": LOCAL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "request_too_large"}
BIG = str(10**30)  # beyond any 64-bit column
HUGE_METADATA = {"pad": "m" * 17_000}  # over the 16 KiB of JSON a key or thread may carry


@dataclass
class World:
    gw: Gateway
    secrets: dict[str, str]  # role -> secret
    ids: dict[str, str]  # placeholder -> id
    account_ids: list[str]
    http: httpx.Client  # no keep-alive: each request on a fresh connection, as a stray client would


def fresh_connections(url: str) -> httpx.Client:
    # One client (building one costs an SSL context), a new connection per request (a reused
    # loopback connection waits for delayed ACKs: ~40 ms a request).
    return httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))


@pytest.fixture(scope="module")
def world(tmp_path_factory, fake_anthropic) -> Iterator[World]:
    """One gateway for the whole table (a gateway per case would cost seconds)."""
    from threadgate.api.routes.keys import mint_key
    from threadgate.api.schemas import KeyCreate
    from threadgate.bootstrap import create_account, ensure_first_admin
    from threadgate.runtime import build

    from threadgate.api.connection_limits import uvicorn_options

    from tests.fakes.servers import serve_asgi

    fake_anthropic.reset()
    settings = make_settings(tmp_path_factory.mktemp("bad_input"), anthropic_api_key=fake_anthropic.api_key,
                             anthropic_base_url=fake_anthropic.base_url)
    rt = build(settings)
    rt.indexer = None  # search is tested on its own; here it would only load an embedding model
    admin = ensure_first_admin(rt.stores, rt.clock, settings)
    with serve_asgi(gateway_app(rt), **uvicorn_options()) as url:
        gw = Gateway(url=url, admin_key=admin, runtime=rt, fake=fake_anthropic)
        std, bound, revoked = gw.mint(), gw.mint(end_user_id="u1"), gw.mint()
        with gw.admin() as c:
            assert c.delete(f"/v1/keys/{revoked['id']}").status_code == 200
            thread = c.post("/v1/threads", json={"metadata": {"a": 1}}).json()
            assert c.post(f"/v1/threads/{thread['id']}/messages", json=TURN).status_code == 200
            other_user_thread = c.post("/v1/threads", json={"end_user_id": "u2"}).json()
        other = create_account(rt.stores, rt.clock, "other")
        foreign_key, foreign_secret = mint_key(rt, other.id, KeyCreate(name="foreign", scope="admin"))
        with gw.client(foreign_secret) as c:
            foreign_thread = c.post("/v1/threads", json={}).json()
        with fresh_connections(url) as http:
            yield World(
                gw=gw,
                http=http,
                secrets={"admin": admin, "standard": std["secret"], "bound": bound["secret"],
                         "revoked": revoked["secret"], "foreign": foreign_secret},
                ids={"key": std["id"], "thread": thread["id"], "u2_thread": other_user_thread["id"],
                     "foreign_key": foreign_key.id, "foreign_thread": foreign_thread["id"]},
                account_ids=[rt.stores.keys.first_account().id, other.id],
            )


def snapshot(w: World) -> dict[str, Any]:
    """Everything a bad request must not change, read straight from the stores."""
    s = w.gw.runtime.stores
    state: dict[str, Any] = {"upstream_calls": len(w.gw.fake.requests)}
    for acct in w.account_ids:
        keys = [{**dataclasses.asdict(k), "last_used_at": None} for k in s.keys.list_keys(acct)]
        threads = s.threads.list_threads(acct, None, 1000)
        state[acct] = {
            "account": dataclasses.asdict(s.keys.get_account(acct)),
            "keys": keys,
            "threads": [dataclasses.asdict(t) for t in threads],
            "messages": {t.id: len(s.threads.list_messages(acct, t.id)) for t in threads},
            "usage": len(s.ledger.usage_events(acct, 0, 2**62)),
        }
    return state


@dataclass
class Case:
    method: str
    path: str
    status: int
    as_: str | None = "admin"  # whose key; None = no key
    names: str | None = None  # for 400s: the message must name this field
    json: Any = None
    content: bytes | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def case(name: str, *args: Any, **kw: Any) -> Any:
    return pytest.param(Case(*args, **kw), id=name)


T = "/v1/threads/{thread}"
K = "/v1/keys/{key}"
JSON_CT = {"content-type": "application/json"}

CASES = [
    # --- POST /v1/keys
    case("keys-missing-name", "POST", "/v1/keys", 400, names="name", json={}),
    case("keys-name-int", "POST", "/v1/keys", 400, names="name", json={"name": 5}),
    case("keys-name-empty", "POST", "/v1/keys", 400, names="name", json={"name": ""}),
    case("keys-name-201", "POST", "/v1/keys", 400, names="name", json={"name": "x" * 201}),
    case("keys-cap-string", "POST", "/v1/keys", 400, names="max_spend_usd", json={"name": "x", "max_spend_usd": "1"}),
    case("keys-cap-bool", "POST", "/v1/keys", 400, names="max_spend_usd", json={"name": "x", "max_spend_usd": True}),
    case("keys-cap-negative", "POST", "/v1/keys", 400, names="max_spend_usd", json={"name": "x", "max_spend_usd": -1}),
    case("keys-cap-nan", "POST", "/v1/keys", 400, names="max_spend_usd",
         content=b'{"name":"x","max_spend_usd":NaN}', headers=JSON_CT),
    case("keys-scope-bad", "POST", "/v1/keys", 400, names="scope", json={"name": "x", "scope": "root"}),
    case("keys-metadata-list", "POST", "/v1/keys", 400, names="metadata", json={"name": "x", "metadata": []}),
    case("keys-metadata-nan", "POST", "/v1/keys", 400, names="metadata",
         content=b'{"name":"x","metadata":{"a":NaN}}', headers=JSON_CT),
    case("keys-metadata-too-big", "POST", "/v1/keys", 400, names="metadata", json={"name": "x", "metadata": HUGE_METADATA}),
    case("keys-end-user-int", "POST", "/v1/keys", 400, names="end_user_id", json={"name": "x", "end_user_id": 7}),
    case("keys-bound-admin", "POST", "/v1/keys", 400, names="end_user_id",
         json={"name": "x", "scope": "admin", "end_user_id": "alice"}),
    case("keys-malformed", "POST", "/v1/keys", 400, names="JSON", content=b'{"name": ', headers=JSON_CT),
    case("keys-list-body", "POST", "/v1/keys", 400, names="body", json=[{"name": "x"}]),
    case("keys-string-body", "POST", "/v1/keys", 400, names="body", json="x"),
    case("keys-no-body", "POST", "/v1/keys", 400, names="body"),
    case("keys-text-plain", "POST", "/v1/keys", 400, names="body", content=b'{"name":"x"}',
         headers={"content-type": "text/plain"}),
    case("keys-idem-too-long", "POST", "/v1/keys", 400, names="Idempotency-Key", json={"name": "x"},
         headers={"idempotency-key": "i" * 256}),
    case("keys-standard", "POST", "/v1/keys", 403, as_="standard", json={"name": "x"}),
    case("keys-bound", "POST", "/v1/keys", 403, as_="bound", json={"name": "x"}),
    case("keys-no-key", "POST", "/v1/keys", 401, as_=None, json={"name": "x"}),
    case("keys-revoked", "POST", "/v1/keys", 401, as_="revoked", json={"name": "x"}),
    # --- GET /v1/keys
    case("list-keys-standard", "GET", "/v1/keys", 403, as_="standard"),
    case("list-keys-no-key", "GET", "/v1/keys", 401, as_=None),
    case("list-keys-revoked", "GET", "/v1/keys", 401, as_="revoked"),
    # --- /v1/keys/{id}
    case("get-key-unknown", "GET", "/v1/keys/key_000000000000000000000000", 404),
    case("get-key-foreign", "GET", "/v1/keys/{foreign_key}", 404),
    case("get-key-standard", "GET", K, 403, as_="standard"),
    case("patch-key-name-int", "PATCH", K, 400, names="name", json={"name": 1}),
    case("patch-key-name-null", "PATCH", K, 400, names="name", json={"name": None}),
    case("patch-key-name-201", "PATCH", K, 400, names="name", json={"name": "n" * 201}),
    case("patch-key-cap-string", "PATCH", K, 400, names="max_spend_usd", json={"max_spend_usd": "5"}),
    case("patch-key-cap-bool", "PATCH", K, 400, names="max_spend_usd", json={"max_spend_usd": False}),
    case("patch-key-metadata-list", "PATCH", K, 400, names="metadata", json={"metadata": [1]}),
    case("patch-key-metadata-too-big", "PATCH", K, 400, names="metadata", json={"metadata": HUGE_METADATA}),
    case("patch-key-malformed", "PATCH", K, 400, names="JSON", content=b"{,}", headers=JSON_CT),
    case("patch-key-list-body", "PATCH", K, 400, names="body", json=[]),
    case("patch-key-unknown", "PATCH", "/v1/keys/key_000000000000000000000000", 404, json={"name": "y"}),
    case("patch-key-foreign", "PATCH", "/v1/keys/{foreign_key}", 404, json={"name": "y"}),
    case("patch-key-standard", "PATCH", K, 403, as_="standard", json={"name": "y"}),
    case("delete-key-unknown", "DELETE", "/v1/keys/key_000000000000000000000000", 404),
    case("delete-key-foreign", "DELETE", "/v1/keys/{foreign_key}", 404),
    case("delete-key-standard", "DELETE", K, 403, as_="standard"),
    case("delete-key-by-foreign-admin", "DELETE", K, 404, as_="foreign"),
    case("key-usage-from-string", "GET", K + "/usage", 400, names="from_ms", params={"from_ms": "abc"}),
    case("key-usage-to-float", "GET", K + "/usage", 400, names="to_ms", params={"to_ms": "1.5"}),
    case("key-usage-reversed", "GET", K + "/usage", 400, names="to_ms", params={"from_ms": "10", "to_ms": "5"}),
    case("key-usage-huge", "GET", K + "/usage", 400, names="to_ms", params={"to_ms": BIG}),
    case("key-usage-unknown", "GET", "/v1/keys/key_000000000000000000000000/usage", 404),
    case("key-usage-foreign", "GET", "/v1/keys/{foreign_key}/usage", 404),
    case("key-usage-standard", "GET", K + "/usage", 403, as_="standard"),
    # --- GET /v1/key
    case("whoami-no-key", "GET", "/v1/key", 401, as_=None),
    case("whoami-revoked", "GET", "/v1/key", 401, as_="revoked"),
    case("whoami-garbage", "GET", "/v1/key", 401, as_=None, headers={"x-api-key": "not a key"}),
    case("whoami-unknown", "GET", "/v1/key", 401, as_=None, headers={"x-api-key": "qlk_live_" + "0" * 64}),
    case("whoami-bearer-unknown", "GET", "/v1/key", 401, as_=None, headers={"authorization": "Bearer qlk_live_" + "1" * 64}),
    case("whoami-basic-scheme", "GET", "/v1/key", 401, as_=None, headers={"authorization": "Basic abc"}),
    # --- /v1/account
    case("account-standard", "GET", "/v1/account", 403, as_="standard"),
    case("account-no-key", "GET", "/v1/account", 401, as_=None),
    case("patch-account-standard", "PATCH", "/v1/account", 403, as_="standard", json={"name": "x"}),
    case("patch-account-name-int", "PATCH", "/v1/account", 400, names="name", json={"name": 3}),
    case("patch-account-name-empty", "PATCH", "/v1/account", 400, names="name", json={"name": ""}),
    case("patch-account-cap-string", "PATCH", "/v1/account", 400, names="max_spend_usd", json={"max_spend_usd": "1"}),
    case("patch-account-cap-negative", "PATCH", "/v1/account", 400, names="max_spend_usd", json={"max_spend_usd": -2}),
    case("patch-account-list-body", "PATCH", "/v1/account", 400, names="body", json=[1]),
    case("patch-account-malformed", "PATCH", "/v1/account", 400, names="JSON", content=b"nope", headers=JSON_CT),
    # --- /v1/usage
    case("usage-standard", "GET", "/v1/usage", 403, as_="standard"),
    case("usage-bound", "GET", "/v1/usage", 403, as_="bound"),
    case("usage-revoked", "GET", "/v1/usage", 401, as_="revoked"),
    case("usage-from-string", "GET", "/v1/usage", 400, names="from_ms", params={"from_ms": "yesterday"}),
    case("usage-to-bool", "GET", "/v1/usage", 400, names="to_ms", params={"to_ms": "true"}),
    case("usage-negative", "GET", "/v1/usage", 400, names="to_ms", params={"to_ms": "-5"}),
    case("usage-reversed", "GET", "/v1/usage", 400, names="to_ms", params={"from_ms": "100", "to_ms": "99"}),
    case("usage-huge-to", "GET", "/v1/usage", 400, names="to_ms", params={"to_ms": BIG}),
    case("usage-huge-from", "GET", "/v1/usage", 400, names="from_ms", params={"from_ms": BIG}),
    # --- /v1/models
    case("models-no-key", "GET", "/v1/models", 401, as_=None),
    case("models-revoked", "GET", "/v1/models", 401, as_="revoked"),
    # --- POST /v1/threads
    case("thread-end-user-int", "POST", "/v1/threads", 400, names="end_user_id", json={"end_user_id": 5}),
    case("thread-end-user-empty", "POST", "/v1/threads", 400, names="end_user_id", json={"end_user_id": ""}),
    case("thread-end-user-257", "POST", "/v1/threads", 400, names="end_user_id", json={"end_user_id": "u" * 257}),
    case("thread-metadata-list", "POST", "/v1/threads", 400, names="metadata", json={"metadata": [1]}),
    case("thread-metadata-string", "POST", "/v1/threads", 400, names="metadata", json={"metadata": "x"}),
    case("thread-metadata-inf", "POST", "/v1/threads", 400, names="metadata",
         content=b'{"metadata":{"a":Infinity}}', headers=JSON_CT),
    case("thread-metadata-too-big", "POST", "/v1/threads", 400, names="metadata", json={"metadata": HUGE_METADATA}),
    case("thread-malformed", "POST", "/v1/threads", 400, names="JSON", content=b"{", headers=JSON_CT),
    case("thread-list-body", "POST", "/v1/threads", 400, names="body", json=[]),
    case("thread-number-body", "POST", "/v1/threads", 400, names="body", json=42),
    case("thread-no-key", "POST", "/v1/threads", 401, as_=None, json={}),
    case("thread-revoked", "POST", "/v1/threads", 401, as_="revoked", json={}),
    # --- GET /v1/threads
    case("threads-limit-0", "GET", "/v1/threads", 400, names="limit", params={"limit": "0"}),
    case("threads-limit-101", "GET", "/v1/threads", 400, names="limit", params={"limit": "101"}),
    case("threads-limit-string", "GET", "/v1/threads", 400, names="limit", params={"limit": "ten"}),
    case("threads-bad-cursor", "GET", "/v1/threads", 400, names="before", params={"before": "garbage!!"}),
    case("threads-cursor-no-colon", "GET", "/v1/threads", 400, names="before", params={"before": "Zm9v"}),
    case("threads-cursor-huge", "GET", "/v1/threads", 400, names="before",
         params={"before": "OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk6eA"}),
    case("threads-end-user-empty", "GET", "/v1/threads", 400, names="end_user_id", params={"end_user_id": ""}),
    case("threads-no-key", "GET", "/v1/threads", 401, as_=None),
    # --- /v1/threads/{id}
    case("get-thread-unknown", "GET", "/v1/threads/thr_000000000000000000000000", 404),
    case("get-thread-foreign", "GET", "/v1/threads/{foreign_thread}", 404),
    case("get-thread-other-end-user", "GET", "/v1/threads/{u2_thread}", 404, as_="bound"),
    case("patch-thread-title-int", "PATCH", T, 400, names="title", json={"title": 5}),
    case("patch-thread-title-501", "PATCH", T, 400, names="title", json={"title": "t" * 501}),
    case("patch-thread-metadata-list", "PATCH", T, 400, names="metadata", json={"metadata": ["a"]}),
    case("patch-thread-metadata-nan", "PATCH", T, 400, names="metadata",
         content=b'{"metadata":{"b":NaN}}', headers=JSON_CT),
    case("patch-thread-metadata-too-big", "PATCH", T, 400, names="metadata", json={"metadata": HUGE_METADATA}),
    case("patch-thread-metadata-merged-too-big", "PATCH", T, 400, names="metadata",
         json={"metadata": {"pad": "m" * 16_370}}),  # fits alone, not with the thread's {"a": 1}
    case("patch-thread-malformed", "PATCH", T, 400, names="JSON", content=b'{"title":', headers=JSON_CT),
    case("patch-thread-list-body", "PATCH", T, 400, names="body", json=[{"title": "x"}]),
    case("patch-thread-unknown", "PATCH", "/v1/threads/thr_000000000000000000000000", 404, json={"title": "x"}),
    case("patch-thread-foreign", "PATCH", "/v1/threads/{foreign_thread}", 404, json={"title": "x"}),
    case("patch-thread-other-end-user", "PATCH", "/v1/threads/{u2_thread}", 404, as_="bound", json={"title": "x"}),
    case("delete-thread-unknown", "DELETE", "/v1/threads/thr_000000000000000000000000", 404),
    case("delete-thread-foreign", "DELETE", "/v1/threads/{foreign_thread}", 404),
    case("delete-thread-other-end-user", "DELETE", "/v1/threads/{u2_thread}", 404, as_="bound"),
    case("delete-thread-revoked", "DELETE", T, 401, as_="revoked"),
    # --- GET /v1/threads/{id}/messages
    case("history-limit-0", "GET", T + "/messages", 400, names="limit", params={"limit": "0"}),
    case("history-limit-201", "GET", T + "/messages", 400, names="limit", params={"limit": "201"}),
    case("history-limit-string", "GET", T + "/messages", 400, names="limit", params={"limit": "all"}),
    case("history-order-bad", "GET", T + "/messages", 400, names="order", params={"order": "newest"}),
    case("history-after-negative", "GET", T + "/messages", 400, names="after_seq", params={"after_seq": "-1"}),
    case("history-before-string", "GET", T + "/messages", 400, names="before_seq", params={"before_seq": "x"}),
    case("history-after-huge", "GET", T + "/messages", 400, names="after_seq", params={"after_seq": BIG}),
    case("history-before-huge", "GET", T + "/messages", 400, names="before_seq", params={"before_seq": BIG}),
    case("history-unknown", "GET", "/v1/threads/thr_000000000000000000000000/messages", 404),
    case("history-foreign", "GET", "/v1/threads/{foreign_thread}/messages", 404),
    case("history-other-end-user", "GET", "/v1/threads/{u2_thread}/messages", 404, as_="bound"),
    case("history-no-key", "GET", T + "/messages", 401, as_=None),
    # --- POST /v1/threads/{id}/messages
    case("turn-missing-model", "POST", T + "/messages", 400, names="model", json={"max_tokens": 5, "content": "x"}),
    case("turn-missing-max-tokens", "POST", T + "/messages", 400, names="max_tokens", json={"model": LOCAL, "content": "x"}),
    case("turn-missing-content", "POST", T + "/messages", 400, names="content", json={"model": LOCAL, "max_tokens": 5}),
    case("turn-max-tokens-0", "POST", T + "/messages", 400, names="max_tokens", json={**TURN, "max_tokens": 0}),
    case("turn-max-tokens-string", "POST", T + "/messages", 400, names="max_tokens", json={**TURN, "max_tokens": "5"}),
    case("turn-max-tokens-bool", "POST", T + "/messages", 400, names="max_tokens", json={**TURN, "max_tokens": True}),
    case("turn-max-tokens-float", "POST", T + "/messages", 400, names="max_tokens", json={**TURN, "max_tokens": 1.5}),
    case("turn-model-int", "POST", T + "/messages", 400, names="model", json={**TURN, "model": 5}),
    case("turn-model-unknown", "POST", T + "/messages", 404, json={**TURN, "model": "gpt-nope"}),
    case("turn-content-object", "POST", T + "/messages", 400, names="content", json={**TURN, "content": {"a": 1}}),
    case("turn-content-int", "POST", T + "/messages", 400, names="content", json={**TURN, "content": 5}),
    case("turn-content-empty", "POST", T + "/messages", 400, names="content", json={**TURN, "content": ""}),
    case("turn-content-empty-list", "POST", T + "/messages", 400, names="content", json={**TURN, "content": []}),
    case("turn-content-untyped-block", "POST", T + "/messages", 400, names="content",
         json={**TURN, "content": [{"text": "x"}]}),
    case("turn-content-text-not-string", "POST", T + "/messages", 400, names="content",
         json={**TURN, "content": [{"type": "text", "text": 5}]}),
    case("turn-content-blank-text", "POST", T + "/messages", 400, names="content[1].text",
         json={**TURN, "content": [{"type": "text", "text": "a"}, {"type": "text", "text": " \n"}]}),
    case("turn-content-image-no-source", "POST", T + "/messages", 400, names="content[0].source",
         json={**TURN, "content": [{"type": "image"}]}),
    case("turn-content-document-bad-source", "POST", T + "/messages", 400, names="content[1].source",
         json={**TURN, "content": [{"type": "text", "text": "read"}, {"type": "document", "source": "a.pdf"}]}),
    case("turn-content-nan", "POST", T + "/messages", 400, names="content",
         content=b'{"model":"threadgate-local","max_tokens":5,"content":[{"type":"text","text":"a","x":NaN}]}',
         headers=JSON_CT),
    case("turn-max-iterations-9", "POST", T + "/messages", 400, names="max_iterations", json={**TURN, "max_iterations": 9}),
    case("turn-max-iterations-0", "POST", T + "/messages", 400, names="max_iterations", json={**TURN, "max_iterations": 0}),
    case("turn-max-iterations-string", "POST", T + "/messages", 400, names="max_iterations",
         json={**TURN, "max_iterations": "8"}),
    case("turn-tools-mode-dynamic", "POST", T + "/messages", 400, names="tools_mode", json={**TURN, "tools_mode": "dynamic"}),
    case("turn-tools-mode-tenant", "POST", T + "/messages", 400, names="tools_mode", json={**TURN, "tools_mode": "tenant"}),
    case("turn-tools-string", "POST", T + "/messages", 400, names="tools", json={**TURN, "tools": "tool_1"}),
    case("turn-tools-unknown", "POST", T + "/messages", 400, names="tools", json={**TURN, "tools": ["tool_nope"]}),
    case("turn-tool-ids-object", "POST", T + "/messages", 400, names="tool_ids", json={**TURN, "tool_ids": {"a": 1}}),
    case("turn-stream-string", "POST", T + "/messages", 400, names="stream", json={**TURN, "stream": "yes"}),
    case("turn-temperature-string", "POST", T + "/messages", 400, names="temperature", json={**TURN, "temperature": "hot"}),
    case("turn-temperature-3", "POST", T + "/messages", 400, names="temperature", json={**TURN, "temperature": 3}),
    case("turn-system-int", "POST", T + "/messages", 400, names="system", json={**TURN, "system": 5}),
    case("turn-stop-sequences-string", "POST", T + "/messages", 400, names="stop_sequences",
         json={**TURN, "stop_sequences": "END"}),
    case("turn-metadata-list", "POST", T + "/messages", 400, names="metadata", json={**TURN, "metadata": []}),
    case("turn-malformed", "POST", T + "/messages", 400, names="JSON", content=b'{"model": "x",,}', headers=JSON_CT),
    case("turn-list-body", "POST", T + "/messages", 400, names="body", json=[TURN]),
    case("turn-null-body", "POST", T + "/messages", 400, names="body", content=b"null", headers=JSON_CT),
    case("turn-idem-too-long", "POST", T + "/messages", 400, names="Idempotency-Key", json=TURN,
         headers={"idempotency-key": "i" * 256}),
    case("turn-unknown-thread", "POST", "/v1/threads/thr_000000000000000000000000/messages", 404, json=TURN),
    case("turn-foreign-thread", "POST", "/v1/threads/{foreign_thread}/messages", 404, json=TURN),
    case("turn-other-end-user", "POST", "/v1/threads/{u2_thread}/messages", 404, as_="bound", json=TURN),
    case("turn-no-key", "POST", T + "/messages", 401, as_=None, json=TURN),
    case("turn-revoked", "POST", T + "/messages", 401, as_="revoked", json=TURN),
    # --- POST /v1/messages
    case("passthrough-missing-messages", "POST", "/v1/messages", 400, names="messages", json={"model": LOCAL, "max_tokens": 5}),
    case("passthrough-empty-messages", "POST", "/v1/messages", 400, names="messages", json={**PASSTHROUGH, "messages": []}),
    case("passthrough-messages-object", "POST", "/v1/messages", 400, names="messages", json={**PASSTHROUGH, "messages": {}}),
    case("passthrough-role-system", "POST", "/v1/messages", 400, names="messages[0].role",
         json={**PASSTHROUGH, "messages": [{"role": "system", "content": "x"}]}),
    case("passthrough-content-missing", "POST", "/v1/messages", 400, names="messages[0].content",
         json={**PASSTHROUGH, "messages": [{"role": "user"}]}),
    case("passthrough-max-tokens-0", "POST", "/v1/messages", 400, names="max_tokens", json={**PASSTHROUGH, "max_tokens": 0}),
    case("passthrough-missing-model", "POST", "/v1/messages", 400, names="model",
         json={"max_tokens": 5, "messages": PASSTHROUGH["messages"]}),
    case("passthrough-tools-string", "POST", "/v1/messages", 400, names="tools", json={**PASSTHROUGH, "tools": "x"}),
    case("passthrough-unknown-model", "POST", "/v1/messages", 404, json={**PASSTHROUGH, "model": "nope"}),
    case("passthrough-malformed", "POST", "/v1/messages", 400, names="JSON", content=b"{]", headers=JSON_CT),
    case("passthrough-list-body", "POST", "/v1/messages", 400, names="body", json=[PASSTHROUGH]),
    case("passthrough-no-key", "POST", "/v1/messages", 401, as_=None, json=PASSTHROUGH),
    case("passthrough-revoked", "POST", "/v1/messages", 401, as_="revoked", json=PASSTHROUGH),
    # --- unknown route / method: still the envelope
    case("no-such-route", "GET", "/v1/nothing-here", 404),
]


def send(w: World, c: Case) -> httpx.Response:
    headers = dict(c.headers)
    if c.as_ is not None:
        headers.setdefault("x-api-key", w.secrets[c.as_])
    kw: dict[str, Any] = {"params": c.params, "headers": headers}
    if c.content is not None:
        kw["content"] = c.content
    elif c.json is not None:
        kw["json"] = c.json
    return w.http.request(c.method, c.path.format(**w.ids), **kw)


def assert_error(r: httpx.Response, status: int, names: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers.get("request-id", "").startswith("req_")
    assert r.headers["x-request-id"] == r.headers["request-id"]
    body = r.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == ERROR_TYPES[status]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if names is not None:
        assert names in body["error"]["message"], body


@pytest.mark.parametrize("c", CASES)
def test_bad_request_is_refused_and_changes_nothing(world: World, c: Case) -> None:
    before = snapshot(world)
    r = send(world, c)
    assert_error(r, c.status, c.names)
    assert snapshot(world) == before


# Any body a client might mangle, on every route that takes one: always a 400 naming the body.
BODY_ROUTES = [("POST", "/v1/keys"), ("PATCH", K), ("PATCH", "/v1/account"), ("POST", "/v1/threads"),
               ("PATCH", T), ("POST", T + "/messages"), ("POST", "/v1/messages")]
GARBAGE = {
    "truncated": b'{"a": [1, 2',
    "trailing-garbage": b'{"a": 1} x',
    "bare-word": b"hello",
    "array": b"[]",
    "string": b'"{}"',
    "number": b"12",
    "true": b"true",
    "null": b"null",
    "invalid-utf8": b'{"name": "\xff\xfe"}',
    "deep-nesting": b'{"metadata": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    "nan-deep-inside": b'{"metadata": {"a": ' + b"[" * 900 + b"NaN" + b"]" * 900 + b"}}",
}


@pytest.mark.parametrize("method,path", BODY_ROUTES, ids=[f"{m} {p}" for m, p in BODY_ROUTES])
def test_garbage_bodies_are_400_on_every_route(world: World, method: str, path: str) -> None:
    before = snapshot(world)
    for name, raw in GARBAGE.items():
        r = send(world, Case(method, path, 400, content=raw, headers=JSON_CT))
        assert r.status_code == 400, (name, r.text)
        assert_error(r, 400)
    assert snapshot(world) == before


def test_bearer_form_works_on_every_kind_of_route(world: World) -> None:
    admin, std = world.secrets["admin"], world.secrets["standard"]
    for secret, path in [(admin, "/v1/keys"), (admin, "/v1/usage"), (admin, "/v1/account"),
                         (std, "/v1/key"), (std, "/v1/models"), (std, "/v1/threads")]:
        for scheme in ("Bearer", "bearer"):
            r = world.http.get(path, headers={"authorization": f"{scheme} {secret}"})
            assert r.status_code == 200, (path, r.text)
            assert r.headers["request-id"].startswith("req_")
    # A key never goes in the query string.
    assert_error(world.http.get("/v1/key", params={"api_key": std}), 401)


def test_success_responses_carry_a_request_id(world: World) -> None:
    admin = {"x-api-key": world.secrets["admin"]}
    ids = {world.http.get(p, headers=admin).headers["request-id"] for p in ("/v1/keys", "/v1/models", "/v1/usage", "/v1/key")}
    assert len(ids) == 4  # one per request


# --- request size ------------------------------------------------------------------------------

def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b" " * n


@pytest.mark.parametrize("method,path", [("POST", "/v1/keys"), ("POST", T + "/messages"), ("POST", "/v1/messages")])
def test_body_over_8_mib_is_413(world: World, method: str, path: str) -> None:
    before = snapshot(world)
    nine_mib = 9 * 1024 * 1024
    body = json.dumps({**TURN, "content": "x" * nine_mib, "name": "big"}).encode()
    headers = {**JSON_CT, "x-api-key": world.secrets["admin"]}
    url = path.format(**world.ids)
    assert_error(world.http.request(method, url, content=body, headers=headers), 413)  # with content-length
    assert_error(world.http.request(method, url, content=_chunks(nine_mib), headers=headers), 413)  # chunked
    assert snapshot(world) == before


def test_configured_body_limit(gateway_factory) -> None:
    gw = gateway_factory(max_body_bytes=2048)
    with gw.admin() as c:
        thread = c.post("/v1/threads", json={}).json()
        keys_before = c.get("/v1/keys").json()["keys"]
        fits = c.post("/v1/keys", json={"name": "n" * 100})
        assert fits.status_code == 201
        too_big = c.post("/v1/keys", json={"name": "n", "metadata": {"pad": "p" * 3000}})
        assert_error(too_big, 413)
        assert "2048" in too_big.json()["error"]["message"]
        assert_error(c.post(f"/v1/threads/{thread['id']}/messages", json={**TURN, "content": "w " * 1500}), 413)
        assert_error(c.post("/v1/keys", content=_chunks(4096, 512), headers=JSON_CT), 413)
        # The limit counts bytes, not characters, and an exact fit is accepted.
        assert_error(c.post(f"/v1/threads/{thread['id']}/messages", json={**TURN, "content": "é" * 1000}), 413)
        head, tail = b'{"metadata":{"pad":"', b'"}}'
        exact = head + b"p" * (2048 - len(head) - len(tail)) + tail
        assert c.post("/v1/threads", content=exact, headers=JSON_CT).status_code == 201
        keys_after = c.get("/v1/keys").json()["keys"]
        assert [k["id"] for k in keys_after] == [fits.json()["id"]] + [k["id"] for k in keys_before]
        assert c.get(f"/v1/threads/{thread['id']}").json()["message_count"] == 0
        assert len(c.get("/v1/threads").json()["data"]) == 2
    assert gw.fake.requests == []


# --- fuzz: whatever JSON arrives, the answer is never a 5xx ------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["name", "scope", "max_spend_usd", "end_user_id", "metadata", "title", "model", "max_tokens", "content",
          "messages", "stream", "system", "temperature", "top_k", "stop_sequences", "tools", "tool_ids",
          "tools_mode", "max_iterations", "tool_choice", "thinking", "role", "type", "text"]
# Mostly well-formed enough to get past the first checks, so the deeper code is reached too.
likely = {"model": st.sampled_from([LOCAL, "claude-haiku-4-5", "nope"]), "max_tokens": st.integers(-2, 50),
          "content": st.one_of(st.text(max_size=20), st.lists(st.fixed_dictionaries(
              {"type": st.sampled_from(["text", "image", "tool_result", "x"]), "text": json_values}), max_size=3)),
          "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]),
                                                      "content": json_values}), max_size=3),
          "scope": st.sampled_from(["standard", "admin", "x"])}
bodies = st.fixed_dictionaries({}, optional={f: likely.get(f, json_values) for f in FIELDS}) | json_values


@pytest.mark.parametrize("method,path", BODY_ROUTES, ids=[f"{m} {p}" for m, p in BODY_ROUTES])
def test_no_body_gets_a_5xx(world: World, method: str, path: str) -> None:
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies)
    def check(body: Any) -> None:
        r = send(world, Case(method, path, 0, content=json.dumps(body).encode(), headers=JSON_CT))
        assert r.status_code < 500, (body, r.text)
        assert r.headers["request-id"].startswith("req_")
        if r.status_code >= 400:
            error = r.json()
            assert error["type"] == "error" and set(error["error"]) == {"type", "message"}, error

    check()


# --- lone surrogates: JSON can spell them ("\ud800"), UTF-8 cannot store them ------------------

LONE = "\\ud800"  # as it appears in the raw JSON text
SURROGATE_CASES = [
    ("POST", "/v1/keys", '{"name": "%s"}', "name"),
    ("POST", "/v1/keys", '{"name": "k", "metadata": {"a": ["%s"]}}', "metadata.a[0]"),
    ("POST", "/v1/keys", '{"name": "k", "metadata": {"%s": 1}}', "metadata"),
    ("PATCH", K, '{"name": "%s"}', "name"),
    ("PATCH", "/v1/account", '{"name": "a%s"}', "name"),
    ("POST", "/v1/threads", '{"metadata": {"note": "%s"}}', "metadata.note"),
    ("POST", "/v1/threads", '{"end_user_id": "%s"}', "end_user_id"),
    ("PATCH", T, '{"title": "%s"}', "title"),
    ("PATCH", T, '{"metadata": {"x": "%s"}}', "metadata.x"),
    ("POST", T + "/messages", '{"model": "threadgate-local", "max_tokens": 5, "content": "hi %s"}', "content"),
    ("POST", T + "/messages",
     '{"model": "threadgate-local", "max_tokens": 5, "content": [{"type": "text", "text": "%s"}]}', "content[0].text"),
    ("POST", T + "/messages", '{"model": "threadgate-local", "max_tokens": 5, "content": "hi", "system": "%s"}', "system"),
    ("POST", "/v1/messages",
     '{"model": "threadgate-local", "max_tokens": 5, "messages": [{"role": "user", "content": "%s"}]}',
     "messages[0].content"),
    ("POST", "/v1/messages",
     '{"model": "threadgate-local", "max_tokens": 5, "system": "%s", "messages": [{"role": "user", "content": "x"}]}',
     "system"),
    ("POST", "/v1/chat/completions",
     '{"model": "threadgate-local", "messages": [{"role": "user", "content": "%s"}]}', "messages[0].content"),
    ("POST", "/v1/chat/completions",
     '{"model": "threadgate-local", "messages": [{"role": "system", "content": "%s"}, {"role": "user", "content": "x"}]}',
     "messages[0].content"),
    ("POST", "/v1/jobs",
     '{"endpoint": "/v1/messages", "body": {"model": "threadgate-local", "max_tokens": 5,'
     ' "messages": [{"role": "user", "content": "%s"}]}}', "body.messages[0].content"),
    ("POST", "/v1/jobs", '{"endpoint": "/v1/messages%s", "body": {}}', "endpoint"),
    ("POST", "/v1/tools", '{"name": "t", "description": "%s", "input_schema": {"type": "object"},'
     ' "webhook_url": "https://example.com/hook"}', "description"),
]


@pytest.mark.parametrize("method,path,template,field", SURROGATE_CASES,
                         ids=[f"{m} {p} {f}" for m, p, _, f in SURROGATE_CASES])
def test_lone_surrogate_is_400_naming_the_field(world: World, method: str, path: str, template: str, field: str) -> None:
    before = snapshot(world)
    r = send(world, Case(method, path, 400, content=(template % LONE).encode(), headers=JSON_CT))
    assert r.status_code == 400, r.text
    assert r.headers["request-id"].startswith("req_")
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error", error
    assert field in error["message"] and "surrogate" in error["message"], error
    assert snapshot(world) == before


def test_surrogate_pairs_are_real_characters_and_accepted(world: World) -> None:
    r = send(world, Case("POST", "/v1/threads", 201, content=b'{"metadata": {"e": "\\ud83d\\ude00"}}', headers=JSON_CT))
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == {"e": "\U0001F600"}
    with world.gw.admin() as c:
        assert c.delete(f"/v1/threads/{r.json()['id']}").status_code == 200


# --- PATCH /v1/keys/{id} changes name, max_spend_usd and metadata only ----------------------------

@pytest.mark.parametrize("body,field", [
    ({"scope": "admin"}, "scope"),
    ({"end_user_id": "mallory"}, "end_user_id"),
    ({"name": "ok", "scope": "standard"}, "scope"),
    ({"revoked": False}, "revoked"),
    ({"secret": "qlk_live_" + "0" * 64}, "secret"),
])
def test_patch_key_refuses_fields_it_does_not_change(world: World, body: dict[str, Any], field: str) -> None:
    before = snapshot(world)
    r = send(world, Case("PATCH", K, 400, json=body))
    assert_error(r, 400, field)
    assert snapshot(world) == before


def test_patch_on_a_revoked_key_is_409(world: World) -> None:
    with world.gw.admin() as c:
        revoked_id = next(k["id"] for k in c.get("/v1/keys").json()["keys"] if k["revoked"])
    before = snapshot(world)
    r = send(world, Case("PATCH", f"/v1/keys/{revoked_id}", 409, json={"name": "back"}))
    assert_error(r, 409)
    assert "revoked" in r.json()["error"]["message"]
    assert snapshot(world) == before


# --- no redirects: a trailing slash is its own (unknown) path ------------------------------------

@pytest.mark.parametrize("path", ["/v1/keys/", "/v1/threads/", "/v1/models/", "/health/", "/v1/messages/"])
def test_trailing_slash_is_404_never_a_redirect_built_from_host(world: World, path: str) -> None:
    for method in ("GET", "POST"):
        r = world.http.request(method, path, headers={"host": "evil.example", "x-api-key": world.secrets["admin"]})
        assert not r.is_redirect and "location" not in r.headers, (method, path, r.headers)
        assert_error(r, 404)


# --- 405 answers say which methods the path takes ------------------------------------------------

@pytest.mark.parametrize("method,path,allowed", [
    ("PUT", "/v1/keys", {"GET", "POST"}),
    ("DELETE", "/v1/account", {"GET", "PATCH"}),
    ("GET", "/v1/messages", {"POST"}),
    ("PUT", T, {"GET", "PATCH", "DELETE"}),
])
def test_405_carries_allow(world: World, method: str, path: str, allowed: set[str]) -> None:
    r = send(world, Case(method, path.format(**world.ids), 405))
    assert r.status_code == 405, r.text
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed
    assert r.json()["type"] == "error"
