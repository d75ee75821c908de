"""/openapi.json tells the truth (issue 11 item 8): every route is documented with its success
schema and every error status it can answer, in the error envelope, with the security scheme;
real answers validate against it; and schemathesis (property-based, from the document alone)
finds no 5xx and no answer outside the document, within a bounded number of examples."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from threadgate.api.openapi import ROUTES

from tests.conftest import Gateway, gateway_app, make_settings

OPENAPI_MODULE = "layers/threadgate/python/threadgate/api/openapi.py"


@pytest.fixture(scope="module")
def live(tmp_path_factory, fake_anthropic) -> Iterator[Gateway]:
    from threadgate.api.connection_limits import uvicorn_options
    from threadgate.bootstrap import ensure_first_admin
    from threadgate.runtime import build

    from tests.fakes.servers import serve_asgi

    settings_ = make_settings(tmp_path_factory.mktemp("openapi"), anthropic_api_key=fake_anthropic.api_key,
                              anthropic_base_url=fake_anthropic.base_url)
    rt = build(settings_)
    rt.indexer = None  # search has its own tests; here it would only load an embedding model
    admin = ensure_first_admin(rt.stores, rt.clock, settings_)
    with serve_asgi(gateway_app(rt), **uvicorn_options()) as url:
        yield Gateway(url=url, admin_key=admin, runtime=rt, fake=fake_anthropic)


@pytest.fixture(scope="module")
def document(live: Gateway) -> dict[str, Any]:
    with live.client() as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def served_routes(live: Gateway) -> set[tuple[str, str]]:
    """Every (method, path) the app routes, from FastAPI's own view of the app."""
    from fastapi.openapi.utils import get_openapi

    from threadgate.api.app import create_app

    app = create_app(live.runtime)
    raw = get_openapi(title="x", version="0", routes=app.routes)
    routes = {(m.upper(), p) for p, ops in raw["paths"].items() for m in ops}
    return routes | {("GET", "/health")}


def test_every_route_has_a_contract(live: Gateway) -> None:
    missing = sorted(served_routes(live) - set(ROUTES))
    assert not missing, "\n".join(
        f"{m} {p} has no documented responses. Add to ROUTES in {OPENAPI_MODULE}:\n"
        f"    ({m!r}, {p!r}): Contract(<success status>, <response schema>, <error statuses, e.g. (*KEYED, 404)>),"
        for m, p in missing
    )
    stale = sorted(set(ROUTES) - served_routes(live))
    assert not stale, f"ROUTES in {OPENAPI_MODULE} documents routes the app does not serve: {stale}"


def test_the_document_declares_what_the_server_answers(document: dict[str, Any]) -> None:
    assert {"ApiKey", "Bearer"} <= set(document["components"]["securitySchemes"])
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            assert "422" not in op["responses"], where  # the server answers 400, never 422
            success = [s for s in op["responses"] if s.startswith("2")]  # a turn may also answer 202 (its run)
            assert success and all("schema" in body for s in success for body in op["responses"][s]["content"].values()), where
            if path != "/health":
                assert {"400", "401", "429"} <= set(op["responses"]), where
                assert op["security"], where
                for status, answer in op["responses"].items():
                    if not status.startswith("2"):
                        assert answer["content"]["application/json"]["schema"]["$ref"].endswith("Error"), where
            if method in ("post", "patch") and not path.endswith("/cancel"):  # a cancel has no body
                assert "413" in op["responses"] and "requestBody" in op, where
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["required"] == ["model", "messages"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]


# --- real answers against the document ---------------------------------------------------------

