"""Async jobs, local mode: replay a synchronous request in-process (API.md §11).

`prepare_job` checks a job's inner request exactly as its synchronous route does (same schema,
same thread/model/tool lookups, same 4xx), naming fields under `body.`; the route calls it before
storing anything, the worker again when the job runs. `LocalJobWorker` runs each job in its own
asyncio task, at most `concurrency` at once, and stores what the synchronous route would have
answered (or its error object).

A passthrough job is one metered call; its upstream call streams even though a job answers once:
a cancelled job then bills the tokens it was actually sent. A thread-turn job is a run (the same
steps as the synchronous turn) whose id is derived from the job's (`job_run_id`): the run
finishes its job when it ends (`finish_job_of_run`, also when Step Functions drives it), a
cancel of the job cancels the run (it stops at its next step boundary), and a job the process was
running when it stopped (crash, restart) RESUMES its run on the next start (`recover`): the user
message is not sent twice and no model call whose answer was persisted is made again; the call
that was in flight is billed for what it had streamed, and the job's cost counts every attempt.
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
from threadgate.domain.driver import ThreadLease, drive
from threadgate.domain.errors import AuthenticationFailed, GatewayError, InvalidRequest
from threadgate.domain.jobs import Endpoint, Job, JobOutcome, parse_endpoint, without_stream
from threadgate.domain.keys import new_id, principal_of
from threadgate.domain.models import Principal
from threadgate.domain.passthrough import PassthroughCall
from threadgate.domain.run_events import RunEventLog
from threadgate.domain.runs import Run
from threadgate.domain.steps import RunContext, TurnRequest, recover_dead_turn, start_run
from threadgate.ports import JobStore
from threadgate.runtime import Runtime

log = logging.getLogger("threadgate.jobs")

CONCURRENCY = 4
CANCEL_WAIT_S = 10.0  # a cancelled task only unwinds (settles billing)
RECOVER_LIMIT = 10_000
LOCK_WAIT_S = 120.0  # a job waits longer than a request for a busy thread (nobody is waiting on it)


@dataclass
class PreparedJob:
    endpoint: Endpoint
    turn: PassthroughCall | None = None  # passthrough
    render: Callable[[Any], Any] | None = None  # the synchronous route's JSON answer for the finished call
    thread_turn: TurnRequest | None = None  # a thread turn (a run)

    @property
    def cost_micros(self) -> int:
        return self.turn.result.cost_micros if self.turn is not None else 0


def job_run_id(job_id: str) -> str:
    """The run of a thread-turn job: known before it starts, so a restarted worker finds it."""
    return f"req_{job_id}"


def prepare_job(
    rt: Runtime, p: Principal, endpoint: Endpoint, body: dict[str, Any], rid: str, job_id: str | None = None
) -> PreparedJob:
    """The call the synchronous route would make for `body` (its `stream` flag ignored)."""
    from threadgate.api import passthrough
    from threadgate.api.routes.messages import thread_turn
    from threadgate.api.schemas import TurnCreate

    body = without_stream(body)
    try:
        if endpoint.kind in ("chat", "messages"):  # one metered call, nothing persisted
            call = passthrough.prepare(rt, p, endpoint.kind, body, rid)
            return PreparedJob(endpoint, call.call, lambda c: call.render(c)[0])
        turn_body = _validate(TurnCreate, body)
        run_id = job_run_id(job_id) if job_id else rid
        request = thread_turn(rt, p, endpoint.thread_id or "", turn_body, run_id, job_id=job_id)
        return PreparedJob(endpoint, thread_turn=request)
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


async def run_prepared(rt: Runtime, job: PreparedJob) -> JobOutcome | None:
    """Run the job's call. None: a thread turn, whose run finishes the job itself when it ends
    (here, or later under a durable driver)."""
    if job.thread_turn is not None:
        await run_thread_turn_job(rt, job.thread_turn)
        return None
    turn = job.turn
    assert turn is not None and job.render is not None
    try:
        async for _ in turn.events():
            pass
    except GatewayError as err:  # before the call: e.g. 402
        return JobOutcome.failed(error_object(job.endpoint, err), turn.result.cost_micros)
    if turn.result.error is not None:
        return JobOutcome.failed(error_object(job.endpoint, turn.result.error), turn.result.cost_micros)
    return JobOutcome.succeeded(job.render(turn), turn.result.cost_micros)


async def run_thread_turn_job(rt: Runtime, req: TurnRequest | None, *, resume: Run | None = None) -> None:
    """Start (or, after a crash, resume) a thread-turn job's run and drive it here until it ends
    or a durable driver takes it. Errors before the run starts (402, thread deleted) raise."""
    deps = rt.run_deps()
    run_id = resume.id if resume is not None else req.run_id  # type: ignore[union-attr]
    thread_id = resume.thread_id if resume is not None else req.thread.id  # type: ignore[union-attr]
    lease = ThreadLease(rt.stores.threads, rt.clock, thread_id, run_id, rt.settings.turn_lease_ms)
    await lease.acquire(LOCK_WAIT_S)
    try:
        if lease.taken_from is not None:
            account = resume.account_id if resume is not None else req.principal.account_id  # type: ignore[union-attr]
            await recover_dead_turn(deps, account, thread_id, lease.taken_from)
        ctx = RunContext.load(deps, run_id) if resume is not None else start_run(deps, req)  # type: ignore[arg-type]
        ctx.lease = lease
        lease.start_heartbeat()
        log = RunEventLog.resume(rt.stores.runs, run_id) if resume is not None else RunEventLog(rt.stores.runs, run_id)
        await drive(deps, ctx, log, tool_loop=rt.tool_loop)
    finally:
        lease.release()


def finish_job_of_run(rt: Runtime, run: Run) -> None:
    """A thread-turn job's run ended: the job ends with what the synchronous route would have
    answered (a cancelled job stays cancelled, with what it was billed)."""
    from threadgate.api import render
    from threadgate.api.turn_http import _assistant_content

    jobs = rt.stores.jobs
    if jobs is None or run.job_id is None:
        return
    endpoint = parse_endpoint(f"/v1/threads/{run.thread_id}/messages")
    if run.status in ("completed", "limit_reached"):
        outcome = JobOutcome.succeeded(render.run_answer(run, _assistant_content(rt, run)), run.cost_micros)
    else:
        error = run.error or {"type": "api_error", "message": "the turn was cancelled", "status": 499}
        err = GatewayError(error["message"])
        err.type = error["type"]
        outcome = JobOutcome.failed(error_object(endpoint, err), run.cost_micros)
    jobs.finish_job(run.job_id, outcome, rt.clock.now_ms())


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
        """Stop the job if it runs here: a thread turn's run stops at its next step boundary
        (and records the job's cost when it does); a passthrough call is interrupted at once and
        settles what it was sent."""
        task = self._tasks.get(job_id)
        if cancel_job_run(self._rt, job_id):
            if task is not None:  # the run ends within a poll interval: then the job has its cost
                await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
            return
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
            outcome: JobOutcome | None
            try:
                run = existing_job_run(rt, job)
                if run is not None:  # a previous process started it: resume, never repeat
                    outcome = await resume_job_run(rt, job, run)
                else:
                    prepared = prepare_stored_job(rt, job)
                    outcome = await run_prepared(rt, prepared)
            except GatewayError as err:
                outcome = JobOutcome.failed(error_object(parse_endpoint(job.endpoint), err))
            except asyncio.CancelledError:
                if job_id in self._cancelled:  # the job is cancelled in the store: record its cost
                    cost = prepared.cost_micros if prepared else 0
                    self.jobs.finish_job(job_id, JobOutcome.failed({}, cost), rt.clock.now_ms())
                raise
            except Exception as exc:  # a bug or a store outage: end the job visibly
                log.error("job %s failed: %s", job_id, type(exc).__name__)
                err = GatewayError("internal error while running the job")
                outcome = JobOutcome.failed(error_object(parse_endpoint(job.endpoint), err),
                                            prepared.cost_micros if prepared else 0)
            if outcome is not None:
                self.jobs.finish_job(job_id, outcome, rt.clock.now_ms())


def existing_job_run(rt: Runtime, job: Job) -> Run | None:
    """The run an earlier attempt of this thread-turn job started, if any."""
    if parse_endpoint(job.endpoint).kind != "thread_turn" or rt.stores.runs is None:
        return None
    return rt.stores.runs.get_run(job_run_id(job.id), job.account_id)


async def resume_job_run(rt: Runtime, job: Job, run: Run) -> None:
    """Carry an interrupted job's run on from its last completed step (or, if it had ended,
    give the job the run's answer)."""
    if run.finished:
        finish_job_of_run(rt, run)
        return None
    log.warning("job %s: resuming its run %s after an interruption", job.id, run.id)
    await run_thread_turn_job(rt, None, resume=run)
    return None


def cancel_job_run(rt: Runtime, job_id: str) -> bool:
    """Ask a thread-turn job's run to stop at its next step boundary. False: the job has no run."""
    if rt.stores.runs is None:
        return False
    run = rt.stores.runs.get_run(job_run_id(job_id))
    if run is None:
        return False
    rt.stores.runs.update_run(run.id, {"cancel_requested": True, "updated_at": rt.clock.now_ms()})
    return True


def prepare_stored_job(rt: Runtime, job: Job) -> PreparedJob:
    """The job's call, for the key as it is now (a key revoked meanwhile runs nothing)."""
    key = rt.stores.keys.get_key(job.account_id, job.key_id)
    if key is None or key.revoked:
        raise AuthenticationFailed("the key that submitted this job was revoked")
    return prepare_job(rt, principal_of(key), parse_endpoint(job.endpoint), job.body, new_id("req_"), job.id)


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
