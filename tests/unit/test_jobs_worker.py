"""/v1/jobs on AWS: the api function queues the job on SQS, the jobs function runs it (API.md §11).

Everything AWS is moto (DynamoDB tables, the SQS queue and its DLQ), the functions are invoked
in-process as Lambda would (see test_handlers.py), and the model upstream is the fake Anthropic
server on 127.0.0.1. SQS events are built from what moto's queue actually holds.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pytest

from tests.unit.test_handlers import (  # noqa: F401  (aws, admin_key: fixtures)
    ACCOUNT,
    REGION,
    ROOT,
    Api,
    LambdaContext,
    admin_key,
    aws,
    load_handler,
)

MODEL = "claude-haiku-4-5"
MESSAGES_BODY = {"model": MODEL, "max_tokens": 60, "messages": [{"role": "user", "content": "name three rivers"}]}
QUEUE = "tg-handlers-jobs"
QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{QUEUE}"
DLQ = f"{QUEUE}-dlq"


@pytest.fixture
def jobs_env(monkeypatch: pytest.MonkeyPatch, fake_anthropic: Any) -> Any:
    """What CDK adds for jobs, plus the fake upstream's address (set before the runtime is built)."""
    fake_anthropic.reset()
    for name, value in {
        "THREADGATE_JOBS_QUEUE_URL": QUEUE_URL,
        "ANTHROPIC_API_KEY": fake_anthropic.api_key, "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "THREADGATE_UPSTREAM_TIMEOUT_S": "10", "THREADGATE_UPSTREAM_CONNECT_TIMEOUT_S": "2",
        # Set in every Lambda: Powertools and Mangum then reuse one event loop across invocations.
        "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "jobs"),
    }.items():
        monkeypatch.setenv(name, value)
    return fake_anthropic


@pytest.fixture
def rt(jobs_env: Any, aws: Any) -> Any:
    sqs = boto3.client("sqs")
    assert sqs.create_queue(QueueName=QUEUE)["QueueUrl"] == QUEUE_URL
    sqs.create_queue(QueueName=DLQ)
    return aws


class Jobs:
    """The jobs function, fed from moto's queues like the SQS event source would."""

    def __init__(self) -> None:
        self.module = load_handler("jobs")
        self.sqs = boto3.client("sqs")

    def receive(self, queue: str = QUEUE) -> list[dict[str, Any]]:
        url = self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        messages = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
        return [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": REGION,
        } for m in messages.get("Messages", [])]

    def __call__(self, records: list[dict[str, Any]]) -> list[str]:
        """Invoke with these records; the ids of the records reported failed."""
        answer = self.module.handler({"Records": records}, LambdaContext(function_name="threadgate-jobs"))
        return [failure["itemIdentifier"] for failure in answer["batchItemFailures"]]


def submit(api: Api, key: str, body: dict[str, Any] = MESSAGES_BODY) -> dict[str, Any]:
    status, _, created = api("POST", "/v1/jobs", key=key, body={"endpoint": "/v1/messages", "body": body})
    assert status == 202, created
    return created


def job(api: Api, key: str, job_id: str) -> dict[str, Any]:
    status, _, found = api("GET", f"/v1/jobs/{job_id}", key=key)
    assert status == 200, found
    return found


def without_id(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "id"}


class LaterClock:
    """The runtime's clock, moved forward by `offset_ms`."""

    def __init__(self, clock: Any, offset_ms: int) -> None:
        self._clock, self._offset = clock, offset_ms

    def now_ms(self) -> int:
        return self._clock.now_ms() + self._offset


# --- the happy path and SQS's at-least-once delivery ---------------------------------------------