def test_real_answers_validate_against_the_document(live: Gateway, document: dict[str, Any]) -> None:
    """One real request per route (successes and the usual errors), each answer checked against
    the document: status declared, body valid for that status."""
    schema = schemathesis.openapi.from_dict(document)
    user = live.mint(end_user_id="u1")
    with live.admin() as admin:
        thread = admin.post("/v1/threads", json={"metadata": {"a": 1}}).json()
        tool = admin.post("/v1/tools", json={"name": "t", "description": "d", "input_schema": {"type": "object"},
                                            "webhook_url": "https://1.1.1.1/hook"}).json()
    turn = {"model": "threadgate-local", "max_tokens": 20, "content": "hello"}
    chat = {"model": "threadgate-local", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    calls = [
        ("GET", "/health", None, None), ("GET", "/v1/key", None, user["secret"]), ("GET", "/v1/keys", None, None),
        ("POST", "/v1/keys", {"name": "n"}, None), ("GET", f"/v1/keys/{user['id']}", None, None),
        ("PATCH", f"/v1/keys/{user['id']}", {"name": "m"}, None),
        ("PATCH", f"/v1/keys/{user['id']}", {"scope": "admin"}, None),
        ("GET", f"/v1/keys/{user['id']}/usage", None, None), ("GET", "/v1/account", None, None),
        ("PATCH", "/v1/account", {"name": "acme"}, None), ("GET", "/v1/usage", None, None),
        ("GET", "/v1/models", None, None), ("POST", "/v1/threads", {}, None), ("GET", "/v1/threads", None, None),
        ("GET", f"/v1/threads/{thread['id']}", None, None),
        ("PATCH", f"/v1/threads/{thread['id']}", {"title": "t"}, None),
        ("POST", f"/v1/threads/{thread['id']}/messages", turn, None),
        ("GET", f"/v1/threads/{thread['id']}/messages", None, None),
        ("POST", "/v1/messages", chat, None), ("POST", "/v1/chat/completions", chat, None),
        ("POST", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, None),
        ("POST", "/v1/responses", {"model": "threadgate-local", "input": "hi"}, None),  # not OpenAI: 400
        ("POST", "/v1/responses", {"model": "nope", "input": "hi"}, None),
        ("GET", "/v1/tools", None, None), ("GET", f"/v1/tools/{tool['id']}", None, None),
        ("POST", "/v1/jobs", {"endpoint": "/v1/messages", "body": chat}, None), ("GET", "/v1/jobs", None, None),
        ("GET", "/v1/keys", None, user["secret"]), ("GET", "/v1/nope/x", None, None),
        ("DELETE", f"/v1/tools/{tool['id']}", None, None), ("DELETE", f"/v1/threads/{thread['id']}", None, None),
        ("DELETE", f"/v1/keys/{user['id']}", None, None), ("GET", "/v1/key", None, "qlk_live_" + "0" * 64),
    ]
    import httpx

    with httpx.Client(base_url=live.url, timeout=60) as http:
        for method, url, body, key in calls:
            r = http.request(method, url, json=body, headers={"x-api-key": key or live.admin_key})
            operation = _operation(schema, method, url)
            if operation is None:
                assert r.status_code == 404 and r.json()["type"] == "error", (method, url, r.text)
                continue
            operation.validate_response(r)


def _operation(schema: Any, method: str, url: str) -> Any:
    import re

    for result in schema.get_all_operations():
        op = result.ok()
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", op.path) + "$"
        if op.method.upper() == method and re.match(pattern, url):
            return op
    return None


# --- schemathesis: generated requests, bounded ------------------------------------------------
# Driven per operation through `as_strategy` (its pytest plugin does not support pytest 9 yet).

FUZZED = sorted(ROUTES)


@pytest.mark.parametrize("method,path", FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(live: Gateway, document: dict[str, Any],
                                                              method: str, path: str) -> None:
    from hypothesis import given
    from schemathesis.checks import CHECKS

    operation = schemathesis.openapi.from_dict(document)[path][method]
    checks = [CHECKS.get_one(name) for name in (
        "not_a_server_error", "status_code_conformance", "content_type_conformance",
        "response_schema_conformance", "response_headers_conformance")]

    @given(case=operation.as_strategy())
    @settings(max_examples=12, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(base_url=live.url, headers={"x-api-key": live.admin_key}, checks=checks, timeout=60)

    check()
