"""JobStore contract (API.md §11): key-scoped visibility, newest-first listing, and status changes
that are conditional, so a worker and a cancel racing on one job never both win."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from threadgate.domain.errors import Conflict
from threadgate.domain.jobs import Endpoint, Job, JobOutcome, new_job

from tests.contract.records import uid

BODY = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def job(account_id: str = "acct_a", key_id: str = "key_a", *, created_at: int = 1_000, body=None) -> Job:
    return new_job(uid("job"), account_id=account_id, key_id=key_id, endpoint=Endpoint("messages", "/v1/messages"),
                   body=body or BODY, now_ms=created_at)


def test_a_job_is_read_back_by_its_key_and_its_account_only(stores):
    j = job()
    stores.jobs.create_job(j)

    assert stores.jobs.get_job("acct_a", j.id, "key_a") == j
    assert stores.jobs.get_job("acct_a", j.id) == j  # an admin key of the account
    assert stores.jobs.get_job("acct_a", j.id, "key_other") is None
    assert stores.jobs.get_job("acct_b", j.id) is None
    assert stores.jobs.get_job("acct_b", j.id, "key_a") is None
    assert stores.jobs.get_job("acct_a", "job_missing") is None
    assert j.status == "queued" and j.model == "claude-haiku-4-5" and j.cost_micros == 0


def test_list_is_the_keys_jobs_newest_first_with_a_limit(stores):
    jobs = [job(created_at=t) for t in (1_000, 3_000, 2_000)]
    for j in jobs + [job(key_id="key_b"), job("acct_b", "key_c")]:
        stores.jobs.create_job(j)

    listed = stores.jobs.list_jobs("acct_a", "key_a", 10)
    assert [j.created_at for j in listed] == [3_000, 2_000, 1_000]
    assert [j.id for j in stores.jobs.list_jobs("acct_a", "key_a", 2)] == [listed[0].id, listed[1].id]
    assert stores.jobs.list_jobs("acct_b", "key_a", 10) == []  # account scope inside the query
    assert len(stores.jobs.list_jobs("acct_a", "key_b", 10)) == 1


def test_start_then_finish_records_the_answer_once(stores):
    j = job()
    stores.jobs.create_job(j)

    started = stores.jobs.start_job(j.id, 5_000)
    assert started is not None and started.status == "running" and started.started_at == 5_000
    assert stores.jobs.start_job(j.id, 6_000) is None  # only a queued job starts

    answer = {"id": "msg_1", "content": [{"type": "text", "text": "x" * 300_000}]}  # past the plain-JSON limit
    assert stores.jobs.finish_job(j.id, JobOutcome.succeeded(answer, 1234), 7_000)
    done = stores.jobs.get_job("acct_a", j.id)
    assert (done.status, done.response, done.cost_micros, done.completed_at) == ("succeeded", answer, 1234, 7_000)
    assert done.error is None
    # A second outcome does not overwrite the first.
    assert not stores.jobs.finish_job(j.id, JobOutcome.failed({"type": "api_error", "message": "x"}), 8_000)
    assert stores.jobs.get_job("acct_a", j.id).status == "succeeded"


def test_a_failed_job_keeps_its_error_object(stores):
    j = job()
    stores.jobs.create_job(j)
    stores.jobs.start_job(j.id, 2_000)
    error = {"type": "key_cap_exceeded", "message": "the key's remaining budget cannot cover this request"}

    assert stores.jobs.finish_job(j.id, JobOutcome.failed(error), 3_000)
    failed = stores.jobs.get_job("acct_a", j.id, "key_a")
    assert (failed.status, failed.error, failed.response) == ("failed", error, None)


def test_cancel_a_queued_job_and_it_never_starts(stores):
    j = job()
    stores.jobs.create_job(j)

    assert stores.jobs.cancel_job("acct_a", j.id, "key_other", 2_000) is None  # not visible: not touched
    assert stores.jobs.cancel_job("acct_b", j.id, None, 2_000) is None
    cancelled = stores.jobs.cancel_job("acct_a", j.id, "key_a", 2_000)
    assert cancelled.status == "cancelled" and cancelled.completed_at == 2_000
    assert stores.jobs.start_job(j.id, 3_000) is None
    with pytest.raises(Conflict):
        stores.jobs.cancel_job("acct_a", j.id, "key_a", 4_000)


def test_a_running_job_cancelled_keeps_the_cancellation_and_records_its_cost(stores):
    j = job()
    stores.jobs.create_job(j)
    stores.jobs.start_job(j.id, 2_000)

    assert stores.jobs.cancel_job("acct_a", j.id, None, 3_000).status == "cancelled"  # admin of the account
    assert not stores.jobs.finish_job(j.id, JobOutcome.succeeded({"id": "msg"}, 77), 4_000)
    after = stores.jobs.get_job("acct_a", j.id)
    assert (after.status, after.response, after.cost_micros) == ("cancelled", None, 77)


def test_a_finished_job_cannot_be_cancelled(stores):
    j = job()
    stores.jobs.create_job(j)
    stores.jobs.start_job(j.id, 2_000)
    stores.jobs.finish_job(j.id, JobOutcome.succeeded({"id": "msg"}, 5), 3_000)

    with pytest.raises(Conflict):
        stores.jobs.cancel_job("acct_a", j.id, "key_a", 4_000)
    assert stores.jobs.get_job("acct_a", j.id).status == "succeeded"


def test_unfinished_jobs_of_every_account_oldest_first_and_requeue(stores):
    queued = job(created_at=2_000)
    running = job("acct_b", "key_b", created_at=1_000)
    finished = job(created_at=500)
    for j in (queued, running, finished):
        stores.jobs.create_job(j)
    stores.jobs.start_job(running.id, 3_000)
    stores.jobs.start_job(finished.id, 3_000)
    stores.jobs.finish_job(finished.id, JobOutcome.succeeded({}, 0), 4_000)

    assert [j.id for j in stores.jobs.unfinished_jobs()] == [running.id, queued.id]
    assert [j.id for j in stores.jobs.unfinished_jobs(limit=1)] == [running.id]
    assert stores.jobs.requeue_job(running.id)
    assert not stores.jobs.requeue_job(queued.id)  # only a running job goes back to the queue
    again = stores.jobs.get_job("acct_b", running.id)
    assert again.status == "queued" and again.started_at is None


def test_a_finish_racing_a_cancel_has_exactly_one_winner(stores):
    for _ in range(8):
        j = job()
        stores.jobs.create_job(j)
        stores.jobs.start_job(j.id, 2_000)

        def finish() -> bool:
            return stores.jobs.finish_job(j.id, JobOutcome.succeeded({"id": "msg"}, 9), 3_000)

        def cancel() -> bool:
            try:
                return stores.jobs.cancel_job("acct_a", j.id, "key_a", 3_000) is not None
            except Conflict:
                return False

        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(finish), pool.submit(cancel)]
            finished, cancelled = (f.result() for f in futures)
        final = stores.jobs.get_job("acct_a", j.id)
        assert finished != cancelled
        assert final.status == ("succeeded" if finished else "cancelled")
        assert final.cost_micros == 9  # billed either way
