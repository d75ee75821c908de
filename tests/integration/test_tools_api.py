"""/v1/tools over real HTTP (API.md §7): validation, the once-only secret, lifecycle, scopes, the
address guard at registration, and turns that name tools they may not use.

A hostname resolving to a private address is covered here with `localhost` (the system resolver
maps it to loopback); a hostname that a custom resolver maps to a private address at delivery time
(DNS rebinding) is covered in tests/unit/test_address_guard.py and
tests/integration/test_webhook_delivery.py, since the HTTP API takes no resolver.
"""

from __future__ import annotations

import re

import pytest

# A public IP literal: registration resolves it without DNS, and nothing is ever delivered to it.
PUBLIC_URL = "https://1.1.1.1/tools/lookup"
SCHEMA = {"type": "object", "properties": {"account_id": {"type": "string"}}, "required": ["account_id"]}


def tool_body(**overrides):
    body = {"name": "lookup_account", "description": "Look up an account", "input_schema": SCHEMA,
            "webhook_url": PUBLIC_URL}
    body.update(overrides)
    return body


def error_of(r, status: int, err_type: str = "invalid_request_error") -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == err_type
    return body["error"]["message"]


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory()  # test mode: private webhooks NOT allowed


def test_register_returns_secret_once_and_never_again(gateway):
    with gateway.admin() as c:
        r = c.post("/v1/tools", json=tool_body(timeout_ms=5000))
        assert r.status_code == 201, r.text
        created = r.json()
        assert re.fullmatch(r"tool_[0-9a-f]{32}", created["id"])
        assert re.fullmatch(r"wsk_[0-9a-f]{64}", created["secret"])
        assert created["object"] == "tool" and created["name"] == "lookup_account"
        assert created["input_schema"] == SCHEMA and created["webhook_url"] == PUBLIC_URL
        assert created["timeout_ms"] == 5000 and created["created_at"] > 0

        got = c.get(f"/v1/tools/{created['id']}")
        assert got.status_code == 200
        listed = c.get("/v1/tools").json()
    assert listed["object"] == "list"
    expected = {k: v for k, v in created.items() if k != "secret"}
    assert got.json() == expected
    assert listed["data"] == [expected]
    assert created["secret"] not in got.text + str(listed)


def test_timeout_defaults_to_30s(gateway):
    with gateway.admin() as c:
        assert c.post("/v1/tools", json=tool_body()).json()["timeout_ms"] == 30_000


@pytest.mark.parametrize("name", ["", "has space", "dot.name", "é", "x" * 65, "semi;colon"])
def test_bad_names_are_refused(gateway, name):
    with gateway.admin() as c:
        message = error_of(c.post("/v1/tools", json=tool_body(name=name)), 400)
    assert "name" in message


@pytest.mark.parametrize("name", ["a", "A-b_9", "x" * 64])
def test_good_names_are_accepted(gateway, name):
    with gateway.admin() as c:
        assert c.post("/v1/tools", json=tool_body(name=name)).status_code == 201


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "objekt"},  # not a JSON Schema type
        {"type": "object", "properties": {"a": {"type": 5}}},
        {"type": "object", "required": "account_id"},  # required must be an array
        {"type": "string"},  # a tool's input is an object
        {"properties": {"account_id": {"type": "string"}}},  # Anthropic requires "type": "object"
    ],
)
def test_invalid_input_schema_is_refused_naming_it(gateway, schema):
    with gateway.admin() as c:
        message = error_of(c.post("/v1/tools", json=tool_body(input_schema=schema)), 400)
    assert "input_schema" in message


def test_missing_fields_are_named(gateway):
    with gateway.admin() as c:
        for field in ("name", "description", "input_schema", "webhook_url"):
            body = tool_body()
            del body[field]
            assert field in error_of(c.post("/v1/tools", json=body), 400)


@pytest.mark.parametrize("timeout_ms", [999, 120_001, 0, -5])
def test_timeout_out_of_bounds_is_refused(gateway, timeout_ms):
    with gateway.admin() as c:
        assert "timeout_ms" in error_of(c.post("/v1/tools", json=tool_body(timeout_ms=timeout_ms)), 400)


@pytest.mark.parametrize("timeout_ms", [1000, 120_000])
def test_timeout_bounds_are_inclusive(gateway, timeout_ms):
    with gateway.admin() as c:
        assert c.post("/v1/tools", json=tool_body(timeout_ms=timeout_ms)).status_code == 201


def test_duplicate_live_name_conflicts_and_is_reusable_after_delete(gateway):
    with gateway.admin() as c:
        first = c.post("/v1/tools", json=tool_body()).json()
        error_of(c.post("/v1/tools", json=tool_body()), 409, "conflict_error")
        assert c.delete(f"/v1/tools/{first['id']}").json() == {"ok": True}
        error_of(c.get(f"/v1/tools/{first['id']}"), 404, "not_found_error")
        error_of(c.delete(f"/v1/tools/{first['id']}"), 404, "not_found_error")
        second = c.post("/v1/tools", json=tool_body())
        assert second.status_code == 201, second.text
        assert second.json()["id"] != first["id"]
        assert [t["id"] for t in c.get("/v1/tools").json()["data"]] == [second.json()["id"]]