def test_a_job_sent_to_the_api_function_is_queued_and_the_jobs_function_answers_like_the_sync_route(
    rt, admin_key
):
    api, jobs = Api(), Jobs()
    status, headers, sync = api("POST", "/v1/messages", key=admin_key, body=MESSAGES_BODY)
    assert status == 200, sync
    created = submit(api, admin_key, {**MESSAGES_BODY, "stream": True})  # stream is ignored
    assert (created["object"], created["status"]) == ("job", "queued")

    (record,) = jobs.receive()
    assert json.loads(record["body"]) == {"job_id": created["id"], "account_id": rt.stores.keys.first_account().id}
    assert job(api, admin_key, created["id"])["status"] == "queued"  # nothing ran it yet
    assert jobs([record]) == []

    done = job(api, admin_key, created["id"])
    assert done["status"] == "succeeded", done
    assert without_id(done["response"]) == without_id(sync)
    assert done["cost_micros"] == int(headers["x-qlaud-cost-micros"]) > 0


def test_a_duplicate_delivery_of_a_finished_job_is_a_no_op(rt, admin_key, jobs_env):
    api, jobs = Api(), Jobs()
    created = submit(api, admin_key)
    records = jobs.receive()
    assert jobs(records) == []
    first = job(api, admin_key, created["id"])
    calls = len(jobs_env.requests)

    assert jobs(records) == []  # SQS delivered it again
    assert len(jobs_env.requests) == calls  # no second upstream call, no second charge
    assert job(api, admin_key, created["id"]) == first


def test_a_job_cancelled_while_queued_never_runs(rt, admin_key, jobs_env):
    api, jobs = Api(), Jobs()
    created = submit(api, admin_key)
    status, _, cancelled = api("DELETE", f"/v1/jobs/{created['id']}", key=admin_key)
    assert status == 200 and cancelled["status"] == "cancelled"

    assert jobs(jobs.receive()) == []
    assert jobs_env.requests == []
    assert job(api, admin_key, created["id"])["status"] == "cancelled"


def test_a_poison_record_is_reported_alone_and_the_rest_of_the_batch_runs(rt, admin_key):
    api, jobs = Api(), Jobs()
    created = submit(api, admin_key)
    (good,) = jobs.receive()
    poison = {**good, "messageId": "0b7c1d2e-poison", "body": "{not json"}

    assert jobs([poison, good]) == ["0b7c1d2e-poison"]
    assert job(api, admin_key, created["id"])["status"] == "succeeded"


def test_a_store_failure_before_the_turn_requeues_the_job_for_the_redelivery(rt, admin_key, monkeypatch):
    import threadgate.background.jobs_worker as worker

    api, jobs = Api(), Jobs()
    created = submit(api, admin_key)
    records = jobs.receive()
    real_prepare = worker.prepare_stored_job

    def throttled(*args: Any) -> Any:
        raise RuntimeError("ProvisionedThroughputExceededException")

    monkeypatch.setattr(worker, "prepare_stored_job", throttled)
    assert jobs(records) == [records[0]["messageId"]]  # SQS will redeliver it
    assert job(api, admin_key, created["id"])["status"] == "queued"

    monkeypatch.setattr(worker, "prepare_stored_job", real_prepare)
    assert jobs(records) == []
    assert job(api, admin_key, created["id"])["status"] == "succeeded"


def test_a_job_left_running_by_a_dead_worker_is_failed_on_redelivery_not_run_twice(rt, admin_key, jobs_env):
    from threadgate.background.jobs_worker import LEASE_MS

    api, jobs = Api(), Jobs()
    created = submit(api, admin_key)
    records = jobs.receive()
    assert rt.stores.jobs.start_job(created["id"], rt.clock.now_ms())  # an attempt started it, then died

    # Within a Lambda's lifetime the other attempt may still be running: try again later.
    assert jobs(records) == [records[0]["messageId"]]
    assert job(api, admin_key, created["id"])["status"] == "running"

    rt.clock = LaterClock(rt.clock, LEASE_MS)  # the redelivery after the visibility timeout
    assert jobs(records) == []
    failed = job(api, admin_key, created["id"])
    assert failed["status"] == "failed" and failed["response"] is None
    assert failed["error"]["type"] == "api_error" and "not run again" in failed["error"]["message"]
    assert jobs_env.requests == []  # the turn was never repeated


