"""Keys, account, usage, models and threads over real HTTP, as an app developer sees them
(API.md §1, §3–6)."""

from __future__ import annotations

import hashlib
import re
import time
from decimal import Decimal
from fractions import Fraction
from typing import Any

import httpx
import pytest

LOCAL = "threadgate-local"
HAIKU = "claude-haiku-4-5"


@pytest.fixture(params=["sqlite", "dynamodb"])
def gateway(request, gateway_on_store):
    """The same behaviour on both storage backends (DynamoDB under moto)."""
    return gateway_on_store(request.param)


KEY_FIELDS = {"id", "object", "name", "prefix", "scope", "max_spend_usd", "end_user_id", "metadata",
              "spent_micros", "reserved_micros", "created_at", "last_used_at", "revoked"}


def turn(c: httpx.Client, thread_id: str, content: str = "hello", model: str = LOCAL, **kw: Any) -> httpx.Response:
    return c.post(f"/v1/threads/{thread_id}/messages", json={"model": model, "max_tokens": 30, "content": content, **kw})


def new_thread(c: httpx.Client, **body: Any) -> dict[str, Any]:
    r = c.post("/v1/threads", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def second_account(gateway, name: str = "other") -> tuple[str, str]:
    """(account id, admin secret) of a second tenant on the same gateway."""
    from threadgate.api.routes.keys import mint_key
    from threadgate.api.schemas import KeyCreate
    from threadgate.bootstrap import create_account

    rt = gateway.runtime
    account = create_account(rt.stores, rt.clock, name)
    _, secret = mint_key(rt, account.id, KeyCreate(name=f"{name}-admin", scope="admin"))
    return account.id, secret


# --- keys -----------------------------------------------------------------------------------

def test_minted_key_shape_and_secret_shown_once(gateway):
    with gateway.admin() as c:
        r = c.post("/v1/keys", json={"name": "app", "max_spend_usd": 2.5, "end_user_id": "alice",
                                     "metadata": {"team": "x"}})
        assert r.status_code == 201
        key = r.json()
        assert set(key) == {"id", "object", "name", "secret", "prefix", "scope", "max_spend_usd", "end_user_id",
                            "metadata", "created_at"}
        secret = key["secret"]
        assert re.fullmatch(r"qlk_live_[0-9a-f]{64}", secret)
        assert key["prefix"] == f"{secret[:13]}…{secret[-4:]}"
        assert (key["object"], key["name"], key["scope"], key["max_spend_usd"], key["end_user_id"], key["metadata"]) == (
            "key", "app", "standard", 2.5, "alice", {"team": "x"})
        # The secret is never returned again, by any admin route.
        for path in ("/v1/keys", f"/v1/keys/{key['id']}", f"/v1/keys/{key['id']}/usage", "/v1/usage"):
            r = c.get(path)
            assert r.status_code == 200 and secret not in r.text and secret[13:-4] not in r.text
        listed = c.get("/v1/keys").json()["keys"]
        assert all(set(k) == KEY_FIELDS for k in listed)
        got = c.get(f"/v1/keys/{key['id']}").json()
        assert set(got) == KEY_FIELDS and got["prefix"] == key["prefix"] and got["revoked"] is False
    with gateway.client(secret) as c:
        assert secret not in c.get("/v1/key").text
    # Only a hash is stored.
    stored = gateway.runtime.stores.keys.find_by_hash(hashlib.sha256(secret.encode()).hexdigest())
    assert stored is not None and stored.id == key["id"]


def test_admin_scope_mints_admin_keys(gateway):
    admin2 = gateway.mint(scope="admin")
    with gateway.client(admin2["secret"]) as c:
        assert c.get("/v1/keys").status_code == 200
        assert c.get("/v1/usage").status_code == 200


def test_list_is_newest_first_and_keeps_revoked_keys(gateway):
    minted = []
    for name in ("a", "b", "c"):
        minted.append(gateway.mint(name=name))
        time.sleep(0.003)  # distinct created_at
    with gateway.admin() as c:
        assert c.delete(f"/v1/keys/{minted[1]['id']}").json() == {"ok": True}
        keys = c.get("/v1/keys").json()["keys"]
    assert [k["name"] for k in keys] == ["c", "b", "a", "master"]
    assert [k["revoked"] for k in keys] == [False, True, False, False]
    assert [k["created_at"] for k in keys] == sorted((k["created_at"] for k in keys), reverse=True)


def test_revocation_is_immediate_and_final(gateway):
    key = gateway.mint()
    with gateway.client(key["secret"]) as user, gateway.admin() as admin:
        t = new_thread(user)
        assert turn(user, t["id"]).status_code == 200
        assert admin.delete(f"/v1/keys/{key['id']}").status_code == 200
        for r in (user.get("/v1/key"), user.get("/v1/threads"), turn(user, t["id"])):
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        again = admin.delete(f"/v1/keys/{key['id']}")
        assert again.status_code == 404 and again.json()["error"]["type"] == "not_found_error"
        # Revoked keys stay visible to the admin, with their usage.
        assert admin.get(f"/v1/keys/{key['id']}").json()["revoked"] is True
        by_key = {row["key_id"]: row for row in admin.get("/v1/usage").json()["by_key"]}
        assert by_key[key["id"]]["request_count"] == 1
        # And the thread it made is still there for the account.
        assert admin.get(f"/v1/threads/{t['id']}").json()["message_count"] == 2


def test_patch_key_and_cap_below_spend_gives_402(gateway):
    key = gateway.mint(name="old", max_spend_usd=1.0, metadata={"a": 1})
    with gateway.client(key["secret"]) as user, gateway.admin() as admin:
        t = new_thread(user)
        assert turn(user, t["id"]).status_code == 200
        spent = admin.get(f"/v1/keys/{key['id']}").json()["spent_micros"]
        assert spent > 0
        r = admin.patch(f"/v1/keys/{key['id']}", json={"name": "new", "metadata": {"b": 2}})
        assert r.status_code == 200
        assert (r.json()["name"], r.json()["metadata"], r.json()["max_spend_usd"]) == ("new", {"b": 2}, 1.0)
        # Lowering the cap below what was already spent is allowed; the key is then over cap.
        low = (spent - 1) / 1_000_000
        r = admin.patch(f"/v1/keys/{key['id']}", json={"max_spend_usd": low})
        assert r.status_code == 200 and r.json()["max_spend_usd"] == low
        calls = len(gateway.fake.requests)
        count = user.get(f"/v1/threads/{t['id']}").json()["message_count"]
        for model in (LOCAL, HAIKU):
            r = turn(user, t["id"], model=model)
            assert r.status_code == 402 and r.json()["error"]["type"] == "key_cap_exceeded"
        assert len(gateway.fake.requests) == calls
        assert user.get(f"/v1/threads/{t['id']}").json()["message_count"] == count
        me = user.get("/v1/key").json()
        assert me["remaining_micros"] == 0 and me["spent_micros"] == spent
        # null lifts the cap again.
        assert admin.patch(f"/v1/keys/{key['id']}", json={"max_spend_usd": None}).json()["max_spend_usd"] is None
        assert turn(user, t["id"]).status_code == 200


def test_patch_cannot_change_scope_or_end_user(gateway):
    key = gateway.mint(end_user_id="carol")
    with gateway.admin() as admin:
        # Refused, naming the field, rather than a 200 that silently ignored it (issue 11 item 7).
        r = admin.patch(f"/v1/keys/{key['id']}", json={"scope": "admin", "end_user_id": None, "name": "n2"})
        assert r.status_code == 400 and "scope" in r.json()["error"]["message"], r.text
        r = admin.patch(f"/v1/keys/{key['id']}", json={"end_user_id": None})
        assert r.status_code == 400 and "end_user_id" in r.json()["error"]["message"], r.text
        got = admin.get(f"/v1/keys/{key['id']}").json()
        assert (got["scope"], got["end_user_id"], got["name"]) == ("standard", "carol", "k")
    with gateway.client(key["secret"]) as c:
        assert c.get("/v1/keys").status_code == 403
        assert c.get("/v1/key").json()["end_user_id"] == "carol"


def test_whoami_remaining_budget(gateway):
    key = gateway.mint(max_spend_usd=0.5, end_user_id="bob")
    unlimited = gateway.mint()
    with gateway.client(key["secret"]) as user:
        me = user.get("/v1/key").json()
        assert me == {"id": key["id"], "name": "k", "prefix": key["prefix"], "scope": "standard",
                      "end_user_id": "bob", "cap_micros": 500_000, "spent_micros": 0, "reserved_micros": 0,
                      "remaining_micros": 500_000}
        t = new_thread(user)
        assert turn(user, t["id"]).status_code == 200
        me = user.get("/v1/key").json()
        assert me["spent_micros"] > 0 and me["remaining_micros"] == 500_000 - me["spent_micros"]
    with gateway.client(unlimited["secret"]) as user:
        assert user.get("/v1/key").json()["remaining_micros"] is None
        with gateway.admin() as admin:  # the account budget bounds what any key has left
            admin.patch("/v1/account", json={"max_spend_usd": 0.25})
            spent = admin.get("/v1/account").json()["spent_micros"]
        assert user.get("/v1/key").json()["remaining_micros"] == 250_000 - spent


def test_account_get_and_patch(gateway):
    with gateway.admin() as c:
        a = c.get("/v1/account").json()
        assert set(a) == {"id", "object", "name", "max_spend_usd", "spent_micros", "reserved_micros", "created_at"}
        assert (a["object"], a["max_spend_usd"], a["spent_micros"]) == ("account", None, 0)
        r = c.patch("/v1/account", json={"name": "acme", "max_spend_usd": 12.5})
        assert (r.json()["name"], r.json()["max_spend_usd"]) == ("acme", 12.5)
        assert c.get("/v1/account").json()["name"] == "acme"
        assert c.patch("/v1/account", json={"max_spend_usd": None}).json()["max_spend_usd"] is None
        assert c.get("/v1/account").json()["name"] == "acme"  # untouched fields stay


# --- end users and accounts ---------------------------------------------------------------------

def test_end_user_binding(gateway):
    alice = gateway.mint(end_user_id="alice")
    with gateway.admin() as admin:
        bobs = new_thread(admin, end_user_id="bob")
        unowned = new_thread(admin)
    with gateway.client(alice["secret"]) as c:
        mine = new_thread(c)
        assert mine["end_user_id"] == "alice"
        assert new_thread(c, end_user_id="alice")["end_user_id"] == "alice"
        r = c.post("/v1/threads", json={"end_user_id": "bob"})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"  # API.md §1
        for other in (bobs, unowned):
            for r in (c.get(f"/v1/threads/{other['id']}"), c.get(f"/v1/threads/{other['id']}/messages"),
                      c.patch(f"/v1/threads/{other['id']}", json={"title": "x"}),
                      turn(c, other["id"]), c.delete(f"/v1/threads/{other['id']}")):
                assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        listed = c.get("/v1/threads").json()
        assert {t["end_user_id"] for t in listed["data"]} == {"alice"} and len(listed["data"]) == 2
        r = c.get("/v1/threads", params={"end_user_id": "bob"})  # another end user: 404, API.md §1
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        assert len(c.get("/v1/threads", params={"end_user_id": "alice"}).json()["data"]) == 2
        assert turn(c, mine["id"]).status_code == 200
    with gateway.admin() as admin:
        assert admin.get(f"/v1/threads/{bobs['id']}").json()["title"] is None  # the PATCH above changed nothing
        ids = {t["id"] for t in admin.get("/v1/threads", params={"end_user_id": "bob"}).json()["data"]}
        assert ids == {bobs["id"]}
    # An unbound standard key sees every thread of its account.
    with gateway.client(gateway.mint()["secret"]) as c:
        assert len(c.get("/v1/threads").json()["data"]) == 4
        assert c.get(f"/v1/threads/{bobs['id']}").status_code == 200


def test_accounts_never_see_each_other(gateway):
    std = gateway.mint()
    with gateway.client(std["secret"]) as c:
        mine = new_thread(c)
        assert turn(c, mine["id"]).status_code == 200
    _, other_admin = second_account(gateway)
    with gateway.client(other_admin) as o:
        other_std = o.post("/v1/keys", json={"name": "theirs"}).json()
        assert [k["name"] for k in o.get("/v1/keys").json()["keys"]] == ["theirs", "other-admin"]
        assert o.get("/v1/threads").json()["data"] == []
        usage = o.get("/v1/usage").json()
        assert (usage["request_count"], usage["total_cost_micros"], usage["by_key"]) == (0, 0, [])
        assert o.get("/v1/account").json()["name"] == "other"
        for r in (o.get(f"/v1/keys/{std['id']}"), o.get(f"/v1/keys/{std['id']}/usage"),
                  o.patch(f"/v1/keys/{std['id']}", json={"name": "stolen"}), o.delete(f"/v1/keys/{std['id']}"),
                  o.get(f"/v1/threads/{mine['id']}"), o.get(f"/v1/threads/{mine['id']}/messages"),
                  turn(o, mine["id"]), o.delete(f"/v1/threads/{mine['id']}")):
            assert r.status_code == 404, r.text
    with gateway.client(other_std["secret"]) as o:
        assert o.get(f"/v1/threads/{mine['id']}").status_code == 404
        theirs = new_thread(o)
    with gateway.admin() as admin:
        assert other_std["id"] not in {k["id"] for k in admin.get("/v1/keys").json()["keys"]}
        assert admin.get(f"/v1/threads/{theirs['id']}").status_code == 404
        assert admin.get(f"/v1/keys/{std['id']}").json()["name"] == "k"
        assert admin.get(f"/v1/threads/{mine['id']}").json()["message_count"] == 2


# --- threads ------------------------------------------------------------------------------------

def test_thread_shape(gateway):
    with gateway.admin() as c:
        r = c.post("/v1/threads", json={"end_user_id": "u", "metadata": {"k": "v"}})
        assert r.status_code == 201
        t = r.json()
        assert set(t) == {"id", "object", "end_user_id", "metadata", "title", "created_at", "last_active_at",
                          "message_count"}
        assert (t["object"], t["end_user_id"], t["metadata"], t["title"], t["message_count"]) == (
            "thread", "u", {"k": "v"}, None, 0)
        assert c.get(f"/v1/threads/{t['id']}").json() == t


def test_thread_list_pages_by_cursor(gateway):
    with gateway.admin() as c:
        made = [new_thread(c, metadata={"i": i})["id"] for i in range(25)]
        pages, cursor = [], None
        while True:
            params = {"limit": 10, **({"before": cursor} if cursor else {})}
            page = c.get("/v1/threads", params=params).json()
            pages.append(page)
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
            assert cursor
        assert [len(p["data"]) for p in pages] == [10, 10, 5]
        listed = [t for p in pages for t in p["data"]]
        assert sorted(t["id"] for t in listed) == sorted(made)
        keys = [(t["last_active_at"], t["id"]) for t in listed]
        assert keys == sorted(keys, reverse=True)
        assert c.get("/v1/threads").json()["data"] == listed[:20]  # default limit 20
        # A turn makes a thread the most recently active one.
        oldest = listed[-1]["id"]
        assert turn(c, oldest).status_code == 200
        assert c.get("/v1/threads", params={"limit": 1}).json()["data"][0]["id"] == oldest


def test_thread_patch_merges_metadata_and_sets_title(gateway):
    with gateway.admin() as c:
        t = new_thread(c, metadata={"keep": 1, "drop": 2, "change": "a"})
        r = c.patch(f"/v1/threads/{t['id']}", json={"metadata": {"drop": None, "change": "b", "add": [1]}})
        assert r.status_code == 200
        assert r.json()["metadata"] == {"keep": 1, "change": "b", "add": [1]}
        r = c.patch(f"/v1/threads/{t['id']}", json={"title": "Trip plans"})
        assert (r.json()["title"], r.json()["metadata"]) == ("Trip plans", {"keep": 1, "change": "b", "add": [1]})
        r = c.patch(f"/v1/threads/{t['id']}", json={"title": None})
        assert r.json()["title"] is None
        assert c.patch(f"/v1/threads/{t['id']}", json={"metadata": {"zzz": None}}).json()["metadata"] == {
            "keep": 1, "change": "b", "add": [1]}
        assert c.get(f"/v1/threads/{t['id']}").json()["metadata"] == {"keep": 1, "change": "b", "add": [1]}
        untouched = new_thread(c)
        assert c.patch(f"/v1/threads/{untouched['id']}", json={"metadata": {"a": None}}).json()["metadata"] == {}


def test_deleted_thread_is_gone_everywhere(gateway):
    with gateway.admin() as c:
        t = new_thread(c)
        assert turn(c, t["id"]).status_code == 200
        r = c.delete(f"/v1/threads/{t['id']}")
        assert r.status_code == 200 and r.json() == {"id": t["id"], "object": "thread", "deleted": True}
        calls = len(gateway.fake.requests)
        for r in (c.get(f"/v1/threads/{t['id']}"), c.get(f"/v1/threads/{t['id']}/messages"),
                  turn(c, t["id"]), turn(c, t["id"], model=HAIKU), c.patch(f"/v1/threads/{t['id']}", json={"title": "x"}),
                  c.delete(f"/v1/threads/{t['id']}")):
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        assert len(gateway.fake.requests) == calls
        assert t["id"] not in {x["id"] for x in c.get("/v1/threads").json()["data"]}
    rt = gateway.runtime
    account = rt.stores.keys.first_account().id
    assert rt.stores.threads.list_messages(account, t["id"]) == []


def test_history_listing(gateway):
    with gateway.admin() as c:
        t = new_thread(c)
        for i in range(3):
            assert turn(c, t["id"], content=f"message {i}").status_code == 200
        full = c.get(f"/v1/threads/{t['id']}/messages").json()
        assert set(full) == {"object", "data", "has_more", "first_seq", "last_seq"}
        assert [m["seq"] for m in full["data"]] == [1, 2, 3, 4, 5, 6]
        assert [m["role"] for m in full["data"]] == ["user", "assistant"] * 3
        assert (full["has_more"], full["first_seq"], full["last_seq"]) == (False, 1, 6)
        first = full["data"][0]
        assert set(first) == {"seq", "role", "content", "model", "request_id", "created_at"}
        assert first["model"] is None and full["data"][1]["model"] == LOCAL
        assert "message 0" in str(first["content"])
        assert first["request_id"] == full["data"][1]["request_id"]  # one turn, one request

        def page(**params: Any) -> dict[str, Any]:
            r = c.get(f"/v1/threads/{t['id']}/messages", params=params)
            assert r.status_code == 200, r.text
            return r.json()

        def seqs(p: dict[str, Any]) -> list[int]:
            return [m["seq"] for m in p["data"]]

        p = page(limit=4)
        assert (seqs(p), p["has_more"], p["first_seq"], p["last_seq"]) == ([1, 2, 3, 4], True, 1, 4)
        p = page(limit=4, after_seq=4)
        assert (seqs(p), p["has_more"]) == ([5, 6], False)
        p = page(order="desc", limit=2)
        assert (seqs(p), p["has_more"], p["first_seq"], p["last_seq"]) == ([6, 5], True, 6, 5)
        p = page(order="desc", before_seq=5, limit=2)
        assert (seqs(p), p["has_more"]) == ([4, 3], True)
        assert seqs(page(order="desc", before_seq=3)) == [2, 1]
        assert seqs(page(after_seq=2, before_seq=5)) == [3, 4]
        p = page(after_seq=6)
        assert (p["data"], p["has_more"], p["first_seq"], p["last_seq"]) == ([], False, None, None)
        assert page(limit=200)["data"] == full["data"]


# --- usage and models ---------------------------------------------------------------------------

def _ceil_markup(upstream: int, markup: str) -> int:
    x = upstream * Fraction(markup)
    return -(-x.numerator // x.denominator)


def _expected_upstream(event: dict[str, Any], model: dict[str, Any]) -> int:
    micros = Fraction(0)
    for tokens, price in (("input_tokens", "input_usd_per_mtok"), ("output_tokens", "output_usd_per_mtok"),
                          ("cache_creation_input_tokens", "cache_write_usd_per_mtok"),
                          ("cache_read_input_tokens", "cache_read_usd_per_mtok")):
        micros += event[tokens] * Fraction(Decimal(str(model[price])))
    return -(-micros.numerator // micros.denominator)


def _run_traffic(gateway) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turns on two keys and two models; returns (keys, all usage events)."""
    from tests.fakes.fake_anthropic import FakeReply

    keys = [gateway.mint(name="one"), gateway.mint(name="two")]
    gateway.fake.enqueue(FakeReply(text="cached answer", input_tokens=1234, output_tokens=77,
                                   cache_creation_input_tokens=333, cache_read_input_tokens=4444))
    with gateway.client(keys[0]["secret"]) as c:
        t = new_thread(c)
        for model in (HAIKU, LOCAL, HAIKU):
            assert turn(c, t["id"], model=model, content=f"question for {model}").status_code == 200
    with gateway.client(keys[1]["secret"]) as c:
        t = new_thread(c)
        assert turn(c, t["id"], model=LOCAL).status_code == 200
        assert c.post("/v1/messages", json={"model": HAIKU, "max_tokens": 20,
                                            "messages": [{"role": "user", "content": "one-off"}]}).status_code == 200
    events = []
    with gateway.admin() as admin:
        for k in keys:
            usage = admin.get(f"/v1/keys/{k['id']}/usage").json()
            events += usage["events"]
    return keys, events


def test_usage_totals_are_the_sum_of_events(gateway):
    keys, events = _run_traffic(gateway)
    assert len(events) == 5
    with gateway.admin() as admin:
        models = {m["id"]: m for m in admin.get("/v1/models").json()["data"]}
        usage = admin.get("/v1/usage").json()
        per_key = {k["id"]: admin.get(f"/v1/keys/{k['id']}/usage").json() for k in keys}
        listed = {k["id"]: k for k in admin.get("/v1/keys").json()["keys"]}
    assert usage["object"] == "usage"
    assert usage["total_cost_micros"] == sum(e["cost_micros"] for e in events) > 0
    assert usage["total_input_tokens"] == sum(e["input_tokens"] for e in events)
    assert usage["total_output_tokens"] == sum(e["output_tokens"] for e in events)
    assert usage["request_count"] == 5
    rows = {r["key_id"]: r for r in usage["by_key"]}
    assert set(rows) == {k["id"] for k in keys}
    for k in keys:
        mine = [e for e in events if e["key_id"] == k["id"]]
        assert rows[k["id"]] == {"key_id": k["id"], "key_name": k["name"], "key_prefix": k["prefix"],
                                 "cost_micros": sum(e["cost_micros"] for e in mine),
                                 "input_tokens": sum(e["input_tokens"] for e in mine),
                                 "output_tokens": sum(e["output_tokens"] for e in mine),
                                 "request_count": len(mine)}
        ku = per_key[k["id"]]
        assert (ku["cost_micros"], ku["request_count"], ku["key_name"], ku["key_prefix"]) == (
            rows[k["id"]]["cost_micros"], len(mine), k["name"], k["prefix"])
        assert ku["spent_micros"] == listed[k["id"]]["spent_micros"] == ku["cost_micros"]
        assert ku["reserved_micros"] == 0 and ku["cap_micros"] is None
    by_model = {r["model"]: r for r in usage["by_model"]}
    assert set(by_model) == {HAIKU, LOCAL}
    for model, row in by_model.items():
        mine = [e for e in events if e["model"] == model]
        assert row == {"model": model, "cost_micros": sum(e["cost_micros"] for e in mine),
                       "input_tokens": sum(e["input_tokens"] for e in mine),
                       "output_tokens": sum(e["output_tokens"] for e in mine), "request_count": len(mine)}
    assert any(e["cache_read_input_tokens"] == 4444 and e["cache_creation_input_tokens"] == 333 for e in events)
    for e in events:
        assert set(e) == {"id", "request_id", "key_id", "account_id", "thread_id", "model", "provider",
                          "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                          "upstream_cost_micros", "cost_micros", "latency_ms", "status", "created_at",
                          "price_tier", "service_tier"}
        assert e["upstream_cost_micros"] == _expected_upstream(e, models[e["model"]])
        assert e["cost_micros"] == _ceil_markup(e["upstream_cost_micros"], "1.07")
        assert e["status"] == "ok" and e["provider"] == models[e["model"]]["provider"]
        assert all(isinstance(e[f], int) for f in ("cost_micros", "upstream_cost_micros", "input_tokens"))
    # A thread turn's events carry the thread; the passthrough call carries none.
    assert sum(e["thread_id"] is None for e in events) == 1


def test_usage_window_bounds(gateway):
    _, events = _run_traffic(gateway)
    times = sorted({e["created_at"] for e in events})
    assert len(times) >= 2
    cut = times[1]
    with gateway.admin() as admin:
        def total(**params: int) -> tuple[int, int]:
            u = admin.get("/v1/usage", params=params).json()
            assert (u["from_ms"], u["to_ms"]) == (params.get("from_ms", u["from_ms"]), params.get("to_ms", u["to_ms"]))
            return u["request_count"], u["total_cost_micros"]

        before = [e for e in events if e["created_at"] < cut]
        after = [e for e in events if e["created_at"] >= cut]
        assert total(from_ms=0, to_ms=cut) == (len(before), sum(e["cost_micros"] for e in before))  # to_ms exclusive
        assert total(from_ms=cut) == (len(after), sum(e["cost_micros"] for e in after))  # from_ms inclusive
        assert total(from_ms=times[-1] + 1) == (0, 0)
        assert total(from_ms=times[-1] + 10**9) == (0, 0)  # a window starting in the future is empty
        assert total(from_ms=0, to_ms=times[0]) == (0, 0)
        assert total() == (len(events), sum(e["cost_micros"] for e in events))  # this month
        key_id = events[0]["key_id"]
        mine_after = [e for e in after if e["key_id"] == key_id]
        ku = admin.get(f"/v1/keys/{key_id}/usage", params={"from_ms": cut}).json()
        assert ku["request_count"] == len(mine_after)
        assert sorted(e["id"] for e in ku["events"]) == sorted(e["id"] for e in mine_after)


def test_configured_markup_is_applied_and_shown(gateway_factory):
    gw = gateway_factory(markup="1.5")
    with gw.admin() as c:
        t = new_thread(c)
        assert turn(c, t["id"]).status_code == 200
        key_id = c.get("/v1/key").json()["id"]
        [event] = c.get(f"/v1/keys/{key_id}/usage").json()["events"]
        assert event["cost_micros"] == _ceil_markup(event["upstream_cost_micros"], "1.5")
        assert {m["markup"] for m in c.get("/v1/models").json()["data"]} == {1.5}


def test_models_list(gateway):
    with gateway.client(gateway.mint()["secret"]) as c:
        r = c.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    assert {LOCAL, HAIKU, "claude-sonnet-4-6"} <= set(models)
    assert not any(m["provider"] == "openai" for m in models.values())  # no OpenAI key configured
    for m in models.values():
        assert set(m) == {"id", "object", "provider", "upstream_id", "context_window", "max_output_tokens", "legacy",
                          "input_usd_per_mtok", "output_usd_per_mtok", "cache_read_usd_per_mtok",
                          "cache_write_usd_per_mtok", "cache_write_1h_usd_per_mtok", "price_tiers", "price_source",
                          "rules", "markup"}
        assert m["object"] == "model" and m["markup"] == 1.07
        assert m["context_window"] > m["max_output_tokens"] > 0
        assert m["price_tiers"]["default"][0]["input_usd_per_mtok"] == m["input_usd_per_mtok"]
        assert m["price_source"]
    # Limits as the provider documents them today (legacy Sonnet 4.6: 1M context, 128K output).
    sonnet = models["claude-sonnet-4-6"]
    assert (sonnet["context_window"], sonnet["max_output_tokens"], sonnet["legacy"]) == (1_000_000, 128_000, True)
    assert sonnet["price_source"].startswith("genai-prices ")
    assert (models[HAIKU]["input_usd_per_mtok"], models[HAIKU]["output_usd_per_mtok"],
            models[HAIKU]["cache_read_usd_per_mtok"], models[HAIKU]["cache_write_usd_per_mtok"]) == (1, 5, 0.1, 1.25)
    assert models[LOCAL]["provider"] == "local" and models[HAIKU]["provider"] == "anthropic"


def test_metadata_up_to_16_kib_is_kept(gateway):
    """The limit is what one storage record can hold with room to spare, on both backends."""
    most = {"pad": "m" * (16 * 1024 - len('{"pad":""}'))}
    with gateway.admin() as c:
        t = new_thread(c, metadata=most)
        assert c.get(f"/v1/threads/{t['id']}").json()["metadata"] == most
        key = c.post("/v1/keys", json={"name": "meta", "metadata": most})
        assert key.status_code == 201
        assert c.get(f"/v1/keys/{key.json()['id']}").json()["metadata"] == most
        r = c.post("/v1/threads", json={"metadata": {"pad": "m" * 500_000}})
        assert r.status_code == 400 and "metadata" in r.json()["error"]["message"]
        # Each patch fits but their merge would not: refused, and the thread keeps what it had.
        r = c.patch(f"/v1/threads/{t['id']}", json={"metadata": {"more": "x"}})
        assert r.status_code == 400
        assert c.get(f"/v1/threads/{t['id']}").json()["metadata"] == most


def test_concurrent_metadata_patches_lose_nothing(gateway):
    from concurrent.futures import ThreadPoolExecutor

    with gateway.admin() as c:
        t = new_thread(c, metadata={"keep": True})

    def patch(i: int) -> int:
        with gateway.admin() as c:
            return c.patch(f"/v1/threads/{t['id']}", json={"metadata": {f"k{i}": i}}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(patch, range(24))) == {200}
    with gateway.admin() as c:
        assert c.get(f"/v1/threads/{t['id']}").json()["metadata"] == {"keep": True, **{f"k{i}": i for i in range(24)}}
        # A running turn holds the thread's turn lock; a metadata PATCH does not need it.
        threads, now = gateway.runtime.stores.threads, gateway.runtime.clock.now_ms()
        assert threads.acquire_turn_lock(t["id"], "a-running-turn", now, 60_000)
        r = c.patch(f"/v1/threads/{t['id']}", json={"title": "t", "metadata": {"keep": None}})
        assert r.status_code == 200 and "keep" not in r.json()["metadata"]
        threads.release_turn_lock(t["id"], "a-running-turn")


def test_concurrent_metadata_patches_over_a_slow_dynamodb_all_land_at_once(gateway_on_store):
    """Across a network every DynamoDB request takes time. Concurrent PATCHes of different keys
    must each land without queueing behind the others' merges: none answers 409, none is lost."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest_dynamo import network_latency

    gw = gateway_on_store("dynamodb")
    with gw.admin() as c:
        t = new_thread(c, metadata={"keep": True})

    def patch(i: int) -> int:
        with gw.admin() as c:
            return c.patch(f"/v1/threads/{t['id']}", json={"metadata": {f"k{i}": i}}).status_code

    with network_latency(0.1), ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(patch, range(24)))
    assert codes == [200] * 24
    with gw.admin() as c:
        assert c.get(f"/v1/threads/{t['id']}").json()["metadata"] == {"keep": True, **{f"k{i}": i for i in range(24)}}


def test_per_key_rate_limit_answers_429_with_retry_after(gateway_factory):
    gw = gateway_factory(rate_limit_per_minute=2)
    key = gw.mint()
    with gw.client(key["secret"]) as c:
        assert [c.get("/v1/key").status_code for _ in range(2)] == [200, 200]
        r = c.get("/v1/key")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    with gw.admin() as admin:  # another key has its own budget
        assert admin.get("/v1/key").status_code == 200