def test_unknown_tool_id_is_404(gateway):
    with gateway.admin() as c:
        error_of(c.get("/v1/tools/tool_" + "0" * 32), 404, "not_found_error")
        error_of(c.delete("/v1/tools/tool_" + "0" * 32), 404, "not_found_error")


def test_standard_key_gets_403_on_every_tools_route(gateway):
    with gateway.admin() as admin:
        tool = admin.post("/v1/tools", json=tool_body()).json()
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        error_of(c.post("/v1/tools", json=tool_body(name="other")), 403, "permission_error")
        error_of(c.get("/v1/tools"), 403, "permission_error")
        error_of(c.get(f"/v1/tools/{tool['id']}"), 403, "permission_error")
        error_of(c.delete(f"/v1/tools/{tool['id']}"), 403, "permission_error")
    with gateway.admin() as admin:
        assert admin.get(f"/v1/tools/{tool['id']}").status_code == 200  # nothing was deleted


def test_tools_of_another_account_are_invisible(gateway):
    with gateway.admin() as admin:
        tool = admin.post("/v1/tools", json=tool_body()).json()
    other_admin = _admin_of_new_account(gateway)
    with gateway.client(other_admin) as c:
        assert c.get("/v1/tools").json()["data"] == []
        error_of(c.get(f"/v1/tools/{tool['id']}"), 404, "not_found_error")
        error_of(c.delete(f"/v1/tools/{tool['id']}"), 404, "not_found_error")
        # Names are unique per account only.
        assert c.post("/v1/tools", json=tool_body()).status_code == 201


@pytest.mark.parametrize(
    "url",
    [
        "http://1.1.1.1/tools/lookup",  # plain http
        "https://127.0.0.1/hook",
        "https://127.0.0.1:8443/hook",
        "https://10.0.0.1/hook",
        "https://192.168.1.20/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/hook",
        "https://localhost/hook",  # a hostname that resolves to loopback
        "https://0.0.0.0/hook",
        "https://1.1.1.1:0/hook",  # port 0 is no destination
        "ftp://1.1.1.1/hook",
        "https://user:pass@1.1.1.1/hook",
        "not a url",
    ],
)
def test_registration_refuses_private_and_odd_urls_when_not_allowed(gateway, url):
    with gateway.admin() as c:
        assert "webhook_url" in error_of(c.post("/v1/tools", json=tool_body(webhook_url=url)), 400)
        assert c.get("/v1/tools").json()["data"] == []


def test_private_deployment_allows_loopback_and_http_but_never_metadata(gateway_factory):
    gw = gateway_factory(allow_private_webhooks=True)
    with gw.admin() as c:
        ok = c.post("/v1/tools", json=tool_body(name="local", webhook_url="http://127.0.0.1:9000/tools/x"))
        assert ok.status_code == 201, ok.text
        assert c.post("/v1/tools", json=tool_body(name="lan", webhook_url="http://10.0.0.1/x")).status_code == 201
        for url in ("http://169.254.169.254/latest/meta-data/", "https://169.254.169.254/",
                    "http://[fe80::1]/x", "http://0.0.0.0/x"):
            assert "webhook_url" in error_of(c.post("/v1/tools", json=tool_body(name="meta", webhook_url=url)), 400)


# --- turns naming tools ---------------------------------------------------------------------------


def _admin_of_new_account(gateway) -> str:
    """A second tenant: a new account with its own admin key (as an operator would create it)."""
    from threadgate.bootstrap import create_account
    from threadgate.domain.keys import display_prefix, hash_secret, new_id, new_secret
    from threadgate.domain.models import ApiKey

    rt = gateway.runtime
    account = create_account(rt.stores, rt.clock, "other")
    secret = new_secret(rt.settings.key_prefix)
    key = ApiKey(id=new_id("key_"), account_id=account.id, name="other admin", prefix=display_prefix(secret),
                 scope="admin", cap_micros=None, created_at=rt.clock.now_ms())
    rt.stores.keys.create_key(key, hash_secret(secret))
    return secret


@pytest.mark.parametrize("field", ["tools", "tool_ids"])
def test_turn_naming_unknown_deleted_or_foreign_tool_is_400_and_persists_nothing(gateway, field):
    with gateway.admin() as admin:
        live = admin.post("/v1/tools", json=tool_body(name="live")).json()
        deleted = admin.post("/v1/tools", json=tool_body(name="gone")).json()
        admin.delete(f"/v1/tools/{deleted['id']}")
    with gateway.client(_admin_of_new_account(gateway)) as other:
        foreign = other.post("/v1/tools", json=tool_body(name="theirs")).json()
    key = gateway.mint()
    with gateway.client(key["secret"]) as c:
        thread = c.post("/v1/threads", json={}).json()
        for bad in ("tool_" + "f" * 32, deleted["id"], foreign["id"]):
            r = c.post(f"/v1/threads/{thread['id']}/messages", json={
                "model": "claude-haiku-4-5", "max_tokens": 50, "content": "hi", field: [live["id"], bad]})
            message = error_of(r, 400)
            assert f"{field}[1]" in message and bad in message
        assert c.get(f"/v1/threads/{thread['id']}/messages").json()["data"] == []
        assert c.get(f"/v1/threads/{thread['id']}").json()["message_count"] == 0
    assert gateway.fake.requests == []  # no upstream call was made
    with gateway.admin() as admin:
        assert admin.get(f"/v1/keys/{key['id']}/usage").json()["request_count"] == 0