def test_a_running_job_stops_when_the_client_cancels_it_and_keeps_what_it_cost(rt, admin_key, jobs_env, monkeypatch):
    import threadgate.background.jobs_worker as worker

    monkeypatch.setattr(worker, "CANCEL_POLL_S", 0.05)
    api, jobs = Api(), Jobs()
    jobs_env.slow_stream(0.2)  # long enough for the cancel below to land mid-answer
    created = submit(api, admin_key)
    account_id = rt.stores.keys.first_account().id

    def cancel_once_running() -> None:
        while rt.stores.jobs.get_job(account_id, created["id"]).status == "queued":
            threading.Event().wait(0.02)
        threading.Event().wait(0.3)
        rt.stores.jobs.cancel_job(account_id, created["id"], None, rt.clock.now_ms())

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    assert jobs(jobs.receive()) == []
    canceller.join()

    stopped = job(api, admin_key, created["id"])
    assert stopped["status"] == "cancelled" and stopped["response"] is None
    status, _, usage = api("GET", f"/v1/keys/{_key_id(api, admin_key)}/usage", key=admin_key)
    assert status == 200, usage
    assert usage["reserved_micros"] == 0  # the interrupted call was settled, not left reserved
    assert stopped["cost_micros"] == usage["spent_micros"]


def _key_id(api: Api, key: str) -> str:
    return api("GET", "/v1/key", key=key)[2]["id"]


# --- the dead-letter queue and the sender --------------------------------------------------------


def test_dead_letters_mark_their_job_failed_and_unreadable_ones_are_dropped(rt, admin_key, jobs_env):
    api, jobs = Api(), Jobs()
    created = submit(api, admin_key)
    (message,) = jobs.receive()
    sqs = jobs.sqs
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=DLQ)["QueueUrl"], MessageBody=message["body"])
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=DLQ)["QueueUrl"], MessageBody="garbage")

    assert jobs(jobs.receive(DLQ)) == []
    failed = job(api, admin_key, created["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == {"type": "api_error", "message": failed["error"]["message"]}
    assert "gave up" in failed["error"]["message"]
    assert jobs_env.requests == []


def test_a_job_the_queue_refuses_is_stored_failed_not_left_queued(rt, admin_key):
    api, jobs = Api(), Jobs()
    jobs.sqs.delete_queue(QueueUrl=QUEUE_URL)

    status, _, refused = api("POST", "/v1/jobs", key=admin_key,
                             body={"endpoint": "/v1/messages", "body": MESSAGES_BODY})
    assert status == 503, refused
    assert refused["error"]["type"] == "api_error"
    _, _, listed = api("GET", "/v1/jobs", key=admin_key)
    assert [j["status"] for j in listed["data"]] == ["failed"]


def test_a_thread_turn_job_runs_once_even_when_delivered_twice(rt, admin_key, jobs_env):
    api, jobs = Api(), Jobs()
    _, _, thread = api("POST", "/v1/threads", key=admin_key, body={"end_user_id": "alice"})
    status, _, created = api("POST", "/v1/jobs", key=admin_key, body={
        "endpoint": f"/v1/threads/{thread['id']}/messages",
        "body": {"model": MODEL, "max_tokens": 60, "content": "name three rivers"}})
    assert status == 202, created
    records = jobs.receive()

    assert jobs(records) == [] and jobs(records) == []
    done = job(api, admin_key, created["id"])
    assert done["status"] == "succeeded", done
    assert done["response"]["hit_max_iterations"] is False
    _, _, history = api("GET", f"/v1/threads/{thread['id']}/messages", key=admin_key)
    assert [m["role"] for m in history["data"]] == ["user", "assistant"]
    assert len(jobs_env.requests) == 1
