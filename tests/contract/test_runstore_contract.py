"""RunStore contract (issue 8): runs read back scoped by account, updates that never reopen a
finished run, dense numbered events read in order and in pages, first-write-wins tool outcomes
kept whole up to the 1 MiB webhook answer limit, and a deleted thread's runs gone with it."""

from __future__ import annotations

import random
import string
from concurrent.futures import ThreadPoolExecutor

import pytest
from threadgate.domain.errors import Conflict
from threadgate.domain.runs import Run, ToolOutcome

from tests.contract.records import uid


def run(account_id: str = "acct_a", *, thread_id: str = "thr_a", created_at: int = 1_000, **fields) -> Run:
    return Run(
        id=uid("req"), account_id=account_id, key_id="key_a", scope="standard", end_user_id=None,
        thread_id=thread_id, thread_end_user_id="u1", model="claude-haiku-4-5",
        params={"max_tokens": 100, "system": "be brief", "metadata": {"n": 1.5}},
        tools=[{"id": "tool_1", "name": "lookup", "description": "d", "input_schema": {"type": "object"}}],
        max_iterations=8, created_at=created_at, updated_at=created_at, **fields,
    )


def test_a_run_reads_back_whole_and_only_within_its_account(stores):
    r = run(iteration=1, in_flight=1, user_seq=3, job_id="job_1")
    assert stores.runs.create_run(r) is True
    assert stores.runs.get_run(r.id) == r
    assert stores.runs.get_run(r.id, "acct_a") == r
    assert stores.runs.get_run(r.id, "acct_b") is None
    assert stores.runs.get_run("req_missing") is None


def test_create_is_idempotent_by_id(stores):
    r = run()
    assert stores.runs.create_run(r) is True
    other = run()
    other.id = r.id
    other.model = "something-else"
    assert stores.runs.create_run(other) is False
    assert stores.runs.get_run(r.id).model == "claude-haiku-4-5"


def test_updates_apply_while_running_and_never_reopen_a_finished_run(stores):
    r = run()
    stores.runs.create_run(r)
    updated = stores.runs.update_run(r.id, {"iteration": 2, "cost_micros": 1234, "usage": {"input_tokens": 5},
                                            "answer": {"id": "msg_1", "stop_reason": "end_turn"}})
    assert updated.iteration == 2 and updated.cost_micros == 1234 and updated.answer["stop_reason"] == "end_turn"
    assert stores.runs.get_run(r.id) == updated
    assert stores.runs.update_run(r.id, {"status": "completed", "in_flight": None}).status == "completed"
    assert stores.runs.update_run(r.id, {"status": "failed", "iteration": 9}) is None
    assert stores.runs.get_run(r.id).status == "completed" and stores.runs.get_run(r.id).iteration == 2
    forced = stores.runs.update_run(r.id, {"cancel_requested": True}, only_if_running=False)
    assert forced.cancel_requested is True and forced.status == "completed"
    assert stores.runs.update_run("req_missing", {"iteration": 1}) is None
    with pytest.raises(ValueError):
        stores.runs.update_run(r.id, {"account_id": "acct_b"}, only_if_running=False)


def test_unfinished_runs_are_the_running_ones_oldest_first(stores):
    late, early, done = run(created_at=3_000), run(created_at=2_000), run(created_at=1_000)
    for r in (late, early, done):
        stores.runs.create_run(r)
    stores.runs.update_run(done.id, {"status": "failed"})
    ids = [r.id for r in stores.runs.unfinished_runs(100)]
    assert ids.index(early.id) < ids.index(late.id) and done.id not in ids


def test_events_are_dense_ordered_paged_and_never_renumbered(stores):
    r = run()
    events = [{"type": "content_block_delta", "delta": {"type": "text_delta", "text": f"w{i} é"}} for i in range(25)]
    stores.runs.append_events(r.id, 1, events[:10])
    stores.runs.append_events(r.id, 11, events[10:11])
    stores.runs.append_events(r.id, 12, events[11:])
    assert stores.runs.last_event_seq(r.id) == 25
    assert stores.runs.last_event_seq("req_other") == 0
    everything = stores.runs.list_events(r.id, 0, 1000)
    assert [s for s, _ in everything] == list(range(1, 26))
    assert [e for _, e in everything] == events
    assert stores.runs.list_events(r.id, 7, 3) == [(8, events[7]), (9, events[8]), (10, events[9])]
    assert stores.runs.list_events(r.id, 25, 10) == []
    with pytest.raises(Conflict):  # a second writer reusing numbers
        stores.runs.append_events(r.id, 12, [{"type": "ping"}])
    assert stores.runs.list_events(r.id, 11, 1) == [(12, events[11])]


