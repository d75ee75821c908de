"""Local mode indexes a turn's messages in a background batch (background/search_batcher.py);
what an app notices must not change (API.md §9): a search right after a turn finds both of its
messages, a deleted thread never comes back to search, even from a batch still queued, and after
kill -9 of a real server with a batch queued the messages are searchable once it restarts.

Real stores throughout: the SQLite thread store, the SQLite/FTS5 vector index, the journal file,
the bundled embedding model; only the model provider is the fake Anthropic upstream.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from threadgate.background import search_batcher
from tests.integration.test_crash_recovery import Server, mint

MODEL = "claude-haiku-4-5"
ASKED = "Where is my parcel ZEBRAFISH-7731? It was due on Monday."
ANSWERED = "Parcel KINGFISHER-2290 left the depot this morning and arrives tomorrow."
HOLD = 3600.0  # FLUSH_DELAY_S that keeps a batch queued for the whole test


def _turn(c: httpx.Client, content: str = ASKED) -> str:
    r = c.post("/v1/threads", json={})
    assert r.status_code == 201, r.text
    thread_id = r.json()["id"]
    r = c.post(f"/v1/threads/{thread_id}/messages", json={"model": MODEL, "max_tokens": 50, "content": content})
    assert r.status_code == 200, r.text
    return thread_id


def _found(c: httpx.Client, q: str) -> set[tuple[str, str]]:
    r = c.get("/v1/search", params={"q": q, "mode": "lexical", "limit": 50})
    assert r.status_code == 200, r.text
    return {(item["thread_id"], item["role"]) for item in r.json()["data"]}


def _indexed(vectors_dir: Path) -> int:
    """Rows in the vector index file, read as another process would."""
    with sqlite3.connect(vectors_dir / "index.sqlite3") as db:
        return db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]


@pytest.fixture
def gw(gateway_factory):
    gw = gateway_factory()
    gw.fake.default_reply = ANSWERED
    return gw


def test_a_search_right_after_a_turn_finds_both_of_its_messages(gw, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_batcher, "FLUSH_DELAY_S", HOLD)  # the batch is surely still queued
    with gw.admin() as c:
        thread_id = _turn(c)
        assert gw.runtime.indexer.index.count(_account(gw)) == 0  # not indexed on the request path
        assert _found(c, "ZEBRAFISH-7731") == {(thread_id, "user")}
        assert _found(c, "KINGFISHER-2290") == {(thread_id, "assistant")}
        assert {item["seq"] for item in c.get(f"/v1/threads/{thread_id}/search", params={"q": "parcel"}).json()["data"]} == {1, 2}


def test_a_batch_is_indexed_within_the_delay_without_any_search(gw) -> None:
    with gw.admin() as c:
        _turn(c)
    deadline = time.monotonic() + 5  # API.md §9: searchable within 5 s (the batch waits 0.1 s)
    while gw.runtime.indexer.index.count(_account(gw)) < 2:
        assert time.monotonic() < deadline, "the background batch did not index the turn"
        time.sleep(0.05)


def test_a_thread_deleted_while_its_messages_are_queued_never_becomes_searchable(gw, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_batcher, "FLUSH_DELAY_S", HOLD)
    with gw.admin() as c:
        deleted = _turn(c)
        kept = _turn(c, "Where is my parcel ZEBRAFISH-7731? Still waiting.")
        assert c.delete(f"/v1/threads/{deleted}").status_code == 200
        assert _found(c, "ZEBRAFISH-7731") == {(kept, "user")}
        assert deleted not in {t for t, _ in _found(c, "KINGFISHER-2290")}


def test_messages_handed_over_after_their_thread_was_deleted_are_dropped(gw, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of a turn finishing while its thread is deleted: the turn hands its messages over
    after the deletion. The batch checks the thread still exists."""
    monkeypatch.setattr(search_batcher, "FLUSH_DELAY_S", HOLD)
    rt = gw.runtime
    with gw.admin() as c:
        thread_id = _turn(c)
        messages = rt.stores.threads.list_messages(_account(gw), thread_id)
        assert c.delete(f"/v1/threads/{thread_id}").status_code == 200
        assert rt.indexer.index_messages(messages) == 2  # handed over (a turn cannot tell)
        assert _found(c, "ZEBRAFISH-7731") == set()
    assert rt.indexer.index.count(_account(gw)) == 0
    assert rt.indexer.journal.all() == []  # nothing left for a catch-up to bring back


def test_past_the_bound_the_turn_indexes_the_backlog_itself(gw, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_batcher, "FLUSH_DELAY_S", HOLD)
    monkeypatch.setattr(search_batcher, "MAX_PENDING", 3)
    with gw.admin() as c:
        _turn(c)
        assert gw.runtime.indexer.index.count(_account(gw)) == 0  # 2 queued, under the bound
        _turn(c)
        assert gw.runtime.indexer.index.count(_account(gw)) == 4  # 4 > 3: indexed by that turn


def _account(gw) -> str:
    with gw.admin() as c:
        return c.get("/v1/account").json()["id"]


class HoldingServer(Server):
    """`python -m threadgate serve` whose batches wait an hour (until a search or shutdown)."""

    command = ("-c", f"import sys; import threadgate.background.search_batcher as b; b.FLUSH_DELAY_S = {HOLD}; "
                     "from threadgate.cli import main; sys.exit(main())", "serve")


@pytest.fixture
def fake(fake_anthropic: Any) -> Any:
    fake_anthropic.reset()
    fake_anthropic.default_reply = ANSWERED
    yield fake_anthropic
    fake_anthropic.default_reply = None


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_after_kill_9_with_a_batch_queued_the_messages_are_searchable_after_restart(tmp_path: Path, fake: Any) -> None:
    from threadgate.domain.keys import new_secret

    master = new_secret("qlk_live_")
    first = HoldingServer(tmp_path, fake, master).start()
    try:
        key = mint(first)["secret"]
        with first.client(key) as c:
            searched = _turn(c)
            assert _found(c, "ZEBRAFISH-7731") == {(searched, "user")}  # a search flushes that one
            queued = _turn(c, "Is parcel ZEBRAFISH-7731 insured? Asking again.")
            doomed = _turn(c, "Cancel parcel ZEBRAFISH-7731, please.")
        assert _indexed(tmp_path / "vectors") == 2  # the last two turns are only queued
        first.kill9()
    finally:
        first.stop()

    second = HoldingServer(tmp_path, fake, master).start()
    try:
        with second.client(key) as c:
            # Deleted before anything flushed in this process: its journaled messages stay gone.
            assert c.delete(f"/v1/threads/{doomed}").status_code == 200
            assert _found(c, "ZEBRAFISH-7731") == {(searched, "user"), (queued, "user")}
            assert _found(c, "KINGFISHER-2290") == {(searched, "assistant"), (queued, "assistant")}
    finally:
        second.stop()
    with sqlite3.connect(tmp_path / "vectors" / "pending.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0  # caught up
