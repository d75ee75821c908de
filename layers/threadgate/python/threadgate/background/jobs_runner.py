"""Async jobs, local mode: replay a synchronous request in-process (API.md §11).

`prepare_job` checks a job's inner request exactly as its synchronous route does (same schema,
same thread/model/tool lookups, same 4xx), naming fields under `body.`; the route calls it before
storing anything, the worker again when the job runs. `LocalJobWorker` runs each job in its own
asyncio task, at most `concurrency` at once, drives `Turn.events()` to the end and stores what the
synchronous route would have answered (or its error object).

Upstream calls stream even though a job answers once: a cancelled job then bills the tokens it
was actually sent (the engine settles a broken stream from what it saw), where a cancelled
non-streaming call could only release its reservation. The answer is the same message.

A job the process was running when it stopped (crash, restart) is run again from the start on
the next start (`recover`): a client retrying a failed synchronous request would do the same.
This assumes ONE gateway process per data directory, which is what local mode is.

How a stored job reaches a worker is a `JobDispatcher`, picked by `dispatcher_for`: locally the
in-process `LocalJobWorker`; on AWS an `SqsJobQueue` that sends the job to the queue feeding the
jobs Lambda (threadgate.background.jobs_worker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from pydantic import BaseModel, ValidationError

from threadgate.api.errors import envelope, validation_error
from threadgate.api.turn_http import acquire_thread
from threadgate.domain.errors import AuthenticationFailed, GatewayError, InvalidRequest
from threadgate.domain.jobs import Endpoint, Job, JobOutcome, parse_endpoint, without_stream
from threadgate.domain.keys import new_id, principal_of
from threadgate.domain.models import Principal
from threadgate.domain.passthrough import PassthroughCall
from threadgate.domain.turns import Turn
from threadgate.ports import JobStore
from threadgate.runtime import Runtime

log = logging.getLogger("threadgate.jobs")

CONCURRENCY = 4
CANCEL_WAIT_S = 10.0  # a cancelled task only unwinds (settles billing, releases the lock)
RECOVER_LIMIT = 10_000


@dataclass
class PreparedJob:
    endpoint: Endpoint
    turn: Turn | PassthroughCall
    render: Callable[[Any], Any]  # the synchronous route's JSON answer for the finished turn


def prepare_job(rt: Runtime, p: Principal, endpoint: Endpoint, body: dict[str, Any], rid: str) -> PreparedJob:
    """The turn the synchronous route would run for `body` (its `stream` flag ignored)."""
    from threadgate.api import passthrough
    from threadgate.api.routes.messages import thread_answer, thread_turn
    from threadgate.api.schemas import TurnCreate

    body = without_stream(body)
    try:
        if endpoint.kind in ("chat", "messages"):  # one metered call, nothing persisted
            call = passthrough.prepare(rt, p, endpoint.kind, body, rid)
            return PreparedJob(endpoint, call.call, lambda c: call.render(c)[0])
        turn_body = _validate(TurnCreate, body)
        turn = thread_turn(rt, p, endpoint.thread_id or "", turn_body, rid, stream=True)
        return PreparedJob(endpoint, turn, lambda t: thread_answer(t)[0])
    except InvalidRequest as err:
        raise _under_body(err) from None


def _validate(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None  # type: ignore[arg-type]


def _under_body(err: InvalidRequest) -> InvalidRequest:
    """`max_tokens: …` of the inner request becomes `body.max_tokens: …` of the job request."""
    if not err.param or err.param == "body":
        message = err.message if err.message.startswith("body") else f"body: {err.message}"
        return InvalidRequest(message, param="body")
    message = err.message
    if message.startswith(err.param):
        message = "body." + message
    return InvalidRequest(message, param=f"body.{err.param}")


def error_object(endpoint: Endpoint, err: GatewayError) -> dict[str, Any]:
    """The error object the synchronous endpoint would have answered (its envelope's `error`)."""
    return envelope(endpoint.path, err.type, err.message, err.param)["error"]


async def run_prepared(rt: Runtime, job: PreparedJob) -> JobOutcome:
    """Drive the turn to its end; thread turns take the thread's lock like the synchronous route."""
    turn = job.turn
    thread = turn.spec.thread
    lock = (thread.id, turn.spec.request_id) if thread is not None else None
    try:
        if lock is not None:
            await acquire_thread(rt, *lock)  # 409 after the synchronous route's wait
        try:
            async for _ in turn.events():
                pass
        finally:
            if lock is not None:
                rt.stores.threads.release_turn_lock(*lock)
    except GatewayError as err:  # before the first model call: e.g. 402, thread deleted meanwhile
        return JobOutcome.failed(error_object(job.endpoint, err), turn.result.cost_micros)
    if turn.result.error is not None:  # a later call failed: the synchronous answer is that error
        return JobOutcome.failed(error_object(job.endpoint, turn.result.error), turn.result.cost_micros)
    return JobOutcome.succeeded(job.render(turn), turn.result.cost_micros)


class LocalJobWorker:
    """Runs jobs in this process. `submit` after storing a queued job; `cancel` after the store
    marked it cancelled; `recover` once at startup; `aclose` at shutdown (running jobs are
    interrupted and left for the next start's `recover`)."""

    def __init__(self, rt: Runtime, concurrency: int = CONCURRENCY):
        self._rt = rt
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancelled: set[str] = set()  # cancelled by the client, not by shutdown

    @property
    def jobs(self) -> JobStore:
        return self._rt.stores.jobs  # type: ignore[return-value]  # set whenever jobs are served

    def submit(self, job: Job | str) -> None:
        job_id = job if isinstance(job, str) else job.id
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._run(job_id), name=f"job:{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def cancel(self, job_id: str) -> None:
        """Stop the job's task if it runs here, and wait until it has settled what it used."""
        task = self._tasks.get(job_id)
        if task is None:
            return
        self._cancelled.add(job_id)
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
        finally:
            self._cancelled.discard(job_id)

    def recover(self) -> int:
        """Queue again what a previous process left queued or running; returns how many."""
        count = 0
        for job in self.jobs.unfinished_jobs(RECOVER_LIMIT):
            if job.status == "running" and not self.jobs.requeue_job(job.id):
                continue
            self.submit(job.id)
            count += 1
        if count:
            log.warning("re-queued %d unfinished jobs from a previous run", count)
        return count

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job_id: str) -> None:
        try:
            await self._run_once(job_id)
        except Exception as exc:  # the store failed to start or finish it; the next start retries
            log.error("job %s could not be recorded: %s", job_id, type(exc).__name__)

    async def _run_once(self, job_id: str) -> None:
        async with self._slots:
            rt = self._rt
            job = self.jobs.start_job(job_id, rt.clock.now_ms())
            if job is None:  # cancelled while queued: it never runs
                return
            prepared: PreparedJob | None = None
            try:
                prepared = self._prepare(job)
                outcome = await run_prepared(rt, prepared)
            except GatewayError as err:
                outcome = JobOutcome.failed(error_object(parse_endpoint(job.endpoint), err))
            except asyncio.CancelledError:
                if job_id in self._cancelled:  # the job is cancelled in the store: record its cost
                    cost = prepared.turn.result.cost_micros if prepared else 0
                    self.jobs.finish_job(job_id, JobOutcome.failed({}, cost), rt.clock.now_ms())
                raise
            except Exception as exc:  # a bug or a store outage: end the job visibly
                log.error("job %s failed: %s", job_id, type(exc).__name__)
                err = GatewayError("internal error while running the job")
                outcome = JobOutcome.failed(
                    error_object(parse_endpoint(job.endpoint), err),
                    prepared.turn.result.cost_micros if prepared else 0,
                )
            self.jobs.finish_job(job_id, outcome, rt.clock.now_ms())

    def _prepare(self, job: Job) -> PreparedJob:
        return prepare_stored_job(self._rt, job)


