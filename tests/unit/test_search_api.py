"""Search as an app sees it (API.md §9) over real HTTP with the offline model: turns are
indexed before the response completes, results never cross accounts or end users (even with a
forged `end_user_id`), deleting a thread removes its entries at once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

LOCAL = "threadgate-local"
REFUND = "I want a refund for the broken blender I ordered last week."


def _turn(c: httpx.Client, thread_id: str, content: str) -> None:
    r = c.post(f"/v1/threads/{thread_id}/messages", json={"model": LOCAL, "max_tokens": 20, "content": content})
    assert r.status_code == 200, r.text


def _thread(c: httpx.Client, **body: Any) -> str:
    r = c.post("/v1/threads", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _texts(r: httpx.Response) -> list[tuple[str | None, str]]:
    assert r.status_code == 200, r.text
    return [(item["end_user_id"], item["snippet"]) for item in r.json()["data"]]


@pytest.fixture
def world(gateway_factory):
    """Account A with end users alice and bob (near-identical texts), account B with alice."""
    from threadgate.api.routes.keys import mint_key
    from threadgate.api.schemas import KeyCreate
    from threadgate.bootstrap import create_account

    gw = gateway_factory()
    alice = gw.mint(scope="standard", end_user_id="alice")["secret"]
    bob = gw.mint(scope="standard", end_user_id="bob")["secret"]
    app_key = gw.mint(scope="standard")["secret"]
    rt = gw.runtime
    other = create_account(rt.stores, rt.clock, "other")
    _, other_admin = mint_key(rt, other.id, KeyCreate(name="other-admin", scope="admin"))
    threads = {}
    for name, key, text in (
        ("alice", alice, REFUND),
        ("bob", bob, REFUND.replace("blender", "blender!")),
        ("other", other_admin, REFUND),
    ):
        with gw.client(key) as c:
            threads[name] = _thread(c, end_user_id="alice") if name == "other" else _thread(c)
            _turn(c, threads[name], text)
    with gw.client(alice) as c:
        threads["alice_trip"] = _thread(c)
        _turn(c, threads["alice_trip"], "Plan a rainy weekend in Lisbon with museums.")
    return gw, {"alice": alice, "bob": bob, "app": app_key, "other": other_admin}, threads


def test_an_end_user_key_finds_only_its_own_history(world) -> None:
    gw, keys, threads = world
    with gw.client(keys["alice"]) as c:
        found = _texts(c.get("/v1/search", params={"q": "money back for a kitchen appliance", "limit": 50}))
        assert found and {eu for eu, _ in found} == {"alice"}
        assert found[0][1] == REFUND  # the user turn itself, whole (short message)
        # A forged end_user_id never reveals bob's text.
        forged = c.get("/v1/search", params={"q": "refund blender", "end_user_id": "bob"})
        assert forged.status_code == 404  # API.md §1: another end user is "not found"
        assert "blender!" not in forged.text
        # Bob's thread is not searchable through alice's key either.
        assert c.get(f"/v1/threads/{threads['bob']}/search", params={"q": "refund"}).status_code == 404


def test_results_never_cross_accounts(world) -> None:
    gw, keys, threads = world
    with gw.client(keys["other"]) as c:
        found = c.get("/v1/search", params={"q": "refund blender", "limit": 50}).json()["data"]
        assert {item["thread_id"] for item in found} == {threads["other"]}
    with gw.client(keys["app"]) as c:
        found = c.get("/v1/search", params={"q": "refund blender", "limit": 50}).json()["data"]
        assert threads["other"] not in {item["thread_id"] for item in found}
        assert {item["end_user_id"] for item in found} == {"alice", "bob"}
        only_bob = _texts(c.get("/v1/search", params={"q": "refund blender", "end_user_id": "bob"}))
        assert {eu for eu, _ in only_bob} == {"bob"}


def test_the_result_shape_and_thread_scoped_search(world) -> None:
    gw, keys, threads = world
    with gw.client(keys["alice"]) as c:
        r = c.get(f"/v1/threads/{threads['alice_trip']}/search", params={"q": "refund", "limit": 5})
        body = r.json()
        assert body["object"] == "list" and body["query"] == "refund"
        assert {item["thread_id"] for item in body["data"]} == {threads["alice_trip"]}
        item = body["data"][0]
        assert set(item) == {"thread_id", "seq", "role", "score", "snippet", "end_user_id", "created_at"}
        assert c.get("/v1/search", params={"q": ""}).status_code == 400
        assert c.get("/v1/search").status_code == 400


def test_deleting_a_thread_removes_its_entries_at_once(world) -> None:
    gw, keys, threads = world
    with gw.client(keys["alice"]) as c:
        assert c.delete(f"/v1/threads/{threads['alice']}").status_code == 200
        found = c.get("/v1/search", params={"q": "refund blender", "limit": 50}).json()["data"]
        assert threads["alice"] not in {item["thread_id"] for item in found}


def test_modes_find_an_order_number_and_refuse_an_unknown_mode(world) -> None:
    gw, keys, threads = world
    with gw.client(keys["alice"]) as c:
        order = _thread(c)
        _turn(c, order, "Where is my order ORD-48213? It left the warehouse on Monday.")
        _turn(c, order, "Where is my order ORD-51877? It left the warehouse on Tuesday.")
        for mode in ("hybrid", "lexical"):
            r = c.get("/v1/search", params={"q": "ORD-48213", "mode": mode, "limit": 1})
            assert r.status_code == 200 and r.json()["mode"] == mode
            assert "ORD-48213" in r.json()["data"][0]["snippet"]
        assert c.get("/v1/search", params={"q": "ORD-48213"}).json()["mode"] == "hybrid"  # the default
        semantic = c.get("/v1/search", params={"q": "money back for a kitchen appliance", "mode": "semantic"}).json()
        assert semantic["data"][0]["snippet"] == REFUND and -1 <= semantic["data"][0]["score"] <= 1
        bad = c.get("/v1/search", params={"q": "refund", "mode": "fuzzy"})
        assert bad.status_code == 400 and "mode" in bad.text
        # Scoping holds in every mode: bob's identical text never shows through alice's key.
        for mode in ("semantic", "lexical", "hybrid"):
            found = _texts(c.get("/v1/search", params={"q": "refund blender", "mode": mode, "limit": 50}))
            assert found and {eu for eu, _ in found} == {"alice"}