def test_a_very_large_event_is_stored_and_read_back(stores):
    r = run()
    big = {"type": "qlaud.tool_dispatch_done", "tool_use_id": "toolu_1", "output": _noise(900_000)}
    stores.runs.append_events(r.id, 1, [{"type": "qlaud.iteration_start", "iteration": 2}, big])
    ((_, first), (seq, back)) = stores.runs.list_events(r.id, 0, 10)
    assert seq == 2 and back["tool_use_id"] == "toolu_1"
    assert back["output"] == big["output"] or back["output"].endswith("[cut: this event was too large to store]")


def test_tool_outcomes_first_write_wins_and_are_kept_whole(stores):
    r = run()
    first = ToolOutcome("balance: 12 EUR", False, attempts=2, status_code=200, latency_ms=31)
    assert stores.runs.put_tool_outcome(r.id, "toolu_1", first) == first
    assert stores.runs.put_tool_outcome(r.id, "toolu_1", ToolOutcome("late", True)) == first
    large = ToolOutcome(_noise(1024 * 1024), False)  # the webhook answer limit, incompressible
    assert stores.runs.put_tool_outcome(r.id, "toolu_2", large) == large
    got = stores.runs.get_tool_outcomes(r.id, ["toolu_1", "toolu_2", "toolu_3"])
    assert got == {"toolu_1": first, "toolu_2": large}
    assert stores.runs.get_tool_outcomes("req_other", ["toolu_1"]) == {}
    assert stores.runs.get_tool_outcomes(r.id, []) == {}


def test_concurrent_outcome_writes_agree_on_one_winner(stores):
    r = run()
    candidates = [ToolOutcome(f"answer {i}", False) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(lambda o: stores.runs.put_tool_outcome(r.id, "toolu_race", o), candidates))
    assert len(set(stored)) == 1 and stored[0] in candidates
    assert stores.runs.get_tool_outcomes(r.id, ["toolu_race"])["toolu_race"] == stored[0]


def test_deleting_a_threads_runs_removes_their_events_and_outcomes(stores):
    mine, other_thread, other_account = run(thread_id="thr_x"), run(thread_id="thr_y"), run("acct_b", thread_id="thr_x")
    for r in (mine, other_thread, other_account):
        stores.runs.create_run(r)
        stores.runs.append_events(r.id, 1, [{"type": "message_start", "message": {"content": []}}])
        stores.runs.put_tool_outcome(r.id, "toolu_1", ToolOutcome("secret text", False))
    stores.runs.delete_thread_runs("acct_a", "thr_x")
    assert stores.runs.get_run(mine.id) is None
    assert stores.runs.list_events(mine.id) == [] and stores.runs.get_tool_outcomes(mine.id, ["toolu_1"]) == {}
    for kept in (other_thread, other_account):
        assert stores.runs.get_run(kept.id) == kept and len(stores.runs.list_events(kept.id)) == 1


def _noise(n: int) -> str:
    rng = random.Random(n)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def test_deleting_a_run_removes_it_with_its_events_and_outcomes(stores):
    gone, kept = run(), run()
    for r in (gone, kept):
        stores.runs.create_run(r)
        stores.runs.append_events(r.id, 1, [{"type": "ping"}] * 30)
        stores.runs.put_tool_outcome(r.id, "toolu_1", ToolOutcome("text", False))
    stores.runs.delete_run(gone.id)
    stores.runs.delete_run("req_never_existed")
    assert stores.runs.get_run(gone.id) is None and stores.runs.list_events(gone.id) == []
    assert stores.runs.get_tool_outcomes(gone.id, ["toolu_1"]) == {} and stores.runs.last_event_seq(gone.id) == 0
    assert stores.runs.get_run(kept.id) == kept and len(stores.runs.list_events(kept.id)) == 30


def test_pruning_removes_old_finished_runs_only(stores):
    old_done, old_running, new_done = run(created_at=1_000), run(created_at=2_000), run(created_at=9_000)
    for r in (old_done, old_running, new_done):
        stores.runs.create_run(r)
        stores.runs.append_events(r.id, 1, [{"type": "ping"}])
    for r in (old_done, new_done):
        stores.runs.update_run(r.id, {"status": "completed"})
    assert stores.runs.prune_runs(5_000, 100) == 1
    assert stores.runs.get_run(old_done.id) is None and stores.runs.list_events(old_done.id) == []
    assert stores.runs.get_run(old_running.id) is not None and stores.runs.get_run(new_done.id) is not None
    assert stores.runs.prune_runs(5_000, 100) == 0