def prepare_stored_job(rt: Runtime, job: Job) -> PreparedJob:
    """The job's turn, for the key as it is now (a key revoked meanwhile runs nothing)."""
    key = rt.stores.keys.get_key(job.account_id, job.key_id)
    if key is None or key.revoked:
        raise AuthenticationFailed("the key that submitted this job was revoked")
    return prepare_job(rt, principal_of(key), parse_endpoint(job.endpoint), job.body, new_id("req_"))


class JobDispatcher(Protocol):
    """Hands a stored queued job to whatever runs it."""

    def submit(self, job: Job) -> None:
        """Called right after the job is stored; raises if the job will not reach a worker."""

    async def cancel(self, job_id: str) -> None:
        """Called after the store marked the job cancelled: stop it if it runs here."""


class JobNotQueued(GatewayError):
    status, type = 503, "api_error"


class SqsJobQueue:
    """AWS: one SQS message per job, `{job_id, account_id}` (the account lets the worker read
    the job back through the account-scoped store). Cancelling needs nothing here: the worker
    skips a cancelled job and watches the store while one runs."""

    def __init__(self, queue_url: str, client: Any):
        self._url = queue_url
        self._sqs = client

    def submit(self, job: Job) -> None:
        import json

        self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps(
            {"job_id": job.id, "account_id": job.account_id}))

    async def cancel(self, job_id: str) -> None:
        return None


def sqs_job_queue(settings: Any) -> SqsJobQueue:
    import boto3

    return SqsJobQueue(settings.jobs_queue_url, boto3.client("sqs", endpoint_url=settings.aws_endpoint_url))


def dispatcher_for(app: Any, rt: Runtime) -> JobDispatcher:
    """The app's dispatcher, made on first use: the SQS queue on AWS, the in-process worker
    otherwise."""
    dispatcher = getattr(app.state, "job_worker", None)
    if dispatcher is None:
        aws = rt.settings.mode == "aws"
        dispatcher = app.state.job_worker = sqs_job_queue(rt.settings) if aws else LocalJobWorker(rt)
    return dispatcher


def dispatch(rt: Runtime, dispatcher: JobDispatcher, job: Job) -> None:
    """Submit a just-stored job; if it cannot be handed over, end it failed (never an orphan
    `queued` job that no worker will run) and answer 503."""
    try:
        dispatcher.submit(job)
    except Exception as exc:
        log.error("job %s could not be queued: %s", job.id, type(exc).__name__)
        err = JobNotQueued("the job could not be queued; try again")
        jobs: JobStore = rt.stores.jobs  # type: ignore[assignment]
        if jobs.start_job(job.id, rt.clock.now_ms()) is not None:
            jobs.finish_job(job.id, JobOutcome.failed(error_object(parse_endpoint(job.endpoint), err)),
                            rt.clock.now_ms())
        raise err from None


async def start_jobs(app: Any, rt: Runtime) -> None:
    """App startup (local and test modes): the worker, and the jobs a previous run left."""
    if rt.stores.jobs is None or rt.settings.mode == "aws":
        return  # on AWS the queue redelivers what a dead worker left
    worker = dispatcher_for(app, rt)
    assert isinstance(worker, LocalJobWorker)
    worker.recover()


async def stop_jobs(app: Any) -> None:
    close = getattr(getattr(app.state, "job_worker", None), "aclose", None)  # the SQS queue has nothing to close
    if close is not None:
        await close()
