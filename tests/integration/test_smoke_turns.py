"""The tutorial flow over real HTTP: mint a key, create a thread, send and stream turns."""

from __future__ import annotations

import json

import httpx


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_turn_roundtrip(gateway):
    user = gateway.mint(max_spend_usd=1.0, end_user_id="u1")
    with gateway.client(user["secret"]) as c:
        t = c.post("/v1/threads", json={}).json()
        assert t["end_user_id"] == "u1"
        r = c.post(f"/v1/threads/{t['id']}/messages",
                   json={"model": "claude-haiku-4-5", "max_tokens": 50, "content": "hello there"})
        assert r.status_code == 200, r.text
        assert r.headers["x-qlaud-thread-id"] == t["id"]
        assert r.json()["content"][0]["type"] == "text"
        r = c.post(f"/v1/threads/{t['id']}/messages",
                   json={"model": "threadgate-local", "max_tokens": 50, "content": "stream me", "stream": True})
        assert r.status_code == 200, r.text
        events = sse_events(r.text)
        assert events[0][0] == "message_start" and events[-1][0] == "qlaud.done"
        hist = c.get(f"/v1/threads/{t['id']}/messages").json()
        assert [m["seq"] for m in hist["data"]] == [1, 2, 3, 4]
        me = c.get("/v1/key").json()
        assert me["spent_micros"] > 0
