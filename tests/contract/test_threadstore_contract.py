"""ThreadStore contract: ownership, listing cursor, dense seq (invariant 3), deletion, turn locks."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from threadgate.domain.errors import NotFound
from threadgate.domain.models import NewMessage

from tests.contract.records import thread, user_says


def test_a_thread_is_visible_to_its_account_and_end_user_only(stores):
    ts = stores.threads
    t = thread("acct_a", end_user_id="alice", metadata={"topic": "billing"})
    ts.create_thread(t)

    assert ts.get_thread("acct_a", t.id) == t
    assert ts.get_thread("acct_a", t.id, end_user_id="alice") == t
    assert ts.get_thread("acct_a", t.id, end_user_id="bob") is None
    assert ts.get_thread("acct_b", t.id) is None
    assert ts.get_thread("acct_a", "thr_missing") is None

    unbound = thread("acct_a")
    ts.create_thread(unbound)
    assert ts.get_thread("acct_a", unbound.id, end_user_id="alice") is None


def test_list_threads_pages_newest_first_with_the_cursor(stores):
    ts = stores.threads
    # Two threads share last_active_at: ties go by id, descending.
    specs = [("thr_a", 1_000), ("thr_b", 3_000), ("thr_c", 2_000), ("thr_d", 3_000), ("thr_e", 500)]
    for id_, at in specs:
        ts.create_thread(thread("acct_a", id=f"{id_}_list", last_active_at=at))
    ts.create_thread(thread("acct_b", id="thr_z_list", last_active_at=9_000))

    expected = ["thr_d_list", "thr_b_list", "thr_c_list", "thr_a_list", "thr_e_list"]
    assert [t.id for t in ts.list_threads("acct_a", None, 100)] == expected

    pages, cursor = [], None
    while True:
        page = ts.list_threads("acct_a", None, 2, before=cursor)
        if not page:
            break
        pages.append([t.id for t in page])
        cursor = (page[-1].last_active_at, page[-1].id)
    assert pages == [expected[0:2], expected[2:4], expected[4:]]


def test_list_threads_by_end_user_stays_inside_account_and_end_user(stores):
    ts = stores.threads
    ts.create_thread(thread("acct_a", end_user_id="alice", id="thr_1", last_active_at=1))
    ts.create_thread(thread("acct_a", end_user_id="bob", id="thr_2", last_active_at=2))
    ts.create_thread(thread("acct_a", id="thr_3", last_active_at=3))
    ts.create_thread(thread("acct_b", end_user_id="alice", id="thr_4", last_active_at=4))

    assert [t.id for t in ts.list_threads("acct_a", "alice", 10)] == ["thr_1"]
    assert [t.id for t in ts.list_threads("acct_a", None, 10)] == ["thr_3", "thr_2", "thr_1"]
    assert [t.id for t in ts.list_threads("acct_b", None, 10)] == ["thr_4"]
    assert ts.list_threads("acct_c", None, 10) == []


def test_appending_moves_a_thread_to_the_top_of_the_list(stores):
    ts = stores.threads
    old = thread("acct_a", end_user_id="alice", last_active_at=1_000)
    new = thread("acct_a", end_user_id="alice", last_active_at=2_000)
    ts.create_thread(old)
    ts.create_thread(new)
    ts.append_messages("acct_a", old.id, [user_says("hi")], now_ms=3_000)

    assert [t.id for t in ts.list_threads("acct_a", "alice", 10)] == [old.id, new.id]
    assert [t.id for t in ts.list_threads("acct_a", None, 10)] == [old.id, new.id]
    assert [t.id for t in ts.list_threads("acct_a", None, 10, before=(3_000, old.id))] == [new.id]


def test_update_thread_sets_metadata_and_title_for_the_owner_only(stores):
    ts = stores.threads
    t = thread("acct_a", metadata={"a": 1})
    ts.create_thread(t)

    updated = ts.update_thread("acct_a", t.id, title="Refund question")
    assert (updated.title, updated.metadata) == ("Refund question", {"a": 1})
    updated = ts.update_thread("acct_a", t.id, metadata={"b": [1, 2]}, title=None)
    assert (updated.title, updated.metadata) == (None, {"b": [1, 2]})
    assert ts.get_thread("acct_a", t.id) == updated

    assert ts.update_thread("acct_b", t.id, title="stolen") is None
    assert ts.update_thread("acct_a", "thr_missing", title="x") is None
    assert ts.get_thread("acct_a", t.id).title is None


def adding(**changes):
    """A metadata change: these keys over whatever is stored (a pure function, as the port asks)."""
    return lambda current: {**(current or {}), **changes}


def test_a_metadata_merge_is_atomic_for_the_owner_only(stores):
    ts = stores.threads
    t = thread("acct_a", metadata={"a": 1})
    ts.create_thread(t)

    updated = ts.update_thread_metadata("acct_a", t.id, adding(b=2), title="Refund question")
    assert (updated.metadata, updated.title) == ({"a": 1, "b": 2}, "Refund question")
    assert ts.get_thread("acct_a", t.id) == updated
    assert ts.update_thread_metadata("acct_b", t.id, adding(stolen=True)) is None
    assert ts.update_thread_metadata("acct_a", "thr_missing", adding(x=1)) is None

    # Another writer lands between this merge's read and its write: the merge is made over what
    # that writer stored (SQLite: the writer waits for the merge; DynamoDB: the merge reads again).
    intruder = threading.Thread(target=ts.update_thread_metadata, args=("acct_a", t.id, adding(other=True)))
    seen: list[dict] = []

    def change(current):
        seen.append(dict(current))
        if not intruder.is_alive() and len(seen) == 1:
            intruder.start()
            intruder.join(timeout=0.5)
        return {**current, "mine": True}

    ts.update_thread_metadata("acct_a", t.id, change)
    intruder.join()
    assert ts.get_thread("acct_a", t.id).metadata == {"a": 1, "b": 2, "other": True, "mine": True}

    # What the change raises propagates, and nothing is written (e.g. the size limit).
    def refuse(current):
        raise ValueError("too big")

    with pytest.raises(ValueError):
        ts.update_thread_metadata("acct_a", t.id, refuse, title="changed")
    assert ts.get_thread("acct_a", t.id).title == "Refund question"


def test_concurrent_metadata_merges_all_land(stores):
    ts = stores.threads
    t = thread("acct_a")
    ts.create_thread(t)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(lambda i: ts.update_thread_metadata("acct_a", t.id, adding(**{f"k{i}": i})), range(16)))
    assert ts.get_thread("acct_a", t.id).metadata == {f"k{i}": i for i in range(16)}


def test_a_merge_limit_holds_against_concurrent_merges(stores):
    """Two merges that each fit but not together: exactly one lands, whatever the timing."""
    ts = stores.threads
    t = thread("acct_a")
    ts.create_thread(t)

    def within_limit(**changes):
        def change(current):
            merged = adding(**changes)(current)
            if len(merged) > 1:
                raise ValueError("at most one key")
            return merged
        return change

    def merge(name: str) -> bool:
        try:
            return ts.update_thread_metadata("acct_a", t.id, within_limit(**{name: True})) is not None
        except ValueError:
            return False

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert sorted(pool.map(merge, ["x", "y"])) == [False, True]
    assert len(ts.get_thread("acct_a", t.id).metadata) == 1


def test_append_assigns_dense_seq_and_bumps_the_thread(stores):
    ts = stores.threads
    t = thread("acct_a", end_user_id="alice", last_active_at=1_000)
    ts.create_thread(t)
    blocks = [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris", "temp": 21.5}}]

    first = ts.append_messages("acct_a", t.id, [user_says("hello")], now_ms=2_000)
    more = ts.append_messages(
        "acct_a",
        t.id,
        [
            NewMessage(role="assistant", content=blocks, kind="tool_use", model="claude-test", request_id="req_1"),
            NewMessage(role="user", content=[{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
                       kind="tool_result"),
        ],
        now_ms=3_000,
    )

    assert [m.seq for m in first + more] == [1, 2, 3]
    assert all((m.account_id, m.end_user_id, m.thread_id) == ("acct_a", "alice", t.id) for m in first + more)
    assert (more[0].content, more[0].model, more[0].request_id, more[0].created_at) == (
        blocks, "claude-test", "req_1", 3_000)
    assert ts.list_messages("acct_a", t.id) == first + more
    after = ts.get_thread("acct_a", t.id)
    assert (after.message_count, after.last_active_at) == (3, 3_000)


def test_a_large_tool_result_round_trips(stores):
    ts = stores.threads
    t = thread("acct_a")
    ts.create_thread(t)
    rows = [{"id": i, "city": f"City {i}", "forecast": "sunny, light winds", "temp_c": i % 40} for i in range(8_000)]
    big = [{"type": "tool_result", "tool_use_id": "toolu_1", "content": str(rows)}]  # ~600 KB
    ts.append_messages("acct_a", t.id, [NewMessage(role="user", content=big, kind="tool_result")], now_ms=1)
    assert ts.list_messages("acct_a", t.id)[0].content == big


def test_append_to_a_missing_or_foreign_thread_raises_not_found(stores):
    ts = stores.threads
    t = thread("acct_a")
    ts.create_thread(t)
    with pytest.raises(NotFound):
        ts.append_messages("acct_b", t.id, [user_says("hi")], now_ms=1)
    with pytest.raises(NotFound):
        ts.append_messages("acct_a", "thr_missing", [user_says("hi")], now_ms=1)
    assert ts.list_messages("acct_a", t.id) == []


def test_concurrent_appends_keep_seq_dense(stores):
    ts = stores.threads
    t = thread("acct_a")
    ts.create_thread(t)

    def append(i: int) -> list[int]:
        return [m.seq for m in ts.append_messages("acct_a", t.id, [user_says(f"m{i}"), user_says(f"n{i}")], 10 + i)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(append, range(16)))

    assert sorted(s for b in batches for s in b) == list(range(1, 33))
    assert all(b[1] == b[0] + 1 for b in batches)  # one append's messages stay adjacent
    stored = ts.list_messages("acct_a", t.id)
    assert [m.seq for m in stored] == list(range(1, 33))
    assert ts.get_thread("acct_a", t.id).message_count == 32


def test_list_messages_windows_and_order(stores):
    ts = stores.threads
    t = thread("acct_a")
    ts.create_thread(t)
    ts.append_messages("acct_a", t.id, [user_says(f"m{i}") for i in range(1, 8)], now_ms=1)

    def seqs(**kw):
        return [m.seq for m in ts.list_messages("acct_a", t.id, **kw)]

    assert seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert seqs(after_seq=2, limit=3) == [3, 4, 5]
    assert seqs(before_seq=4) == [1, 2, 3]
    assert seqs(after_seq=2, before_seq=6) == [3, 4, 5]
    assert seqs(descending=True, limit=2) == [7, 6]
    assert seqs(descending=True, before_seq=6, limit=2) == [5, 4]
    assert seqs(after_seq=7) == []
    assert ts.list_messages("acct_a", t.id, limit=1)[0].content == "m1"
    assert ts.list_messages("acct_b", t.id) == []


def test_delete_thread_removes_it_and_all_its_messages(stores):
    ts = stores.threads
    t = thread("acct_a", end_user_id="alice")
    keep = thread("acct_a", end_user_id="alice")
    ts.create_thread(t)
    ts.create_thread(keep)
    ts.append_messages("acct_a", t.id, [user_says(f"m{i}") for i in range(30)], now_ms=1)
    ts.append_messages("acct_a", keep.id, [user_says("stay")], now_ms=1)
    assert ts.acquire_turn_lock(t.id, "turn-1", now_ms=1, ttl_ms=60_000)

    assert ts.delete_thread("acct_b", t.id) is False
    assert ts.get_thread("acct_a", t.id) is not None
    assert ts.delete_thread("acct_a", t.id) is True

    assert ts.get_thread("acct_a", t.id) is None
    assert ts.list_messages("acct_a", t.id) == []
    assert [x.id for x in ts.list_threads("acct_a", "alice", 10)] == [keep.id]
    assert ts.delete_thread("acct_a", t.id) is False
    with pytest.raises(NotFound):
        ts.append_messages("acct_a", t.id, [user_says("late")], now_ms=2)
    assert [m.content for m in ts.list_messages("acct_a", keep.id)] == ["stay"]


def test_turn_lock_serializes_holders_until_release_or_expiry(stores):
    ts = stores.threads
    assert ts.acquire_turn_lock("thr_lock", "turn-1", now_ms=1_000, ttl_ms=500) is True
    assert ts.acquire_turn_lock("thr_lock", "turn-2", now_ms=1_200, ttl_ms=500) is False
    assert ts.acquire_turn_lock("thr_other", "turn-2", now_ms=1_200, ttl_ms=500) is True

    ts.release_turn_lock("thr_lock", "turn-2")  # not the holder: no effect
    assert ts.acquire_turn_lock("thr_lock", "turn-2", now_ms=1_300, ttl_ms=500) is False
    ts.release_turn_lock("thr_lock", "turn-1")
    assert ts.acquire_turn_lock("thr_lock", "turn-2", now_ms=1_300, ttl_ms=500) is True

    # turn-2 holds until 1_800; from then on its lease has expired.
    assert ts.acquire_turn_lock("thr_lock", "turn-3", now_ms=1_799, ttl_ms=500) is False
    assert ts.acquire_turn_lock("thr_lock", "turn-3", now_ms=1_800, ttl_ms=500) is True


def test_the_holder_can_renew_its_lease(stores):
    ts = stores.threads
    assert ts.acquire_turn_lock("thr_renew", "turn-1", now_ms=1_000, ttl_ms=500) is True
    assert ts.acquire_turn_lock("thr_renew", "turn-1", now_ms=1_400, ttl_ms=500) is True
    assert ts.acquire_turn_lock("thr_renew", "turn-2", now_ms=1_600, ttl_ms=500) is False


def test_retract_removes_only_the_last_message_and_keeps_seq_dense(stores):
    ts = stores.threads
    t = thread("acct_a")
    ts.create_thread(t)
    first, second = ts.append_messages("acct_a", t.id, [user_says("one"), user_says("two")], now_ms=10)

    assert ts.retract_last_message("acct_a", t.id, first.seq) is False  # not the last one
    assert ts.retract_last_message("acct_b", t.id, second.seq) is False  # foreign account
    assert ts.retract_last_message("acct_a", t.id, second.seq) is True
    assert ts.retract_last_message("acct_a", t.id, second.seq) is False  # exactly once
    assert [m.seq for m in ts.list_messages("acct_a", t.id)] == [first.seq]
    assert ts.get_thread("acct_a", t.id).message_count == 1
    (again,) = ts.append_messages("acct_a", t.id, [user_says("three")], now_ms=20)
    assert again.seq == second.seq  # the freed seq is reused: still dense
